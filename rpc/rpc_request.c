/* rpc_request.c — the request rules shared by the gRPC and HTTP front ends (rpc_request.h). */
#include "rpc_request.h"

#include <stdbool.h>
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

void rpc_request_id(char *buf, size_t cap, const char *front, unsigned long long n)
{
    snprintf(buf, cap, "%s-%llu", front, n);
}

void rpc_server_timing(char *buf, size_t cap, const eng_request_output *o)
{
    int n = snprintf(buf, cap, "queue;dur=%.1f", o->queue_ms);
    if (n > 0 && (size_t)n < cap && o->first_token_ms > 0)
        n += snprintf(buf + n, cap - (size_t)n, ", ttft;dur=%.1f", o->first_token_ms);
    if (n > 0 && (size_t)n < cap && o->total_ms > 0)
        snprintf(buf + n, cap - (size_t)n, ", total;dur=%.1f", o->total_ms);
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t rpc_session_key(int identity, const char *const *parts, const size_t *lens, size_t n)
{
    bool any = false;
    int32_t id = identity < 0 ? -1 : identity;
    uint64_t h = fnv1a(0xcbf29ce484222325ull, &id, sizeof id);
    for (size_t i = 0; i < n; i++) {
        uint64_t len = parts[i] ? (uint64_t)lens[i] : 0;
        any |= len > 0;
        h = fnv1a(h, &len, sizeof len);
        if (len)
            h = fnv1a(h, parts[i], lens[i]);
    }
    return !any ? 0 : h ? h : 1;
}
