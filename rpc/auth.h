/* auth.h — the bearer-token store shared by the gRPC and HTTP front ends: tokens from a file
 * and/or flags, named tokens from <data_dir>/tokens (`serval token`), a generated token when
 * none is configured, constant-time checks, scopes, per-token rate limits, reloading without
 * a restart, and the per-identity prefix-cache salt.
 *
 * Identities: every token has a name ("alice" for a named token; "token:1", "token-file:2",
 * "SERVAL_TOKEN", "data-dir-token" for unnamed ones) and a slot, its identity, in
 * [0, RPC_AUTH_MAX_SLOTS). A slot keeps its token across reloads (same name, same slot); a
 * revoked token's slot is not given to a new token while unused slots remain. Logs, metrics
 * and events carry the name (rpc_auth_name), never the token.
 *
 * In memory and in <data_dir>/tokens tokens are kept only as HMAC-SHA-256 digests.
 *
 * Secrets: a token file (the --token-file one and <data_dir>/token) must not be readable or
 * writable by group or others unless the caller opts out; a generated token is handed back
 * once, when it is created, and never again (later starts only learn the file's path). */
#ifndef SERVAL_RPC_AUTH_H
#define SERVAL_RPC_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct rpc_auth rpc_auth;

/* Scopes: what a token may call. RPC_SCOPE_TOKEN is "any valid token" (routes every token may
 * use, such as /v1/models); the others are granted per token. Unnamed tokens (--token,
 * --token-file, $SERVAL_TOKEN, the generated one) hold every scope. */
enum {
    RPC_SCOPE_TOKEN = 1u << 0,
    RPC_SCOPE_COMPLETION = 1u << 1,
    RPC_SCOPE_CHAT = 1u << 2,
    RPC_SCOPE_EMBEDDINGS = 1u << 3, /* embeddings and search */
    RPC_SCOPE_ADMIN = 1u << 4,      /* /metrics, the status page, /v1/status */
    RPC_SCOPE_ALL = RPC_SCOPE_COMPLETION | RPC_SCOPE_CHAT | RPC_SCOPE_EMBEDDINGS | RPC_SCOPE_ADMIN,
    RPC_SCOPE_DEFAULT = RPC_SCOPE_COMPLETION | RPC_SCOPE_CHAT | RPC_SCOPE_EMBEDDINGS
};

#define RPC_AUTH_MAX_SLOTS 1024
#define RPC_TOKEN_NAME_MAX 64
#define RPC_TOKEN_STORE_MAX 1000

typedef struct rpc_auth_config {
    const char *const *tokens;  /* tokens given on the command line or environment (copied) */
    size_t n_tokens;
    const char *tokens_origin;  /* where `tokens` came from, for messages; NULL: "--token" */
    const char *token_file;     /* one token per line, '#' comments; NULL: none */
    const char *data_dir;       /* where a generated token is kept (<data_dir>/token) */
    bool no_auth;               /* explicit opt-out for local use: every request passes */
    bool allow_readable_token_file; /* accept token files group/others may read or write (a
                                     * mounted secret whose mode cannot be changed) */
    bool prefix_cache_per_token; /* rpc_auth_cache_salt gives each token its own salt */
} rpc_auth_config;

/* Builds the store. With no token from `tokens` or the file and no_auth false, reads
 * <data_dir>/token, or generates a random token there (mode 0600). *generated (may be NULL)
 * is set to the token's text (owned by the store) only when this call created it, so main()
 * prints it once; a token read back from <data_dir>/token is not reported again (see
 * rpc_auth_data_token_path). Errors: unreadable token file, a token file group or others may
 * read or write (ENG_ERR_INVALID, the message names the file and the chmod that fixes it)
 * unless allow_readable_token_file, empty/oversized/non-printable token, data_dir not
 * writable. On error *out is NULL and nothing is created except, possibly, data_dir. */
eng_status rpc_auth_create(const rpc_auth_config *cfg, rpc_auth **out, const char **generated,
                           eng_err *err);
void rpc_auth_free(rpc_auth *a);

/* Whether auth is off (no_auth). */
bool rpc_auth_disabled(const rpc_auth *a);

/* Which configured token an "Authorization" header or metadata value ("Bearer <token>",
 * scheme case-insensitive) carries: its index in [0, rpc_auth_n_tokens), the identity that
 * rate limits, per-token caps and per-token prefix caches key on (never the header's
 * spelling); RPC_AUTH_ANONYMOUS when auth is disabled; RPC_AUTH_NONE for NULL, malformed or
 * unknown values. Compares against every token in constant time per token. Thread-safe. */
enum { RPC_AUTH_NONE = -1, RPC_AUTH_ANONYMOUS = -2 };
int rpc_auth_match(const rpc_auth *a, const char *value, size_t len);

/* rpc_auth_match(...) != RPC_AUTH_NONE. Thread-safe. */
bool rpc_auth_check_header(const rpc_auth *a, const char *value, size_t len);

