/* grpc_handlers.h — private to the gRPC server: the seam between the call machinery
 * (grpc_server.c: completion queue, sends, engine output) and the per-RPC handlers
 * (grpc_handlers.c: parse, validate, render prompts, answer). */
#ifndef SERVAL_RPC_GRPC_HANDLERS_H
#define SERVAL_RPC_GRPC_HANDLERS_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "prompt.h"
#include "serval_engine.h"
#include "serval_router.h"
#include "serval_index.h"

typedef enum gs_method {
    GS_M_UNKNOWN = 0,
    GS_M_COMPLETE,
    GS_M_COMPLETE_STREAM,
    GS_M_CHAT,
    GS_M_EMBED,
    GS_M_SEARCH,
    GS_M_HEALTH,
    GS_M_LIST_MODELS,
    GS_M_GRPC_HEALTH  /* grpc.health.v1.Health/Check (proto/health.proto) */
} gs_method;

/* The health methods (serval.v1 Health, grpc.health.v1 Check): open to every caller, never
 * counted in flight, answered while draining. */
bool gs_method_is_health(gs_method m);

/* What handlers may read about the server (all borrowed, live as long as the server). */
typedef struct gs_context {
    eng_engine *engine;      /* replica 0: the model and limits every replica shares */
    eng_router *router;      /* where calls are submitted and load is read */
    const eng_model *model;
    const rpc_auth *auth;
    const prompt_builder *prompts;
    const char *model_id;
    const char *backend;
    int32_t context_length;
    struct eng_embedder *embedder; /* NULL: Embed answers UNIMPLEMENTED */
    idx_index *index;   /* Search and completion retrieval; NULL: none */
    bool retrieval;     /* completions get retrieved snippets (an index and no --no-retrieval) */
} gs_context;

typedef struct gs_call gs_call;

/* "/serval.v1.Serval/Complete" -> GS_M_COMPLETE; unknown paths -> GS_M_UNKNOWN. */
gs_method gs_method_lookup(grpc_slice path);

/* Handles one request message (bytes borrowed for the call). Ends by exactly one of
 * gs_call_finish or gs_call_submit. Runs without the call's lock: on a worker thread for
 * Complete, CompleteStream and Chat (parsing and tokenizing never hold up the pollers), on a
 * poller for the cheap methods. */
void gs_handle(gs_call *c, gs_method m, const uint8_t *data, size_t len);

/* ---- provided by grpc_server.c / grpc_lifecycle.c (take the call's lock themselves) ---- */

const gs_context *gs_call_context(const gs_call *c);
uint64_t gs_call_id(const gs_call *c);
/* Whether the call carried a valid bearer token (always, with auth off). */
bool gs_call_authorized(const gs_call *c);
bool gs_draining(const gs_call *c);
int gs_inflight(const gs_call *c);
/* Sends the message (NULL: none) and the final status (nothing when the call already ended). */
void gs_call_finish(gs_call *c, const ProtobufCMessage *m, grpc_status_code code,
                    const char *details);
/* Submits to the engine (notify fields are set here; prompt and stops are copied by the
 * engine; text is tokenized here, on the calling thread) and streams its output: CompletionChunk messages for CompleteStream/Chat, one
 * CompleteResponse for Complete; crlf: turn the output's "\n" into "\r\n". Engine errors
 * become the matching status. */
void gs_call_submit(gs_call *c, eng_request_params *p, bool crlf);

#endif
