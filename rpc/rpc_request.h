/* rpc_request.h — request rules the gRPC and HTTP front ends must agree on and that are not
 * the engine's to make: a code completion's default length, how many stop strings a client
 * may send, how the client's stops join the prompt's, and the input size caps checked before
 * tokenizing. Sampling limits are the engine's
 * (eng_sampler_params_check), prompt rendering the prompt builder's (prompt.h). */
#ifndef SERVAL_RPC_REQUEST_H
#define SERVAL_RPC_REQUEST_H

#include <stddef.h>

#include "prompt.h"

/* Tokens a code completion generates when the request does not say (gRPC Complete, Tabby's
 * /v1/completions). The OpenAI and llama.cpp shapes keep their own APIs' documented defaults. */
#define RPC_DEFAULT_COMPLETION_TOKENS 64

/* Stop strings one request may carry (gRPC's `stop`, HTTP's "stop"). */
#define RPC_MAX_CLIENT_STOPS 16
/* The prompt's stop words kept at most; with the client's they fill an array of RPC_MAX_STOPS. */
#define RPC_MAX_PROMPT_STOPS 32
#define RPC_MAX_STOPS (RPC_MAX_PROMPT_STOPS + RPC_MAX_CLIENT_STOPS)

/* Input caps both front ends apply before any tokenizing, so a huge request is refused for
 * the cost of a length check (the message-size limit bounds the rest). The text meant for the
 * model (a raw prompt; a completion's prefix + suffix; a chat's contents together) is capped by
 * the engine's eng_engine_max_text_bytes (gRPC RESOURCE_EXHAUSTED, HTTP 413); here:
 *   RPC_MAX_SNIPPET_BYTES  one snippet's or declaration's body. More: refused likewise.
 *   RPC_MAX_SNIPPETS       snippets per list (declarations, snippets, changed, recent); the
 *                          ones past it are dropped, as Tabby's server does.
 *   RPC_MAX_CHAT_MESSAGES  messages in one chat; more: refused (INVALID_ARGUMENT, HTTP 400). */
#define RPC_MAX_SNIPPET_BYTES ((size_t)64 << 10)
#define RPC_MAX_SNIPPETS 32
#define RPC_MAX_CHAT_MESSAGES 256

/* NULL when len bytes of `field` fit under cap, else a message naming the field and both
 * sizes, written to msg (msg_cap bytes) and returned. */
const char *rpc_bytes_check(const char *field, size_t len, size_t cap, char *msg, size_t msg_cap);

/* NULL when n client stop strings are allowed, else a message naming the limit, written to
 * msg (cap bytes) and returned. */
const char *rpc_stops_check(size_t n, char *msg, size_t cap);

/* Fills out[] (RPC_MAX_STOPS entries) with the prompt's stop words (pr may be NULL; past
 * RPC_MAX_PROMPT_STOPS they are dropped) followed by the client's n_client strings (at most
 * RPC_MAX_CLIENT_STOPS: checked with rpc_stops_check first). Returns how many; the strings
 * stay owned by pr and the caller. */
size_t rpc_stops_merge(const prompt_result *pr, const char *const *client, size_t n_client,
                       const char **out);

#endif
