/* rpc_request.h — request rules the gRPC and HTTP front ends must agree on and that are not
 * the engine's to make: a code completion's default length, how many stop strings a client
 * may send, how the client's stops join the prompt's, and the input size caps checked before
 * tokenizing. Sampling limits are the engine's
 * (eng_sampler_params_check), prompt rendering the prompt builder's (prompt.h). */
#ifndef SERVAL_RPC_REQUEST_H
#define SERVAL_RPC_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "prompt.h"
#include "serval_engine.h"

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

/* The id a response carries (HTTP X-Request-Id, gRPC x-request-id metadata) so a client's
 * records join the server's log: "<front>-<n>" for the log line "serval: req <n> <front> ..."
 * (front "http" or "grpc"; n counts per front end from 1). Writes at most cap bytes. */
void rpc_request_id(char *buf, size_t cap, const char *front, unsigned long long n);

/* A generation's server timings in the Server-Timing header's syntax, ms:
 * "queue;dur=0.4, ttft;dur=31.2, total;dur=80.9" (queue: submit to first scheduled; ttft:
 * submit to first token; total: submit to done); ttft and total are left out while unknown
 * (0). HTTP's Server-Timing header and gRPC's x-serval-timings trailer say the same. */
void rpc_server_timing(char *buf, size_t cap, const eng_request_output *o);

/* A request's session key for the engine's supersede (eng_request_params.session_key): a
 * 64-bit hash (FNV-1a) of the caller's identity (rpc_auth_match's index, or any negative value
 * for a server without tokens) and the n strings parts[i] (lens[i] bytes; NULL for none), each
 * hashed with its length, so ("ab", "c") and ("a", "bc") differ and requests of two tokens
 * never share a key. 0 (no key: nothing is superseded) when every part is NULL or empty.
 * Tabby's completions: parts = {user, segments.filepath, segments.git_url}, filepath required
 * (one editor's file: tabby-agent's requests for it supersede each other); an explicit key
 * (HTTP "session_key" or X-Serval-Session, gRPC session_key) is one part on its own. */
uint64_t rpc_session_key(int identity, const char *const *parts, const size_t *lens, size_t n);

/* Longest explicit session key a client may send, in bytes. */
#define RPC_MAX_SESSION_KEY_BYTES 1024

#endif
