/* auth.c — bearer-token store: tokens from flags and a token file, or one generated into the
 * data directory at first start; token files must be private; checks compare in constant
 * time. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUTH_MAX_TOKENS 1024
#define AUTH_MAX_TOKEN_LEN 256

struct rpc_auth {
    bool disabled;
    bool per_token_cache;
    size_t n;
    char **tokens;
    char *generated;  /* tokens[0] when this start generated it, else NULL */
    char *data_token; /* <data_dir>/token when the tokens came from there (malloc'd) */
};

/* Tokens are printable ASCII without spaces, so they survive headers and files unchanged. */
static bool token_ok(const char *t, size_t len)
{
    if (len == 0 || len > AUTH_MAX_TOKEN_LEN) return false;
    for (size_t i = 0; i < len; i++)
        if (t[i] <= 0x20 || t[i] >= 0x7f) return false;
    return true;
}

static eng_status add_token(rpc_auth *a, const char *t, size_t len, const char *where,
                            eng_err *err)
{
    if (!token_ok(t, len))
        return eng_fail(err, ENG_ERR_INVALID,
                        "%s: a token must be 1..%d printable ASCII characters without spaces",
                        where, AUTH_MAX_TOKEN_LEN);
    if (a->n == AUTH_MAX_TOKENS)
        return eng_fail(err, ENG_ERR_INVALID, "%s: more than %d tokens", where, AUTH_MAX_TOKENS);
    char *copy = strndup(t, len);
    if (!copy) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    a->tokens[a->n++] = copy;
    return ENG_OK;
}

/* A token file others can read leaks every token in it; one others can write lets them add
 * their own. Checked on the open file, so a rename in between cannot swap it. */
static eng_status check_private(FILE *f, const char *path, bool allow, eng_err *err)
{
    struct stat st;
    if (fstat(fileno(f), &st) != 0)
        return eng_fail(err, ENG_ERR_IO, "token file %s: %s", path, strerror(errno));
    if (allow || (st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) == 0) return ENG_OK;
    return eng_fail(err, ENG_ERR_INVALID,
                    "token file %s can be read or written by other users (mode %04o); make it "
                    "private with 'chmod 600 %s' (or accept it with --allow-readable-token-file)",
                    path, (unsigned)(st.st_mode & 07777), path);
}

/* Reads one token per line; blank lines and '#' comments are skipped. */
static eng_status load_file(rpc_auth *a, const char *path, bool required, bool allow_readable,
                            eng_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!required && errno == ENOENT) return ENG_OK;
        return eng_fail(err, ENG_ERR_IO, "token file %s: %s", path, strerror(errno));
    }
    char line[AUTH_MAX_TOKEN_LEN + 64];
    eng_status st = check_private(f, path, allow_readable, err);
    int lineno = 0;
    while (st == ENG_OK && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            st = eng_fail(err, ENG_ERR_INVALID, "token file %s:%d: line too long", path, lineno);
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
                           line[len - 1] == ' ' || line[len - 1] == '\t'))
            line[--len] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '\0' || *s == '#') continue;
        char where[300];
        snprintf(where, sizeof where, "token file %s:%d", path, lineno);
        st = add_token(a, s, strlen(s), where, err);
    }
    fclose(f);
    return st;
}

