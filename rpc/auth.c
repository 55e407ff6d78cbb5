/* auth.c — bearer-token store: tokens from flags and a token file, named tokens from
 * <data_dir>/tokens, or one generated into the data directory at first start; token files
 * must be private; only HMAC digests are kept and compared (in constant time); scopes,
 * per-token rate limits and reloads that keep each token's slot. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth_hash.h"
#include "clock.h"
#include "log.h"

#define AUTH_MAX_TOKEN_LEN 256

/* One configured token, as the sources describe it (before it gets a slot). */
typedef struct auth_entry {
    char name[RPC_TOKEN_NAME_MAX + 1];
    uint8_t hash[RPC_SHA256_BYTES];
    bool store_key;          /* hashed with the store's salt (named), else the process key */
    unsigned scopes;
    long rate_per_min;
} auth_entry;

typedef struct auth_slot {
    bool live, used;         /* used: ever held a token (not handed to a new one while free
                              * slots remain, so in-flight counts and cache salts do not carry) */
    auth_entry e;
    double bucket, bucket_ms; /* own rate limit: tokens left, eng_clock_ms() of the refill */
    atomic_ullong requests, forbidden, rate_limited; /* for /metrics, by name */
} auth_slot;

typedef struct file_sig {
    bool exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_sig;

struct rpc_auth {
    bool disabled;
    bool per_token_cache;
    pthread_rwlock_t lock;   /* slots, store salt */
    pthread_mutex_t rate_mu; /* buckets */
    auth_slot *slots;        /* [RPC_AUTH_MAX_SLOTS] */
    size_t high;             /* slots beyond this were never used */
    uint8_t mem_key[RPC_SHA256_BYTES];
    uint8_t store_salt[RPC_SHA256_BYTES];
    bool has_store_salt;
    /* the sources, kept for reloads */
    char **flag_tokens;
    size_t n_flag;
    bool flag_from_env;
    char *token_file;
    bool allow_readable;
    char *store_path;        /* <data_dir>/tokens, or NULL without a data directory */
    bool use_data_token;     /* <data_dir>/token was the source at start */
    char *data_token;        /* its path (malloc'd) when used */
    char *generated;         /* this start generated it: its text, until freed */
    /* watching the files */
    pthread_mutex_t poll_mu;
    double next_poll_ms;
    file_sig sig_store, sig_file;
};

typedef struct entry_list {
    auth_entry *v;
    size_t n;
} entry_list;

/* Tokens are printable ASCII without spaces, so they survive headers and files unchanged. */
static bool token_ok(const char *t, size_t len)
{
    if (len == 0 || len > AUTH_MAX_TOKEN_LEN) return false;
    for (size_t i = 0; i < len; i++)
        if (t[i] <= 0x20 || t[i] >= 0x7f) return false;
    return true;
}

static eng_status list_push(entry_list *l, const auth_entry *e, const char *where, eng_err *err)
{
    if (l->n == RPC_AUTH_MAX_SLOTS)
        return eng_fail(err, ENG_ERR_INVALID, "%s: more than %d tokens", where,
                        RPC_AUTH_MAX_SLOTS);
    auth_entry *v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    l->v = v;
    l->v[l->n++] = *e;
    return ENG_OK;
}

/* An unnamed token in clear: checked, hashed with the process key, every scope. */
static eng_status add_clear(rpc_auth *a, entry_list *l, const char *t, size_t len,
                            const char *name, const char *where, eng_err *err)
{
    if (!token_ok(t, len))
        return eng_fail(err, ENG_ERR_INVALID,
                        "%s: a token must be 1..%d printable ASCII characters without spaces",
                        where, AUTH_MAX_TOKEN_LEN);
    auth_entry e = {.scopes = RPC_SCOPE_ALL};
    snprintf(e.name, sizeof e.name, "%s", name);
    rpc_hmac_sha256(a->mem_key, sizeof a->mem_key, t, len, e.hash);
    return list_push(l, &e, where, err);
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

/* Reads one token per line; blank lines and '#' comments are skipped. Names: prefix:N. */
static eng_status load_file(rpc_auth *a, entry_list *l, const char *path, const char *prefix,
                            bool required, eng_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!required && errno == ENOENT) return ENG_OK;
        return eng_fail(err, ENG_ERR_IO, "token file %s: %s", path, strerror(errno));
    }
    char line[AUTH_MAX_TOKEN_LEN + 64];
    eng_status st = check_private(f, path, a->allow_readable, err);
    int lineno = 0, k = 0;
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
        char where[300], name[RPC_TOKEN_NAME_MAX + 1];
        snprintf(where, sizeof where, "token file %s:%d", path, lineno);
        if (prefix) snprintf(name, sizeof name, "%s:%d", prefix, ++k);
        else snprintf(name, sizeof name, "data-dir-token");
        st = add_clear(a, l, s, strlen(s), name, where, err);
    }
    fclose(f);
    return st;
}

