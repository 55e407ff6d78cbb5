/* auth.h — the bearer-token store shared by the gRPC and HTTP front ends: tokens from a file
 * and/or flags, a generated token when none is configured, constant-time checks, and the
 * per-identity prefix-cache salt.
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

#endif
