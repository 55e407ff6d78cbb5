/* fuzz_grpc_msg.c — libFuzzer target: the gRPC request decoders. Every request message of
 * proto/serval.proto is unpacked from the same bytes with protobuf-c (what grpc_server.c does
 * with a received message before gs_handle), then what a handler checks first that lives
 * outside the call machinery: the stop-string limit (rpc_stops_check) and the engine's
 * sampling policy (eng_sampler_params_check, mapped as grpc_handlers.c maps SamplingParams).
 * Must never crash, leak or read out of bounds; a decoded message must re-encode stably
 * (pack(unpack(pack(m))) == pack(m)), and the sampling check must only accept values in its
 * documented ranges. gs_handle itself needs a live gs_call (grpc_server.c) and is not reached. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_request.h"
#include "serval.pb-c.h"
#include "serval_engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_grpc_msg: %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

#define FUZZ_N_VOCAB 49152 /* the default model's vocabulary; any positive size would do */

/* true when m or a message inside it kept unknown fields: protobuf-c keeps them as raw bytes
 * and accepts tags a re-parse rejects (field number 0 in an over-long varint), so the
 * round-trip check below only applies to messages without them. */
static bool has_unknown(const ProtobufCMessage *m)
{
    if (!m)
        return false;
    if (m->n_unknown_fields)
        return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        /* a oneof member shares its storage with the others: only the chosen one is there */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        const char *base = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)base;
            for (size_t k = 0; k < n; k++)
                if (has_unknown(v[k]))
                    return true;
        } else if (has_unknown(*(const ProtobufCMessage *const *)base)) {
            return true;
        }
    }
    return false;
}

/* Re-encodes m, decodes that, re-encodes again: both encodings must be the same bytes. */
static void check_repack(const ProtobufCMessage *m)
{
    if (has_unknown(m))
        return;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *a = malloc(n ? n : 1);
    FUZZ_CHECK(a);
    FUZZ_CHECK(protobuf_c_message_pack(m, a) == n);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(m->descriptor, NULL, n, a);
    FUZZ_CHECK(m2 != NULL);
    size_t n2 = protobuf_c_message_get_packed_size(m2);
    FUZZ_CHECK(n2 == n);
    uint8_t *b = malloc(n2 ? n2 : 1);
    FUZZ_CHECK(b);
    FUZZ_CHECK(protobuf_c_message_pack(m2, b) == n2);
    FUZZ_CHECK(memcmp(a, b, n) == 0);
    free(b);
    free(a);
    protobuf_c_message_free_unpacked(m2, NULL);
}

/* The handlers' mapping (grpc_handlers.c): top_p 0 means off (1). Accepted values must be in
 * the ranges serval_engine.h documents. */
static void check_sampling(const Serval__V1__SamplingParams *sp)
{
    eng_sampler_params p = eng_sampler_defaults();
    if (sp) {
        p.temperature = sp->temperature;
        p.top_k = sp->top_k;
        p.top_p = sp->top_p == 0.0f ? 1.0f : sp->top_p;
        p.seed = sp->seed;
    }
    eng_err err = {{0}};
    if (eng_sampler_params_check(&p, FUZZ_N_VOCAB, &err) == ENG_OK) {
        FUZZ_CHECK(p.temperature >= 0.0f && p.temperature <= 100.0f);
        FUZZ_CHECK(p.top_k >= 0 && p.top_k <= FUZZ_N_VOCAB);
        FUZZ_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f);
    } else {
        FUZZ_CHECK(err.msg[0] != '\0');
    }
}

static void check_stops(size_t n)
{
    char msg[256];
    const char *e = rpc_stops_check(n, msg, sizeof msg);
    FUZZ_CHECK((e == NULL) == (n <= RPC_MAX_CLIENT_STOPS));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessageDescriptor *const descs[] = {
        &serval__v1__complete_request__descriptor, &serval__v1__chat_request__descriptor,
        &serval__v1__embed_request__descriptor,    &serval__v1__search_request__descriptor,
        &serval__v1__health_request__descriptor,   &serval__v1__list_models_request__descriptor,
        &serval__v1__segments__descriptor,         &serval__v1__sampling_params__descriptor,
    };
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++) {
        ProtobufCMessage *m = protobuf_c_message_unpack(descs[i], NULL, size, data);
        if (!m)
            continue;
        check_repack(m);
        if (descs[i] == &serval__v1__complete_request__descriptor) {
            Serval__V1__CompleteRequest *r = (Serval__V1__CompleteRequest *)m;
            check_sampling(r->sampling);
            check_stops(r->n_stop);
            if (r->input_case == SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS)
                FUZZ_CHECK(r->segments != NULL);
            for (size_t k = 0; k < r->n_stop; k++)
                FUZZ_CHECK(r->stop[k] != NULL);
        } else if (descs[i] == &serval__v1__chat_request__descriptor) {
            Serval__V1__ChatRequest *r = (Serval__V1__ChatRequest *)m;
            check_sampling(r->sampling);
            check_stops(r->n_stop);
            for (size_t k = 0; k < r->n_messages; k++)
                FUZZ_CHECK(r->messages[k] && r->messages[k]->role && r->messages[k]->content);
        } else if (descs[i] == &serval__v1__embed_request__descriptor) {
            Serval__V1__EmbedRequest *r = (Serval__V1__EmbedRequest *)m;
            for (size_t k = 0; k < r->n_inputs; k++)
                FUZZ_CHECK(r->inputs[k] != NULL);
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}
