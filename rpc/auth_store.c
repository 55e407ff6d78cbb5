/* auth_store.c — the named-token store, <data_dir>/tokens: a per-store random salt and one
 * line per token (name, HMAC-SHA-256(salt, token), scopes, rate, creation time). Read by the
 * server (rpc_auth), written by `serval token` with an atomic rename; never holds a token in
 * clear. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "auth_hash.h"

static const struct {
    const char *name;
    unsigned bit;
} scope_names[] = {{"completion", RPC_SCOPE_COMPLETION},
                   {"chat", RPC_SCOPE_CHAT},
                   {"embeddings", RPC_SCOPE_EMBEDDINGS},
                   {"admin", RPC_SCOPE_ADMIN}};
#define N_SCOPE_NAMES (sizeof scope_names / sizeof scope_names[0])

eng_status rpc_scopes_parse(const char *list, unsigned *out, eng_err *err)
{
    *out = 0;
    const char *p = list;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        bool found = false;
        for (size_t i = 0; i < N_SCOPE_NAMES; i++)
            if (strlen(scope_names[i].name) == n && !strncmp(p, scope_names[i].name, n)) {
                *out |= scope_names[i].bit;
                found = true;
            }
        if (n == 3 && !strncmp(p, "all", 3)) *out |= RPC_SCOPE_ALL, found = true;
        if (!found)
            return eng_fail(err, ENG_ERR_INVALID,
                            "unknown scope '%.*s' (scopes: completion, chat, embeddings, admin, "
                            "all)", (int)n, p);
        p += n;
        if (*p == ',') p++;
    }
    if (*out == 0) return eng_fail(err, ENG_ERR_INVALID, "no scope given");
    return ENG_OK;
}

void rpc_scopes_format(unsigned scopes, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_SCOPE_NAMES; i++) {
        if (!(scopes & scope_names[i].bit)) continue;
        int w = snprintf(buf + at, cap - at, "%s%s", at ? "," : "", scope_names[i].name);
        if (w < 0 || (size_t)w >= cap - at) break;
        at += (size_t)w;
    }
}

bool rpc_token_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > RPC_TOKEN_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == '@';
        if (!ok) return false;
    }
    return true;
}

void rpc_token_store_clear(rpc_token_store *s)
{
    free(s->items);
    *s = (rpc_token_store){0};
}

eng_status rpc_token_store_add(rpc_token_store *s, const rpc_token_entry *e, eng_err *err)
{
    if (s->n == RPC_TOKEN_STORE_MAX)
        return eng_fail(err, ENG_ERR_INVALID, "the store holds %d tokens at most",
                        RPC_TOKEN_STORE_MAX);
    rpc_token_entry *items = realloc(s->items, (s->n + 1) * sizeof *items);
    if (!items) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    s->items = items;
    s->items[s->n++] = *e;
    return ENG_OK;
}

/* One "token NAME HASH key=value..." line (after "token "). */
static eng_status parse_token_line(char *rest, rpc_token_entry *e, const char *where,
                                   eng_err *err)
{
    *e = (rpc_token_entry){.scopes = RPC_SCOPE_DEFAULT};
    char *save = NULL;
    char *name = strtok_r(rest, " \t", &save);
    char *hash = strtok_r(NULL, " \t", &save);
    if (!name || !hash || !rpc_token_name_ok(name))
        return eng_fail(err, ENG_ERR_FORMAT, "%s: expected 'token NAME HASH ...' with a name of "
                        "letters, digits and -_.@", where);
    snprintf(e->name, sizeof e->name, "%s", name);
    if (rpc_unhex(hash, strlen(hash), e->hash, sizeof e->hash) != 0)
        return eng_fail(err, ENG_ERR_FORMAT, "%s: the hash must be 64 hex digits", where);
    for (char *kv; (kv = strtok_r(NULL, " \t", &save));) {
        char *eq = strchr(kv, '=');
        if (!eq) return eng_fail(err, ENG_ERR_FORMAT, "%s: '%s' is not key=value", where, kv);
        *eq = '\0';
        const char *v = eq + 1;
        char *end = NULL;
        if (!strcmp(kv, "scopes")) {
            eng_err e2 = {{0}};
            if (rpc_scopes_parse(v, &e->scopes, &e2) != ENG_OK)
                return eng_fail(err, ENG_ERR_FORMAT, "%s: %s", where, e2.msg);
        } else if (!strcmp(kv, "rate")) {
            e->rate_per_min = strtol(v, &end, 10);
            if (!*v || *end || e->rate_per_min < 0)
                return eng_fail(err, ENG_ERR_FORMAT, "%s: rate must be requests per minute "
                                "(0: no own limit)", where);
        } else if (!strcmp(kv, "created")) {
            e->created = strtoll(v, &end, 10);
            if (!*v || *end) return eng_fail(err, ENG_ERR_FORMAT, "%s: bad created time", where);
        } else {
            return eng_fail(err, ENG_ERR_FORMAT, "%s: unknown key '%s'", where, kv);
        }
    }
    return ENG_OK;
}

