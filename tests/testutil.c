/* testutil.c — implementation of the shared test helpers (see testutil.h). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *tu_default_model(void)
{
    const char *env = getenv("SERVAL_MODEL");
    const char *p = env && *env ? env : SERVAL_DEFAULT_MODEL;
    struct stat st;
    if (stat(p, &st) != 0)
        cr_assert_fail("default model %s is missing: run tools/setup.sh (or set SERVAL_MODEL)", p);
    return p;
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    cr_assert_not_null(s);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

char *tu_source_path(const char *rel) { return join(SERVAL_SOURCE_DIR, rel); }

char *tu_bin_path(const char *name)
{
    const char *dir = getenv("SERVAL_BIN_DIR");
    if (dir && *dir)
        return join(dir, name);
    char *bin = join(SERVAL_BINARY_DIR, "bin");
    char *p = join(bin, name);
    free(bin);
    return p;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

char *tu_temp_path(const char *suffix)
{
    char tmpl[] = "/tmp/serval-test-XXXXXX";
    int fd = mkstemp(tmpl);
    cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
    close(fd);
    unlink(tmpl);
    size_t n = strlen(tmpl) + strlen(suffix) + 1;
    char *p = malloc(n);
    snprintf(p, n, "%s%s", tmpl, suffix);
    int fd2 = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    cr_assert(fd2 >= 0);
    close(fd2);
    return p;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

tu_json **tu_read_jsonl(const char *rel, size_t *n)
{
    char *path = tu_source_path(rel);
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text, "fixture %s is missing (tests/fixtures/README.md says what writes it)",
                       path);
    tu_json **lines = NULL;
    *n = 0;
    for (char *p = text; *p;) {
        char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l > 0) {
            tu_json *j = tu_json_parse(p, l);
            cr_assert_not_null(j, "%s: line %zu is not valid JSON", path, *n + 1);
            lines = realloc(lines, sizeof *lines * (*n + 1));
            lines[(*n)++] = j;
        }
        p += l + (e ? 1 : 0);
    }
    free(text);
    free(path);
    return lines;
}

typedef struct {
    char *buf;
    size_t len, cap;
} growbuf;

static void gb_append(growbuf *g, const char *d, size_t n)
{
    if (g->len + n + 1 > g->cap) {
        g->cap = (g->len + n + 1) * 2;
        g->buf = realloc(g->buf, g->cap);
    }
    memcpy(g->buf + g->len, d, n);
    g->len += n;
    g->buf[g->len] = '\0';
}

int tu_run(char *const argv[], char **out, char **err, int timeout_s)
{
    int po[2], pe[2];
    if (pipe(po) || pipe(pe))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int dn = open("/dev/null", O_RDONLY);
        dup2(dn, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    growbuf go = {0}, ge = {0};
    gb_append(&go, "", 0);
    gb_append(&ge, "", 0);
    struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_fds = 2;
    time_t deadline = time(NULL) + timeout_s;
    int killed = 0;
    while (open_fds > 0) {
        int left = (int)(deadline - time(NULL));
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = 1;
            break;
        }
        if (poll(fds, 2, left * 1000) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char tmp[8192];
            ssize_t r = read(fds[i].fd, tmp, sizeof tmp);
            if (r <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            } else {
                gb_append(i == 0 ? &go : &ge, tmp, (size_t)r);
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int st = 0;
    waitpid(pid, &st, 0);
    if (out)
        *out = go.buf;
    else
        free(go.buf);
    if (err)
        *err = ge.buf;
    else
        free(ge.buf);
    if (killed)
        return 128 + SIGKILL;
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

int32_t tu_argmax(const float *x, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}
