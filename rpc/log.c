/* log.c — the server's log writer (see log.h): text or JSON lines on stderr, one fwrite per
 * line so lines from different threads never interleave. */
#include "log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Process-wide on purpose: one stderr, read by every thread, set by main() and SIGHUP. */
static atomic_int log_format = RPC_LOG_TEXT;
static atomic_int log_min = RPC_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void rpc_log_setup(rpc_log_format format, rpc_log_level min)
{
    atomic_store(&log_format, (int)format);
    atomic_store(&log_min, (int)min);
}

void rpc_log_set_level(rpc_log_level min) { atomic_store(&log_min, (int)min); }
rpc_log_level rpc_log_get_level(void) { return (rpc_log_level)atomic_load(&log_min); }
rpc_log_format rpc_log_get_format(void) { return (rpc_log_format)atomic_load(&log_format); }

int rpc_log_level_parse(const char *s, rpc_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, level_names[i])) {
            *out = (rpc_log_level)i;
            return 0;
        }
    return -1;
}

int rpc_log_format_parse(const char *s, rpc_log_format *out)
{
    if (s && !strcmp(s, "text")) return *out = RPC_LOG_TEXT, 0;
    if (s && !strcmp(s, "json")) return *out = RPC_LOG_JSON, 0;
    return -1;
}

const char *rpc_log_level_name(rpc_log_level l)
{
    return (unsigned)l < 4 ? level_names[l] : "info";
}

bool rpc_log_on(rpc_log_level l) { return (int)l >= atomic_load(&log_min); }

static void write_line(const char *s, size_t n)
{
    flockfile(stderr);
    fwrite(s, 1, n, stderr);
    fputc('\n', stderr);
    funlockfile(stderr);
}

/* {"time": "2026-12-06T01:02:03.456Z", "level": ..., "event": ...} */
static json_t *json_head(rpc_log_level l, const char *event)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char t[96];
    snprintf(t, sizeof t, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    return json_pack("{s:s,s:s,s:s}", "time", t, "level", rpc_log_level_name(l), "event", event);
}

static void emit_json(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6)) : NULL;
    if (s) write_line(s, strlen(s));
    free(s);
    json_decref(o);
}

void rpc_log(rpc_log_level l, const char *fmt, ...)
{
    if (!rpc_log_on(l)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    if (atomic_load(&log_format) == RPC_LOG_JSON) {
        json_t *o = json_head(l, "message");
        if (o) json_object_set_new(o, "msg", json_string(msg));
        emit_json(o);
        return;
    }
    char line[2100];
    int w = snprintf(line, sizeof line, "serval: %s", msg);
    write_line(line, w < (int)sizeof line ? (size_t)w : sizeof line - 1);
}

void rpc_log_event(rpc_log_level l, const char *event, const char *head, const rpc_log_kv *kv,
                   size_t n)
{
    if (!rpc_log_on(l)) return;
    if (atomic_load(&log_format) == RPC_LOG_JSON) {
        json_t *o = json_head(l, event);
        for (size_t i = 0; o && i < n; i++) {
            const rpc_log_kv *f = &kv[i];
            json_t *v = NULL;
            switch (f->type) {
            case 's': case 'S': v = f->s ? json_string(f->s) : NULL; break;
            case 'i': case 'I': v = json_integer(f->i); break;
            default: v = json_real(f->f); break;
            }
            if (v) json_object_set_new(o, f->key, v);
        }
        emit_json(o);
        return;
    }
    char line[4096];
    size_t at = (size_t)snprintf(line, sizeof line, "serval: %s", head ? head : event);
    for (size_t i = 0; i < n && at < sizeof line; i++) {
        const rpc_log_kv *f = &kv[i];
        int w = 0;
        size_t room = sizeof line - at;
        switch (f->type) {
        case 's':
            if (f->s) w = snprintf(line + at, room, strpbrk(f->s, " \"=") || !*f->s
                                   ? " %s=\"%s\"" : " %s=%s", f->key, f->s);
            break;
        case 'i': w = snprintf(line + at, room, " %s=%lld", f->key, f->i); break;
        case 'f': w = snprintf(line + at, room, " %s=%.1f", f->key, f->f); break;
        default: break; /* JSON only */
        }
        at += w > 0 ? (size_t)w : 0;
    }
    if (at >= sizeof line) at = sizeof line - 1;
    write_line(line, at);
}
