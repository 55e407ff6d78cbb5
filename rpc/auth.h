/* auth.h — the bearer-token store shared by the gRPC and HTTP front ends: tokens from a file
 * and/or flags, a generated token when none is configured, constant-time checks. */
#ifndef SERVAL_RPC_AUTH_H
#define SERVAL_RPC_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

typedef struct rpc_auth rpc_auth;

typedef struct rpc_auth_config {
    const char *const *tokens;  /* tokens given on the command line (copied) */
    size_t n_tokens;
    const char *token_file;     /* one token per line, '#' comments; NULL: none */
    const char *data_dir;       /* where a generated token is kept (<data_dir>/token) */
    bool no_auth;               /* explicit opt-out for local use: every request passes */
} rpc_auth_config;

/* Builds the store. With no token from flags or file and no_auth false, reads
 * <data_dir>/token, or generates a random token there (mode 0600) and sets *generated to
 * that token's text (owned by the store) so main() can print it; otherwise *generated = NULL.
 * Errors: unreadable token file, empty/oversized/non-printable token, data_dir not writable. */
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

#endif
