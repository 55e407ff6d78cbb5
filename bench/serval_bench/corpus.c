/* corpus.c — the source files simulated developers type through: a walk of --repos for text
 * files by extension, each with its Tabby language id and its repository's git remote. */
#include "bench.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CORPUS_MAX_FILES 4096
#define CORPUS_MIN_BYTES 64
#define CORPUS_MAX_BYTES (512 * 1024)

static const struct {
    const char *ext, *lang;
} LANGS[] = {
    {"c", "c"},          {"h", "c"},          {"cc", "cpp"},         {"cpp", "cpp"},
    {"hpp", "cpp"},      {"cu", "cpp"},       {"py", "python"},      {"rs", "rust"},
    {"go", "go"},        {"js", "javascript"}, {"ts", "typescript"}, {"java", "java"},
    {"rb", "ruby"},      {"kt", "kotlin"},    {"cs", "csharp"},      {"php", "php"},
    {"lua", "lua"},      {"sh", "shellscript"}, {"scala", "scala"},  {"swift", "swift"},
};

#define DEFAULT_EXTS "c,h,cc,cpp,hpp,cu,py,rs,go,js,ts,java,rb,kt,cs,php,lua,sh,scala,swift"

static const char *lang_of(const char *ext)
{
    for (size_t i = 0; i < sizeof LANGS / sizeof LANGS[0]; i++)
        if (strcmp(LANGS[i].ext, ext) == 0)
            return LANGS[i].lang;
    return "unknown";
}

static bool ext_wanted(const char *name, const char *exts)
{
    const char *dot = strrchr(name, '.');
    if (!dot || !dot[1])
        return false;
    size_t n = strlen(dot + 1);
    for (const char *p = exts; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, dot + 1, n) == 0)
            return true;
        if (!comma)
            break;
        p = comma + 1;
    }
    return false;
}

/* The first "url = " in dir/.git/config (malloc'd), or NULL. */
static char *git_remote(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/.git/config", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char line[1024], *url = NULL;
    while (!url && fgets(line, sizeof line, f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, "url", 3) == 0 && strchr(p, '=')) {
            p = strchr(p, '=') + 1;
            while (*p == ' ')
                p++;
            p[strcspn(p, "\r\n")] = 0;
            url = strdup(p);
        }
    }
    fclose(f);
    return url;
}

/* Well-formed UTF-8 (requests carry the text as JSON strings). */
static bool utf8_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t k = c < 0x80             ? 0
                   : (c & 0xE0) == 0xC0 ? 1
                   : (c & 0xF0) == 0xE0 ? 2
                   : (c & 0xF8) == 0xF0 ? 3
                                        : 9;
        if (k == 9 || (k == 1 && c < 0xC2) || i + k >= n + (k ? 0 : 1))
            return false;
        for (size_t j = 1; j <= k; j++)
            if ((p[i + j] & 0xC0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *p = malloc(CORPUS_MAX_BYTES + 1);
    size_t n = p ? fread(p, 1, CORPUS_MAX_BYTES + 1, f) : 0;
    fclose(f);
    if (!p || n < CORPUS_MIN_BYTES || n > CORPUS_MAX_BYTES || memchr(p, 0, n) ||
        !utf8_ok((const unsigned char *)p, n)) {
        free(p);
        return NULL;
    }
    p[n] = 0;
    *len = n;
    return p;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_file(bench_corpus *c, const char *root, const char *path, const char *name,
                    const char *url)
{
    if (c->n >= CORPUS_MAX_FILES)
        return 0;
    size_t len;
    char *text = read_text(path, &len);
    if (!text)
        return 0;
    bench_file *f = &c->files[c->n];
    const char *rel = path + strlen(root);
    while (*rel == '/')
        rel++;
    f->rel = strdup(rel);
    f->lang = lang_of(strrchr(name, '.') + 1);
    f->git_url = url ? strdup(url) : NULL;
    f->text = text;
    f->len = len;
    if (!f->rel || (url && !f->git_url))
        return -1;
    c->n++;
    return 0;
}

/* Depth-first, entries sorted, dot-directories skipped; url: the enclosing repository's. */
static int walk(bench_corpus *c, const char *root, const char *dir, const char *exts,
                const char *url_in)
{
    char *own_url = git_remote(dir);
    const char *url = own_url ? own_url : url_in;
    DIR *d = opendir(dir);
    if (!d) {
        free(own_url);
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **q = realloc(names, cap * sizeof *q);
            if (!q)
                break;
            names = q;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        if (!names[i] || snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path ||
            lstat(path, &st) != 0)
            continue;
        if (rc == 0 && S_ISDIR(st.st_mode))
            rc = walk(c, root, path, exts, url);
        else if (rc == 0 && S_ISREG(st.st_mode) && ext_wanted(names[i], exts))
            rc = add_file(c, root, path, names[i], url);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(own_url);
    return rc;
}

int bench_corpus_load(bench_corpus *c, const char *dir, const char *exts, const char *git_url)
{
    memset(c, 0, sizeof *c);
    c->files = calloc(CORPUS_MAX_FILES, sizeof *c->files);
    if (!c->files) {
        fprintf(stderr, "serval-bench: out of memory\n");
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "serval-bench: --repos %s is not a directory\n", dir);
        return -1;
    }
    if (walk(c, dir, dir, exts ? exts : DEFAULT_EXTS, git_url) != 0) {
        fprintf(stderr, "serval-bench: out of memory reading %s\n", dir);
        return -1;
    }
    if (c->n == 0) {
        fprintf(stderr, "serval-bench: no source files (%s, %d..%d bytes) under %s\n",
                exts ? exts : DEFAULT_EXTS, CORPUS_MIN_BYTES, CORPUS_MAX_BYTES, dir);
        return -1;
    }
    if (git_url) /* --git-url wins over the remotes found */
        for (size_t i = 0; i < c->n; i++) {
            free(c->files[i].git_url);
            c->files[i].git_url = strdup(git_url);
        }
    return 0;
}

void bench_corpus_free(bench_corpus *c)
{
    for (size_t i = 0; c->files && i < c->n; i++) {
        free(c->files[i].rel);
        free(c->files[i].git_url);
        free(c->files[i].text);
    }
    free(c->files);
    memset(c, 0, sizeof *c);
}