static eng_status random_bytes(uint8_t *b, size_t n, eng_err *err)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, b, n) == (ssize_t)n;
    if (fd >= 0) close(fd);
    return ok ? ENG_OK : eng_fail(err, ENG_ERR_IO, "cannot read /dev/urandom");
}

static eng_status generate(rpc_auth *a, entry_list *l, const char *dir, eng_err *err)
{
    unsigned char rnd[24];
    if (random_bytes(rnd, sizeof rnd, err) != ENG_OK)
        return eng_fail(err, ENG_ERR_IO, "cannot read /dev/urandom to generate a token");
    char tok[3 + 2 * sizeof rnd + 1] = "sv_";
    rpc_hex(rnd, sizeof rnd, tok + 3);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return eng_fail(err, ENG_ERR_IO, "data directory %s: %s", dir, strerror(errno));
    int fd = open(a->data_token, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return eng_fail(err, ENG_ERR_IO, "cannot create %s: %s", a->data_token, strerror(errno));
    size_t len = strlen(tok);
    bool ok = write(fd, tok, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
    ok = (close(fd) == 0) && ok;
    if (!ok) return eng_fail(err, ENG_ERR_IO, "cannot write %s", a->data_token);
    if (!(a->generated = strdup(tok))) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    return add_clear(a, l, tok, len, "data-dir-token", a->data_token, err);
}

/* Every configured token from the sources (not the generated one: see rpc_auth_create). */
static eng_status collect(rpc_auth *a, entry_list *l, rpc_token_store *store, eng_err *err)
{
    eng_status st = ENG_OK;
    for (size_t i = 0; st == ENG_OK && i < a->n_flag; i++) {
        char name[32];
        if (a->flag_from_env) snprintf(name, sizeof name, "SERVAL_TOKEN");
        else snprintf(name, sizeof name, "token:%zu", i + 1);
        st = add_clear(a, l, a->flag_tokens[i], strlen(a->flag_tokens[i]), name,
                       a->flag_from_env ? "$SERVAL_TOKEN" : "--token", err);
    }
    if (st == ENG_OK && a->token_file)
        st = load_file(a, l, a->token_file, "token-file", true, err);
    if (st == ENG_OK && a->store_path)
        st = rpc_token_store_read(a->store_path, a->allow_readable, store, err);
    for (size_t i = 0; st == ENG_OK && i < store->n; i++) {
        const rpc_token_entry *t = &store->items[i];
        auth_entry e = {.store_key = true, .scopes = t->scopes | RPC_SCOPE_TOKEN,
                        .rate_per_min = t->rate_per_min};
        memcpy(e.name, t->name, sizeof e.name);
        memcpy(e.hash, t->hash, sizeof e.hash);
        st = list_push(l, &e, a->store_path, err);
    }
    if (st == ENG_OK && a->use_data_token)
        st = load_file(a, l, a->data_token, NULL, false, err);
    return st;
}

static void sig_of(const char *path, file_sig *s)
{
    struct stat st;
    *s = (file_sig){0};
    if (!path || stat(path, &st) != 0) return;
    *s = (file_sig){.exists = true, .dev = st.st_dev, .ino = st.st_ino, .size = st.st_size,
                    .mtime = st.st_mtim};
}

static bool sig_eq(const file_sig *x, const file_sig *y)
{
    return x->exists == y->exists && x->dev == y->dev && x->ino == y->ino &&
           x->size == y->size && x->mtime.tv_sec == y->mtime.tv_sec &&
           x->mtime.tv_nsec == y->mtime.tv_nsec;
}

static void append(char *buf, size_t cap, const char *fmt, const char *s)
{
    size_t at = strlen(buf);
    if (at + 1 < cap) snprintf(buf + at, cap - at, fmt, s);
}

/* Swaps the new set in under the write lock; names keep their slots. */
static void apply(rpc_auth *a, const entry_list *l, const rpc_token_store *store, char *summary,
                  size_t cap)
{
    char added[512] = "", removed[512] = "", changed[512] = "";
    int n_add = 0, n_rm = 0, n_ch = 0, n_same = 0;
    pthread_rwlock_wrlock(&a->lock);
    a->has_store_salt = store->has_salt;
    if (store->has_salt) memcpy(a->store_salt, store->salt, sizeof a->store_salt);
    bool *kept = calloc(RPC_AUTH_MAX_SLOTS, sizeof *kept);
    for (size_t i = 0; i < l->n; i++) {
        const auth_entry *e = &l->v[i];
        size_t s = RPC_AUTH_MAX_SLOTS;
        for (size_t j = 0; j < a->high; j++)
            if (a->slots[j].live && !strcmp(a->slots[j].e.name, e->name) && !(kept && kept[j])) {
                s = j;
                break;
            }
        if (s < RPC_AUTH_MAX_SLOTS) {
            auth_slot *sl = &a->slots[s];
            if (memcmp(&sl->e, e, sizeof *e) != 0) {
                n_ch++;
                append(changed, sizeof changed, n_ch > 1 ? ", %s" : "%s", e->name);
            } else {
                n_same++;
            }
            if (sl->e.rate_per_min != e->rate_per_min) sl->bucket_ms = 0;
            sl->e = *e;
        } else {
            if (a->high < RPC_AUTH_MAX_SLOTS) {
                s = a->high++;
            } else { /* every slot used once: take a free one */
                for (size_t j = 0; j < RPC_AUTH_MAX_SLOTS && s == RPC_AUTH_MAX_SLOTS; j++)
                    if (!a->slots[j].live && !(kept && kept[j])) s = j;
            }
            if (s == RPC_AUTH_MAX_SLOTS) continue; /* cannot happen: l->n <= the slots */
            auth_slot *ns = &a->slots[s];
            ns->live = ns->used = true;
            ns->e = *e;
            ns->bucket = ns->bucket_ms = 0;
            atomic_store(&ns->requests, 0);
            atomic_store(&ns->forbidden, 0);
            atomic_store(&ns->rate_limited, 0);
            n_add++;
            append(added, sizeof added, n_add > 1 ? ", %s" : "%s", e->name);
        }
        if (kept) kept[s] = true;
    }
    for (size_t j = 0; j < a->high; j++)
        if (a->slots[j].live && kept && !kept[j]) {
            a->slots[j].live = false;
            n_rm++;
            append(removed, sizeof removed, n_rm > 1 ? ", %s" : "%s", a->slots[j].e.name);
        }
    free(kept);
    pthread_rwlock_unlock(&a->lock);
    if (summary && cap) {
        snprintf(summary, cap, "tokens: %d added%s%s%s, %d removed%s%s%s, %d changed%s%s%s, "
                 "%d unchanged", n_add, n_add ? " (" : "", added, n_add ? ")" : "", n_rm,
                 n_rm ? " (" : "", removed, n_rm ? ")" : "", n_ch, n_ch ? " (" : "", changed,
                 n_ch ? ")" : "", n_same);
    }
}

eng_status rpc_auth_create(const rpc_auth_config *cfg, rpc_auth **out, const char **generated,
                           eng_err *err)
{
    *out = NULL;
    if (generated) *generated = NULL;
    rpc_auth *a = calloc(1, sizeof *a);
    if (!a) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    pthread_rwlock_init(&a->lock, NULL);
    pthread_mutex_init(&a->rate_mu, NULL);
    pthread_mutex_init(&a->poll_mu, NULL);
    entry_list l = {0};
    rpc_token_store store = {0};
    eng_status st = ENG_OK;
    a->disabled = cfg->no_auth;
    a->per_token_cache = cfg->prefix_cache_per_token;
    a->allow_readable = cfg->allow_readable_token_file;
    a->flag_from_env = cfg->tokens_origin && !strcmp(cfg->tokens_origin, "$SERVAL_TOKEN");
    if (!(a->slots = calloc(RPC_AUTH_MAX_SLOTS, sizeof *a->slots)) ||
        (cfg->n_tokens && !(a->flag_tokens = calloc(cfg->n_tokens, sizeof *a->flag_tokens))) ||
        (cfg->token_file && !(a->token_file = strdup(cfg->token_file)))) {
        st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_tokens; i++) {
        if (!(a->flag_tokens[i] = strdup(cfg->tokens[i]))) {
            st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
            goto fail;
        }
        a->n_flag++;
    }
    if ((st = random_bytes(a->mem_key, sizeof a->mem_key, err)) != ENG_OK) goto fail;
    if (a->disabled) goto done; /* no token is read, none generated */
    if (cfg->data_dir && asprintf(&a->store_path, "%s/tokens", cfg->data_dir) < 0) {
        a->store_path = NULL;
        st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = collect(a, &l, &store, err)) != ENG_OK) goto fail;
    if (l.n == 0) {
        if (!cfg->data_dir) {
            st = eng_fail(err, ENG_ERR_INVALID, "no token configured and no data directory");
            goto fail;
        }
        if (asprintf(&a->data_token, "%s/token", cfg->data_dir) < 0) {
            a->data_token = NULL;
            st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
            goto fail;
        }
        a->use_data_token = true;
        st = load_file(a, &l, a->data_token, NULL, false, err);
        if (st == ENG_OK && l.n == 0) st = generate(a, &l, cfg->data_dir, err);
        if (st != ENG_OK) goto fail;
    }
    apply(a, &l, &store, NULL, 0);
    sig_of(a->store_path, &a->sig_store);
    sig_of(a->token_file, &a->sig_file);
done:
    a->next_poll_ms = eng_clock_ms() + 1000;
    free(l.v);
    rpc_token_store_clear(&store);
    if (generated) *generated = a->generated;
    *out = a;
    return ENG_OK;
fail:
    free(l.v);
    rpc_token_store_clear(&store);
    rpc_auth_free(a);
    return st;
}

void rpc_auth_free(rpc_auth *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->n_flag; i++) free(a->flag_tokens[i]);
    free(a->flag_tokens);
    free(a->slots);
    free(a->token_file);
    free(a->store_path);
    free(a->data_token);
    free(a->generated);
    pthread_rwlock_destroy(&a->lock);
    pthread_mutex_destroy(&a->rate_mu);
    pthread_mutex_destroy(&a->poll_mu);
    free(a);
}

