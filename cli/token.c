/* token.c — `serval token`: creates, lists and revokes named tokens in <data_dir>/tokens
 * (rpc/auth.h's store). A new token is printed once and only its salted hash is kept; a
 * running server picks changes up within a second (or at once on SIGHUP). */
#include "token.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "auth_hash.h"
#include "flags.h"
#include "serve_opts.h"

typedef struct token_opts {
    const char *scopes, *rate, *data_dir, *config;
} token_opts;

/* The data directory: --data-dir, else what `serve` would use (its config file, $SERVAL_*,
 * ~/.serval). Returns a malloc'd path or NULL (message printed). */
static char *find_data_dir(const token_opts *t)
{
    if (t->data_dir) return strdup(t->data_dir);
    char *args[3] = {"--config", (char *)t->config, NULL};
    serve_opts o;
    if (cli_serve_opts_parse(t->config ? 2 : 0, args, "serval token", &o) >= 0) return NULL;
    const char *d = cli_serve_data_dir(&o);
    char *r = d ? strdup(d) : NULL;
    if (!d) fprintf(stderr, "serval token: no data directory (give --data-dir or set $HOME)\n");
    cli_serve_opts_free(&o);
    return r;
}

/* "60/min", "60" (per minute), "2/s", "0" (no own limit) -> requests per minute. */
static int parse_rate(const char *s, long *out)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (end == s || n < 0 || n > 1000000 || errno) return -1;
    if (!*end || !strcmp(end, "/min") || !strcmp(end, "/m")) return *out = n, 0;
    if (!strcmp(end, "/s") || !strcmp(end, "/sec")) return *out = n * 60, 0;
    if (!strcmp(end, "/h") || !strcmp(end, "/hour")) {
        *out = n / 60 > 0 ? n / 60 : (n ? 1 : 0);
        return 0;
    }
    return -1;
}

/* Holds <dir>/tokens.lock for the read-modify-write, so two `serval token create` at once
 * cannot lose one of them. Returns the fd (close to unlock) or -1 (message printed). */
