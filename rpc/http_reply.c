/* http_reply.c — the HTTP front end's responses: JSON, text, empty, SSE and error replies
 * (the server's shape, OpenAI's invalid_request_error with param, engine statuses), CORS
 * for allow-listed origins, the preflight and the draining answer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_impl.h"
#include "rpc_request.h"

/* Access-Control-Allow-Origin only for an origin on the allow-list (none by default). */
static void add_cors(http_req *r, struct MHD_Response *resp)
{
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (origin && http_origin_allowed(r->s, origin)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
}

enum MHD_Result http_queue(http_req *r, int status, struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    add_cors(r, resp);
    MHD_add_response_header(resp, "Server", "serval");
    /* The id of the log line "serval: req <n> http", and what the engine measured. */
    char v[160];
    rpc_request_id(v, sizeof v, "http", r->id);
    MHD_add_response_header(resp, "X-Request-Id", v);
    if (r->has_gen) {
        rpc_server_timing(v, sizeof v, &r->gen);
        MHD_add_response_header(resp, "Server-Timing", v);
    }
    r->status = status;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ok;
}

enum MHD_Result http_reply_text(http_req *r, int status, const char *ctype, const char *text,
                                size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(len ? text : ""), MHD_RESPMEM_MUST_COPY);
    if (resp && ctype)
        MHD_add_response_header(resp, "Content-Type", ctype);
    return http_queue(r, status, resp);
}

enum MHD_Result http_reply_empty(http_req *r, int status, const char *header, const char *value)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (resp && header)
        MHD_add_response_header(resp, header, value);
    return http_queue(r, status, resp);
}

/* A JSON reply with one extra header (NULL: none). */
static enum MHD_Result reply_json_h(http_req *r, int status, json_t *body, const char *header,
                                    const char *value)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(body);
    if (!s)
        return http_reply_text(r, 500, "text/plain", "out of memory\n", 14);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (header)
        MHD_add_response_header(resp, header, value);
    return http_queue(r, status, resp);
}

enum MHD_Result http_reply_json(http_req *r, int status, json_t *body)
{
    return reply_json_h(r, status, body, NULL, NULL);
}

/* {"error":{...}}: the server's shape (code = the status) or OpenAI's (param, code null).
 * A message quoting client bytes that are not UTF-8 (a path, a clipped quote) would make
 * jansson refuse it: then its unsafe bytes are escaped, so an error never turns into a 500. */
static json_t *error_json(int status, const char *type, const char *param, bool openai,
                          const char *msg)
{
    char safe[768 * 4 + 1];
    for (int attempt = 0; attempt < 2; attempt++) {
        json_t *j = openai ? json_pack("{s:{s:s,s:s,s:s?,s:n}}", "error", "message", msg, "type",
                                       type, "param", param, "code")
                           : json_pack("{s:{s:s,s:s,s:i}}", "error", "message", msg, "type",
                                       type, "code", status);
        if (j || attempt)
            return j;
        http_log_path(safe, sizeof safe, msg);
        msg = safe;
    }
    return NULL;
}

enum MHD_Result http_reply_error(http_req *r, int status, const char *type, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return http_reply_json(r, status, error_json(status, type, NULL, false, msg));
}

enum MHD_Result http_reply_retry(http_req *r, int status, const char *type, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply_json_h(r, status, error_json(status, type, NULL, false, msg), "Retry-After",
                        "1");
}

enum MHD_Result http_reply_retry_after(http_req *r, int status, int retry_s, const char *type,
                                       const char *fmt, ...)
{
    char msg[768], secs[16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(secs, sizeof secs, "%d", retry_s > 0 ? retry_s : 1);
    return reply_json_h(r, status, error_json(status, type, NULL, false, msg), "Retry-After",
                        secs);
}

enum MHD_Result http_reply_invalid(http_req *r, bool openai, const char *param, const char *fmt,
                                   ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!openai)
        return http_reply_error(r, 422, "invalid_request_error", "%s", msg);
    /* OpenAI's and vLLM's shape: the official clients raise BadRequestError from it. */
    return http_reply_json(r, 400, error_json(400, "invalid_request_error", param, true, msg));
}

enum MHD_Result http_reply_stream(http_req *r, MHD_ContentReaderCallback reader, void *cls,
                                  MHD_ContentReaderFreeCallback free_cb)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, reader, cls, free_cb);
    if (!resp) {
        free_cb(cls);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    return http_queue(r, 200, resp);
}

enum MHD_Result http_reply_eng_error(http_req *r, eng_status st, const char *msg)
{
    switch (st) {
    case ENG_ERR_OVERLOAD:
    case ENG_ERR_CANCELLED:
        return http_reply_retry(r, 503, "overloaded", "server overloaded: %s",
                                st == ENG_ERR_CANCELLED ? "shutting down"
                                                        : "request queue is full");
    case ENG_ERR_TOO_LONG:
        return http_reply_error(r, 400, "context_length_exceeded", "%s", msg);
    case ENG_ERR_INVALID:
        return http_reply_error(r, 422, "invalid_request_error", "%s", msg);
    case ENG_ERR_UNSUPPORTED:
        return http_reply_error(r, 501, "not_implemented", "%s", msg);
    default:
        return http_reply_error(r, 500, "server_error", "%s: %s", eng_status_str(st), msg);
    }
}

enum MHD_Result http_reply_preflight(http_req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (origin && http_origin_allowed(r->s, origin)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, Accept");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
    }
    return http_queue(r, 204, resp);
}

enum MHD_Result http_reply_draining(http_req *r)
{
    bool health = r->route == HTTP_ROUTE_V1_HEALTH || r->route == HTTP_ROUTE_HEALTH;
    const char *body = health ? "{\"status\":\"draining\"}"
                              : "{\"error\":{\"message\":\"server is shutting down: retry on "
                                "another instance\",\"type\":\"unavailable\",\"code\":503}}";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Connection", "close");
        MHD_add_response_header(resp, "Retry-After", "1");
    }
    return http_queue(r, 503, resp);
}