bool rpc_auth_disabled(const rpc_auth *a) { return a->disabled; }

/* Compares without an early exit, so the time does not tell how many bytes matched. */
static bool ct_equal32(const uint8_t *x, const uint8_t *y)
{
    unsigned char diff = 0;
    for (size_t i = 0; i < RPC_SHA256_BYTES; i++) diff |= (unsigned char)(x[i] ^ y[i]);
    return diff == 0;
}

int rpc_auth_match(const rpc_auth *ca, const char *value, size_t len)
{
    rpc_auth *a = (rpc_auth *)ca; /* the token set may reload itself (rpc_auth_poll) */
    if (a->disabled) return RPC_AUTH_ANONYMOUS;
    if (!value || len < 7 || strncasecmp(value, "Bearer ", 7) != 0) return RPC_AUTH_NONE;
    const char *t = value + 7;
    size_t tlen = len - 7;
    while (tlen > 0 && *t == ' ') t++, tlen--;
    while (tlen > 0 && t[tlen - 1] == ' ') tlen--;
    if (tlen == 0 || tlen > AUTH_MAX_TOKEN_LEN) return RPC_AUTH_NONE;
    rpc_auth_poll(a);
    uint8_t hm[RPC_SHA256_BYTES], hs[RPC_SHA256_BYTES];
    rpc_hmac_sha256(a->mem_key, sizeof a->mem_key, t, tlen, hm);
    int match = RPC_AUTH_NONE;
    pthread_rwlock_rdlock(&a->lock);
    if (a->has_store_salt) rpc_hmac_sha256(a->store_salt, sizeof a->store_salt, t, tlen, hs);
    else memset(hs, 0, sizeof hs);
    /* Every slot is compared (no early exit), so timing does not tell which one matched. */
    for (size_t i = 0; i < a->high; i++) {
        const auth_slot *s = &a->slots[i];
        bool eq = ct_equal32(s->e.store_key ? hs : hm, s->e.hash) && s->live;
        match = eq && match == RPC_AUTH_NONE ? (int)i : match;
    }
    pthread_rwlock_unlock(&a->lock);
    return match;
}