static int lock_store(const char *dir)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "serval token: data directory %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/tokens.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        fprintf(stderr, "serval token: cannot lock %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static int do_create(const char *path, const char *name, unsigned scopes, long rate)
{
    rpc_token_store s;
    eng_err err = {{0}};
    if (rpc_token_store_read(path, false, &s, &err) != ENG_OK) {
        fprintf(stderr, "serval token: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    for (size_t i = 0; i < s.n; i++)
        if (!strcmp(s.items[i].name, name)) {
            fprintf(stderr, "serval token: a token named '%s' exists; revoke it first (`serval "
                    "token revoke %s`)\n", name, name);
            goto out;
        }
    uint8_t rnd[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, rnd, sizeof rnd) == (ssize_t)sizeof rnd;
    if (ok && !s.has_salt) ok = read(fd, s.salt, sizeof s.salt) == (ssize_t)sizeof s.salt;
    if (fd >= 0) close(fd);
    if (!ok) {
        fprintf(stderr, "serval token: cannot read /dev/urandom\n");
        goto out;
    }
    s.has_salt = true;
    char tok[4 + 2 * sizeof rnd + 1] = "svt_";
    rpc_hex(rnd, sizeof rnd, tok + 4);
    rpc_token_entry e = {.scopes = scopes, .rate_per_min = rate, .created = (long long)time(NULL)};
    snprintf(e.name, sizeof e.name, "%s", name);
    rpc_hmac_sha256(s.salt, sizeof s.salt, tok, strlen(tok), e.hash);
    if (rpc_token_store_add(&s, &e, &err) != ENG_OK || rpc_token_store_write(path, &s, &err) != ENG_OK) {
        fprintf(stderr, "serval token: %s\n", err.msg);
        goto out;
    }
    char sc[64];
    rpc_scopes_format(scopes, sc, sizeof sc);
    printf("%s\n", tok);
    fprintf(stderr, "serval token: created '%s' (scopes %s, %s); it is shown only this once: "
            "clients send 'authorization: Bearer <token>'. Kept hashed in %s\n", name, sc,
            rate ? "own rate limit" : "server's rate limits", path);
    rc = 0;
out:
    rpc_token_store_clear(&s);
    return rc;
}

static int do_list(const char *path)
{
    rpc_token_store s;
    eng_err err = {{0}};
    if (rpc_token_store_read(path, false, &s, &err) != ENG_OK) {
        fprintf(stderr, "serval token: %s\n", err.msg);
        return 1;
    }
    printf("%-24s %-34s %-10s %s\n", "NAME", "SCOPES", "RATE/MIN", "CREATED (UTC)");
    for (size_t i = 0; i < s.n; i++) {
        const rpc_token_entry *e = &s.items[i];
        char sc[64], rate[24], when[32];
        rpc_scopes_format(e->scopes, sc, sizeof sc);
        snprintf(rate, sizeof rate, e->rate_per_min ? "%ld" : "-", e->rate_per_min);
        time_t t = (time_t)e->created;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
        printf("%-24s %-34s %-10s %s\n", e->name, sc, rate, when);
    }
    if (!s.n) fprintf(stderr, "serval token: no named tokens in %s\n", path);
    rpc_token_store_clear(&s);
    return 0;
}

static int do_revoke(const char *path, const char *name)
{
    rpc_token_store s;
    eng_err err = {{0}};
    if (rpc_token_store_read(path, false, &s, &err) != ENG_OK) {
        fprintf(stderr, "serval token: %s\n", err.msg);
        return 1;
    }
    size_t j = 0;
    for (size_t i = 0; i < s.n; i++)
        if (strcmp(s.items[i].name, name)) s.items[j++] = s.items[i];
    int rc = 1;
    if (j == s.n) {
        fprintf(stderr, "serval token: no token named '%s' in %s (`serval token list`)\n", name,
                path);
    } else {
        s.n = j;
        if (rpc_token_store_write(path, &s, &err) != ENG_OK) {
            fprintf(stderr, "serval token: %s\n", err.msg);
        } else {
            fprintf(stderr, "serval token: revoked '%s'; a running server refuses it within a "
                    "second\n", name);
            rc = 0;
        }
    }
    rpc_token_store_clear(&s);
    return rc;
}

int cli_token_main(int argc, char **argv)
{
    token_opts t = {0};
    const cli_flag flags[] = {
        {"--scopes", "LIST", CLI_FLAG_STRING, &t.scopes, "completion,chat,embeddings", 0, 0, NULL,
         "create: what the token may call, a comma list of completion, chat, embeddings "
         "(embeddings and search), admin (/metrics, the status page), or all"},
        {"--rate", "N/min", CLI_FLAG_STRING, &t.rate, "0", 0, 0, NULL,
         "create: the token's own limit in requests per minute (N, N/min, N/s); over it "
         "requests get 429 or RESOURCE_EXHAUSTED with a retry-after; 0: the server's limits"},
        {"--data-dir", "DIR", CLI_FLAG_STRING, &t.data_dir, NULL, 0, 0, NULL,
         "the data directory holding the store (default: the one `serval serve` uses: its "
         "config file's data_dir, $SERVAL_DATA_DIR, else ~/.serval)"},
        {"--config", "PATH", CLI_FLAG_STRING, &t.config, NULL, 0, 0, NULL,
         "the config file to read data_dir from (default /etc/serval/serval.toml)"},
    };
    const cli_command cmd = {
        .prog = "serval token",
        .usage = "create NAME [--scopes LIST] [--rate N/min] | list | revoke NAME",
        .about = "Manages named tokens, one per developer or service, in DATA_DIR/tokens (mode "
                 "600). `create` prints a new token once on stdout; only its salted SHA-256 "
                 "HMAC is stored. A running `serval serve` picks up changes within a second "
                 "(or at once on SIGHUP); its logs, metrics and events name the token, never "
                 "show it. Tokens from --token and --token-file keep working beside these.",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0]};
    const char *verb = argc > 0 ? argv[0] : NULL;
    bool is_verb = verb && (!strcmp(verb, "create") || !strcmp(verb, "list") ||
                            !strcmp(verb, "revoke"));
    if (!is_verb) {
        cli_parse_result pr = cli_parse(&cmd, argc, argv); /* --help, --help-man */
        if (pr == CLI_PARSE_HELP) return 0;
        if (pr == CLI_PARSE_OK)
            cli_usage_error(&cmd, verb ? "unknown subcommand '%s': create, list or revoke"
                                       : "%screate, list or revoke", verb ? verb : "");
        return 2;
    }
    bool takes_name = strcmp(verb, "list") != 0;
    const char *name = NULL;
    int rest = 1;
    if (takes_name && argc > 1 && argv[1][0] != '-') name = argv[1], rest = 2;
    cli_parse_result pr = cli_parse(&cmd, argc - rest, argv + rest);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? 0 : 2;
    if (takes_name && !name)
        return cli_usage_error(&cmd, "`token %s` needs a NAME", verb), 2;
    if (name && !rpc_token_name_ok(name))
        return cli_usage_error(&cmd, "a token's name is 1..%d letters, digits and -_.@, got '%s'",
                               RPC_TOKEN_NAME_MAX, name), 2;
    unsigned scopes = 0;
    long rate = 0;
    eng_err err = {{0}};
    if (rpc_scopes_parse(t.scopes, &scopes, &err) != ENG_OK)
        return cli_usage_error(&cmd, "--scopes: %s", err.msg), 2;
    if (parse_rate(t.rate, &rate) != 0)
        return cli_usage_error(&cmd, "--rate expects requests per minute (60, 60/min, 2/s), got "
                               "'%s'", t.rate), 2;
    char *dir = find_data_dir(&t);
    if (!dir) return 2;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokens", dir);
    int rc = 1, lock = lock_store(dir);
    if (lock >= 0) {
        rc = !strcmp(verb, "create")   ? do_create(path, name, scopes, rate)
             : !strcmp(verb, "revoke") ? do_revoke(path, name)
                                       : do_list(path);
        close(lock);
    }
    free(dir);
    return rc;
}