eng_status rpc_token_store_read(const char *path, bool allow_readable, rpc_token_store *out,
                                eng_err *err)
{
    *out = (rpc_token_store){0};
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return ENG_OK;
        return eng_fail(err, ENG_ERR_IO, "token store %s: %s", path, strerror(errno));
    }
    struct stat st;
    eng_status rc = ENG_OK;
    if (fstat(fileno(f), &st) != 0) {
        rc = eng_fail(err, ENG_ERR_IO, "token store %s: %s", path, strerror(errno));
    } else if (!allow_readable && (st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH))) {
        rc = eng_fail(err, ENG_ERR_INVALID, "token store %s can be read or written by other "
                      "users (mode %04o); make it private with 'chmod 600 %s'", path,
                      (unsigned)(st.st_mode & 07777), path);
    }
    char line[512];
    int lineno = 0;
    while (rc == ENG_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char where[300];
        snprintf(where, sizeof where, "token store %s:%d", path, lineno);
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = eng_fail(err, ENG_ERR_FORMAT, "%s: line too long", where);
            break;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (!line[0] || line[0] == '#') continue;
        if (!strncmp(line, "salt ", 5)) {
            if (rpc_unhex(line + 5, strlen(line + 5), out->salt, sizeof out->salt) != 0)
                rc = eng_fail(err, ENG_ERR_FORMAT, "%s: the salt must be 64 hex digits", where);
            out->has_salt = true;
        } else if (!strncmp(line, "token ", 6)) {
            rpc_token_entry e;
            rc = parse_token_line(line + 6, &e, where, err);
            for (size_t i = 0; rc == ENG_OK && i < out->n; i++)
                if (!strcmp(out->items[i].name, e.name))
                    rc = eng_fail(err, ENG_ERR_FORMAT, "%s: a second token named '%s'", where,
                                  e.name);
            if (rc == ENG_OK) rc = rpc_token_store_add(out, &e, err);
        } else {
            rc = eng_fail(err, ENG_ERR_FORMAT, "%s: expected 'salt HEX' or 'token NAME HASH ...'",
                          where);
        }
    }
    if (rc == ENG_OK && out->n && !out->has_salt)
        rc = eng_fail(err, ENG_ERR_FORMAT, "token store %s: tokens but no salt line", path);
    fclose(f);
    if (rc != ENG_OK) rpc_token_store_clear(out);
    return rc;
}

eng_status rpc_token_store_write(const char *path, const rpc_token_store *s, eng_err *err)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return eng_fail(err, ENG_ERR_INVALID, "token store path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return eng_fail(err, ENG_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return eng_fail(err, ENG_ERR_IO, "cannot write %s", tmp);
    }
    char salt[2 * RPC_SHA256_BYTES + 1];
    rpc_hex(s->salt, sizeof s->salt, salt);
    fprintf(f, "# Serval named tokens, written by `serval token`: salted hashes only (a token is "
               "shown once, when created).\nsalt %s\n", salt);
    for (size_t i = 0; i < s->n; i++) {
        const rpc_token_entry *e = &s->items[i];
        char h[2 * RPC_SHA256_BYTES + 1], sc[64];
        rpc_hex(e->hash, sizeof e->hash, h);
        rpc_scopes_format(e->scopes, sc, sizeof sc);
        fprintf(f, "token %s %s scopes=%s rate=%ld created=%lld\n", e->name, h, sc,
                e->rate_per_min, e->created);
    }
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return eng_fail(err, ENG_ERR_IO, "cannot write %s: %s", path, strerror(e));
    }
    return ENG_OK;
}