bool rpc_auth_check_header(const rpc_auth *a, const char *value, size_t len)
{
    return rpc_auth_match(a, value, len) != RPC_AUTH_NONE;
}

size_t rpc_auth_n_tokens(const rpc_auth *a)
{
    size_t n = 0;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lock);
    for (size_t i = 0; i < a->high; i++) n += a->slots[i].live;
    pthread_rwlock_unlock((pthread_rwlock_t *)&a->lock);
    return n;
}

size_t rpc_auth_n_slots(const rpc_auth *a)
{
    return a->disabled ? 0 : RPC_AUTH_MAX_SLOTS;
}

const char *rpc_auth_data_token_path(const rpc_auth *a)
{
    return a->use_data_token ? a->data_token : NULL;
}

uint64_t rpc_auth_cache_salt(const rpc_auth *a, int identity)
{
    if (!a || !a->per_token_cache || identity < 0 || (size_t)identity >= a->high) return 0;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lock);
    bool live = a->slots[identity].live;
    pthread_rwlock_unlock((pthread_rwlock_t *)&a->lock);
    return live ? (uint64_t)identity + 1 : 0;
}

const char *rpc_auth_name(const rpc_auth *a, int identity, char *buf, size_t cap)
{
    if (!cap) return buf;
    snprintf(buf, cap, "%s", identity == RPC_AUTH_ANONYMOUS || (a && a->disabled) ? "anonymous"
                                                                                  : "-");
    if (!a || identity < 0 || (size_t)identity >= a->high) return buf;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lock);
    if (a->slots[identity].live) snprintf(buf, cap, "%s", a->slots[identity].e.name);
    pthread_rwlock_unlock((pthread_rwlock_t *)&a->lock);
    return buf;
}

