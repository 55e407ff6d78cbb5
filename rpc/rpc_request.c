/* rpc_request.c — the request rules shared by the gRPC and HTTP front ends (rpc_request.h). */
#include "rpc_request.h"

#include <stdio.h>

const char *rpc_stops_check(size_t n, char *msg, size_t cap)
{
    if (n <= RPC_MAX_CLIENT_STOPS)
        return NULL;
    snprintf(msg, cap, "stop: at most %d stop strings, got %zu", RPC_MAX_CLIENT_STOPS, n);
    return msg;
}

const char *rpc_bytes_check(const char *field, size_t len, size_t cap, char *msg, size_t msg_cap)
{
    if (len <= cap)
        return NULL;
    snprintf(msg, msg_cap, "%s is %zu bytes, over the server's limit of %zu bytes", field, len,
             cap);
    return msg;
}

size_t rpc_stops_merge(const prompt_result *pr, const char *const *client, size_t n_client,
                       const char **out)
{
    size_t n = 0;
    for (size_t i = 0; pr && i < pr->n_stops && i < RPC_MAX_PROMPT_STOPS; i++)
        out[n++] = pr->stops[i];
    for (size_t i = 0; i < n_client && i < RPC_MAX_CLIENT_STOPS; i++)
        out[n++] = client[i];
    return n;
}
