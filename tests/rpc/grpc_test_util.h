/* grpc_test_util.h — what the gRPC tests (test_grpc.c, test_grpc_limits.c) share: the method
 * paths, packing a request message, and Health through the C client. Failures fail the
 * test (Criterion). */
#ifndef SERVAL_GRPC_TEST_UTIL_H
#define SERVAL_GRPC_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "grpc_client.h"
#include "serval.pb-c.h"

#define M_COMPLETE "/serval.v1.Serval/Complete"
#define M_STREAM "/serval.v1.Serval/CompleteStream"
#define M_CHAT "/serval.v1.Serval/Chat"
#define M_HEALTH "/serval.v1.Serval/Health"

/* m packed into a malloc'd buffer (one spare byte, so a 0-byte message is not NULL). */
uint8_t *gt_pack(const ProtobufCMessage *m, size_t *len);

/* A CompleteRequest for prompt with max_tokens and ignore_eos, packed (the caller frees). */
uint8_t *gt_pack_complete(const char *prompt, int max_tokens, size_t *len);

/* Health over cl (with or without a token): the test fails unless it answers OK with a
 * HealthResponse; the caller frees it with serval__v1__health_response__free_unpacked. */
Serval__V1__HealthResponse *gt_health(rpc_client *cl);

/* gRPC's standard grpc.health.v1.Health/Check for `service` over cl: the call's status code,
 * and in *serving the response's status (1 SERVING, 2 NOT_SERVING; -1 without a response). */
grpc_status_code gt_grpc_health_check(rpc_client *cl, const char *service, int *serving);

#endif