bool rpc_auth_allows(const rpc_auth *a, int identity, unsigned scope)
{
    if (scope == 0 || (a && a->disabled) || identity == RPC_AUTH_ANONYMOUS) return true;
    if (!a || identity < 0 || (size_t)identity >= a->high) return false;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lock);
    auth_slot *s = (auth_slot *)&a->slots[identity];
    bool ok = s->live && (scope == RPC_SCOPE_TOKEN || (s->e.scopes & scope) == scope);
    if (s->live) atomic_fetch_add(ok ? &s->requests : &s->forbidden, 1);
    pthread_rwlock_unlock((pthread_rwlock_t *)&a->lock);
    return ok;
}

bool rpc_auth_has_rate(const rpc_auth *a, int identity)
{
    if (!a || identity < 0 || (size_t)identity >= a->high) return false;
    pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lock);
    bool r = a->slots[identity].live && a->slots[identity].e.rate_per_min > 0;
    pthread_rwlock_unlock((pthread_rwlock_t *)&a->lock);
    return r;
}

/* A bucket of rate_per_min requests, refilled continuously at rate_per_min per minute. */
bool rpc_auth_rate_take(const rpc_auth *ca, int identity, double now_ms, int *retry_after_s)
{
    rpc_auth *a = (rpc_auth *)ca; /* the buckets change under rate_mu; the tokens do not */
    if (retry_after_s) *retry_after_s = 0;
    if (!a || identity < 0 || (size_t)identity >= a->high) return true;
    pthread_rwlock_rdlock(&a->lock);
    auth_slot *s = &a->slots[identity];
    long rate = s->live ? s->e.rate_per_min : 0;
    bool ok = true;
    if (rate > 0) {
        double per_ms = (double)rate / 60000.0, cap = (double)rate;
        pthread_mutex_lock(&a->rate_mu);
        if (s->bucket_ms == 0) {
            s->bucket = cap;
        } else {
            s->bucket += (now_ms - s->bucket_ms) * per_ms;
            if (s->bucket > cap) s->bucket = cap;
        }
        s->bucket_ms = now_ms;
        if (s->bucket >= 1.0) {
            s->bucket -= 1.0;
        } else {
            ok = false;
            atomic_fetch_add(&s->rate_limited, 1);
            int wait = (int)((1.0 - s->bucket) / per_ms / 1000.0) + 1;
            if (retry_after_s) *retry_after_s = wait;
        }
        pthread_mutex_unlock(&a->rate_mu);
    }
    pthread_rwlock_unlock(&a->lock);
    return ok;
}

