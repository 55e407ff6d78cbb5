/* grpc_test_util.c — the gRPC tests' shared helpers (grpc_test_util.h). */
#include "grpc_test_util.h"

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdlib.h>

#include "health.pb-c.h"

uint8_t *gt_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

uint8_t *gt_pack_complete(const char *prompt, int max_tokens, size_t *len)
{
    Serval__V1__CompleteRequest rq = SERVAL__V1__COMPLETE_REQUEST__INIT;
    rq.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_PROMPT;
    rq.prompt = (char *)prompt;
    rq.max_tokens = max_tokens;
    rq.ignore_eos = true;
    return gt_pack(&rq.base, len);
}

grpc_status_code gt_grpc_health_check(rpc_client *cl, const char *service, int *serving)
{
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rq.service = (char *)service;
    size_t len = 0;
    uint8_t *req = gt_pack(&rq.base, &len);
    rpc_client_result res;
    grpc_status_code code = rpc_client_call(cl, "/grpc.health.v1.Health/Check", req, len, 5000,
                                            NULL, NULL, &res);
    free(req);
    *serving = -1;
    if (code == GRPC_STATUS_OK) {
        Grpc__Health__V1__HealthCheckResponse *r =
            grpc__health__v1__health_check_response__unpack(NULL, res.last_len, res.last);
        cr_assert_not_null(r, "Check answered OK without a HealthCheckResponse");
        *serving = (int)r->status;
        grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    }
    rpc_client_result_clear(&res);
    return code;
}

Serval__V1__HealthResponse *gt_health(rpc_client *cl)
{
    rpc_client_result res;
    uint8_t empty = 0;
    cr_assert_eq(rpc_client_call(cl, M_HEALTH, &empty, 0, 5000, NULL, NULL, &res), GRPC_STATUS_OK,
                 "Health: %s", res.details);
    Serval__V1__HealthResponse *h = serval__v1__health_response__unpack(NULL, res.last_len, res.last);
    rpc_client_result_clear(&res);
    cr_assert_not_null(h);
    return h;
}