/* How many tokens are configured (0 with auth disabled). */
size_t rpc_auth_n_tokens(const rpc_auth *a);

/* The path of <data_dir>/token when the tokens came from there (generated now or earlier),
 * else NULL. Owned by the store. */
const char *rpc_auth_data_token_path(const rpc_auth *a);

/* The prefix-cache salt for an identity from rpc_auth_match: 0 (one cache shared by everyone)
 * unless prefix_cache_per_token was set and the identity is a configured token; then a value
 * unique to that token (index + 1), so requests of different tokens never share cached
 * prompt blocks and one user cannot learn from cache timing what another sent. Thread-safe. */
uint64_t rpc_auth_cache_salt(const rpc_auth *a, int identity);

/* How many identity slots per-token arrays need (RPC_AUTH_MAX_SLOTS): identities stay below. */
size_t rpc_auth_n_slots(const rpc_auth *a);

/* The name of an identity into buf (cap >= RPC_TOKEN_NAME_MAX + 1): the token's name,
 * "anonymous" with auth off, "-" for RPC_AUTH_NONE or a slot no longer configured. Returns
 * buf. Thread-safe (a reload may rename nothing: names are what slots are keyed on). */
const char *rpc_auth_name(const rpc_auth *a, int identity, char *buf, size_t cap);

/* Whether an identity may call what needs `scope` (RPC_SCOPE_*; 0 is open to everyone).
 * With auth off everything is allowed; RPC_AUTH_NONE is allowed only open things. */
bool rpc_auth_allows(const rpc_auth *a, int identity, unsigned scope);

/* The token's own rate limit (requests per minute): true when this request may go on (a
 * token with no own limit always may: the server's limits apply). When refused,
 * *retry_after_s is how long until one more request would pass (>= 1). Thread-safe. */
bool rpc_auth_rate_take(const rpc_auth *a, int identity, double now_ms, int *retry_after_s);
/* Whether the identity has its own rate limit. */
bool rpc_auth_has_rate(const rpc_auth *a, int identity);

/* Reads the token file, <data_dir>/tokens (and <data_dir>/token when it was used at start)
 * again and swaps the new set in: tokens still configured keep their slot, removed ones stop
 * working at once (the last one too: then every request is refused), new ones start
 * working. On error (an unreadable or malformed file) nothing changes (the old set stays).
 * summary (may be NULL) gets "tokens: 1 added (bob), 1 removed (carol), 3 unchanged".
 * Thread-safe against rpc_auth_match. */
eng_status rpc_auth_reload(rpc_auth *a, char *summary, size_t cap, eng_err *err);

/* Reloads when <data_dir>/tokens or the token file changed on disk (inode, size or mtime),
 * looking at most once per second; a failed reload is reported once per change on stderr and
 * the old tokens stay. Called from rpc_auth_match, so a running server picks up `serval token
 * create/revoke` within a second without a signal. */
void rpc_auth_poll(rpc_auth *a);

/* Prometheus text, per token name: serval_token_requests_total{token} and
 * serval_token_refused_total{token,reason="forbidden"|"rate_limited"} (malloc'd, caller
 * frees; NULL when out of memory). Names only: a token never appears. */
char *rpc_auth_metrics_render(const rpc_auth *a);

/* ---- the named-token store, <data_dir>/tokens (auth_store.c) ------------------------------ */

typedef struct rpc_token_entry {
    char name[RPC_TOKEN_NAME_MAX + 1];
    uint8_t hash[32];        /* HMAC-SHA-256(store salt, token) */
    unsigned scopes;         /* RPC_SCOPE_* bits */
    long rate_per_min;       /* 0: no own limit */
    long long created;       /* Unix seconds */
} rpc_token_entry;

typedef struct rpc_token_store {
    uint8_t salt[32];
    bool has_salt;
    rpc_token_entry *items;  /* owned */
    size_t n;
} rpc_token_store;

/* Reads a store; a missing file is an empty store (no salt). Errors name the file and line;
 * a store others may read or write is refused unless allow_readable. */
eng_status rpc_token_store_read(const char *path, bool allow_readable, rpc_token_store *out,
                                eng_err *err);
/* Writes the store to path.tmp.PID (mode 0600), fsyncs and renames it over path. */
eng_status rpc_token_store_write(const char *path, const rpc_token_store *s, eng_err *err);
eng_status rpc_token_store_add(rpc_token_store *s, const rpc_token_entry *e, eng_err *err);
void rpc_token_store_clear(rpc_token_store *s);
/* "completion,chat" -> bits ("all" is every scope); an unknown name is an error. */
eng_status rpc_scopes_parse(const char *list, unsigned *out, eng_err *err);
void rpc_scopes_format(unsigned scopes, char *buf, size_t cap);
/* 1..64 of [A-Za-z0-9-_.@]. */
bool rpc_token_name_ok(const char *name);

#endif
