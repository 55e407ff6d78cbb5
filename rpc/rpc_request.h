/* rpc_request.h — request rules the gRPC and HTTP front ends must agree on and that are not
 * the engine's to make: a code completion's default length, how many stop strings a client
 * may send, and how the client's stops join the prompt's. Sampling limits are the engine's
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