static eng_status generate(rpc_auth *a, const char *dir, const char *path, eng_err *err)
{
    unsigned char rnd[24];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
        if (fd >= 0) close(fd);
        return eng_fail(err, ENG_ERR_IO, "cannot read /dev/urandom to generate a token");
    }
    close(fd);
    char tok[3 + 2 * sizeof rnd + 1] = "sv_";
    for (size_t i = 0; i < sizeof rnd; i++) snprintf(tok + 3 + 2 * i, 3, "%02x", rnd[i]);

    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return eng_fail(err, ENG_ERR_IO, "data directory %s: %s", dir, strerror(errno));
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return eng_fail(err, ENG_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    size_t len = strlen(tok);
    bool ok = write(fd, tok, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
    ok = (close(fd) == 0) && ok;
    if (!ok) return eng_fail(err, ENG_ERR_IO, "cannot write %s", path);
    eng_status st = add_token(a, tok, len, path, err);
    if (st == ENG_OK) a->generated = a->tokens[a->n - 1];
    return st;
}

eng_status rpc_auth_create(const rpc_auth_config *cfg, rpc_auth **out, const char **generated,
                           eng_err *err)
{
    *out = NULL;
    if (generated) *generated = NULL;
    rpc_auth *a = calloc(1, sizeof *a);
    if (!a || !(a->tokens = calloc(AUTH_MAX_TOKENS, sizeof *a->tokens))) {
        free(a);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    eng_status st = ENG_OK;
    a->disabled = cfg->no_auth;
    a->per_token_cache = cfg->prefix_cache_per_token;
    const char *origin = cfg->tokens_origin ? cfg->tokens_origin : "--token";
    for (size_t i = 0; st == ENG_OK && i < cfg->n_tokens; i++)
        st = add_token(a, cfg->tokens[i], strlen(cfg->tokens[i]), origin, err);
    if (st == ENG_OK && cfg->token_file)
        st = load_file(a, cfg->token_file, true, cfg->allow_readable_token_file, err);
    if (st == ENG_OK && a->n == 0 && !a->disabled) {
        if (!cfg->data_dir) {
            st = eng_fail(err, ENG_ERR_INVALID, "no token configured and no data directory");
        } else if (asprintf(&a->data_token, "%s/token", cfg->data_dir) < 0) {
            a->data_token = NULL;
            st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        } else {
            st = load_file(a, a->data_token, false, cfg->allow_readable_token_file, err);
            if (st == ENG_OK && a->n == 0) st = generate(a, cfg->data_dir, a->data_token, err);
        }
    }
    if (st != ENG_OK) {
        rpc_auth_free(a);
        return st;
    }
    if (generated) *generated = a->generated;
    *out = a;
    return ENG_OK;
}

void rpc_auth_free(rpc_auth *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n; i++) free(a->tokens[i]);
    free(a->tokens);
    free(a->data_token);
    free(a);
}

bool rpc_auth_disabled(const rpc_auth *a) { return a->disabled; }

/* Compares without an early exit, so the time does not tell how many bytes matched. */
static bool ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

int rpc_auth_match(const rpc_auth *a, const char *value, size_t len)
{
    if (a->disabled) return RPC_AUTH_ANONYMOUS;
    if (!value || len < 7 || strncasecmp(value, "Bearer ", 7) != 0) return RPC_AUTH_NONE;
    const char *t = value + 7;
    size_t tlen = len - 7;
    while (tlen > 0 && *t == ' ') t++, tlen--;
    while (tlen > 0 && t[tlen - 1] == ' ') tlen--;
    int match = RPC_AUTH_NONE;
    /* Every token is compared (no early exit), so timing does not tell which one matched. */
    for (size_t i = 0; i < a->n; i++) {
        bool eq = ct_equal(t, tlen, a->tokens[i], strlen(a->tokens[i]));
        match = eq && match == RPC_AUTH_NONE ? (int)i : match;
    }
    return match;
}

bool rpc_auth_check_header(const rpc_auth *a, const char *value, size_t len)
{
    return rpc_auth_match(a, value, len) != RPC_AUTH_NONE;
}

size_t rpc_auth_n_tokens(const rpc_auth *a) { return a->n; }

const char *rpc_auth_data_token_path(const rpc_auth *a) { return a->data_token; }

uint64_t rpc_auth_cache_salt(const rpc_auth *a, int identity)
{
    if (!a || !a->per_token_cache || identity < 0 || (size_t)identity >= a->n) return 0;
    return (uint64_t)identity + 1;
}