eng_status rpc_auth_reload(rpc_auth *a, char *summary, size_t cap, eng_err *err)
{
    if (summary && cap) snprintf(summary, cap, "tokens: auth is off (--no-auth)");
    if (a->disabled) return ENG_OK;
    entry_list l = {0};
    rpc_token_store store = {0};
    file_sig s1, s2;
    sig_of(a->store_path, &s1);
    sig_of(a->token_file, &s2);
    eng_status st = collect(a, &l, &store, err);
    if (st == ENG_OK) apply(a, &l, &store, summary, cap);
    if (st == ENG_OK && l.n == 0 && summary && cap) { /* a revoke takes effect, even the last */
        size_t at = strlen(summary);
        snprintf(summary + at, cap - at, "; NO TOKEN LEFT: every request is refused until one "
                 "is added (`serval token create`)");
    }
    pthread_mutex_lock(&a->poll_mu);
    a->sig_store = s1;
    a->sig_file = s2;
    pthread_mutex_unlock(&a->poll_mu);
    free(l.v);
    rpc_token_store_clear(&store);
    return st;
}

void rpc_auth_poll(rpc_auth *a)
{
    if (!a || a->disabled) return;
    double now = eng_clock_ms();
    if (pthread_mutex_trylock(&a->poll_mu) != 0) return; /* someone else is looking */
    if (now < a->next_poll_ms) {
        pthread_mutex_unlock(&a->poll_mu);
        return;
    }
    a->next_poll_ms = now + 1000;
    file_sig s1, s2;
    sig_of(a->store_path, &s1);
    sig_of(a->token_file, &s2);
    bool changed = !sig_eq(&s1, &a->sig_store) || !sig_eq(&s2, &a->sig_file);
    a->sig_store = s1; /* a failed reload is reported once per change, not every second */
    a->sig_file = s2;
    pthread_mutex_unlock(&a->poll_mu);
    if (!changed) return;
    char summary[1600];
    eng_err err = {{0}};
    if (rpc_auth_reload(a, summary, sizeof summary, &err) == ENG_OK)
        rpc_log(RPC_LOG_INFO, "token files changed on disk: %s", summary);
    else
        rpc_log(RPC_LOG_ERROR, "token files changed on disk but cannot be read: %s (the "
                "previous tokens stay)", err.msg);
}

char *rpc_auth_metrics_render(const rpc_auth *a)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fputs("# HELP serval_token_requests_total Requests a token was let through (HTTP routes "
          "needing a token, gRPC calls but Health), by the token's name.\n"
          "# TYPE serval_token_requests_total counter\n", f);
    pthread_rwlock_rdlock((pthread_rwlock_t *)&a->lock);
    for (size_t i = 0; i < a->high; i++)
        if (a->slots[i].live)
            fprintf(f, "serval_token_requests_total{token=\"%s\"} %llu\n", a->slots[i].e.name,
                    atomic_load(&a->slots[i].requests));
    fputs("# HELP serval_token_refused_total Requests refused for a token: a scope it lacks "
          "(forbidden) or over its own rate (rate_limited).\n"
          "# TYPE serval_token_refused_total counter\n", f);
    for (size_t i = 0; i < a->high; i++)
        if (a->slots[i].live)
            fprintf(f, "serval_token_refused_total{token=\"%s\",reason=\"forbidden\"} %llu\n"
                       "serval_token_refused_total{token=\"%s\",reason=\"rate_limited\"} %llu\n",
                    a->slots[i].e.name, atomic_load(&a->slots[i].forbidden), a->slots[i].e.name,
                    atomic_load(&a->slots[i].rate_limited));
    pthread_rwlock_unlock((pthread_rwlock_t *)&a->lock);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
