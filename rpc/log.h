/* log.h — the one place the server writes its log: free-text messages and structured events
 * (a request, the start-up summary, a reload), as text ("serval: ..." lines, the historical
 * format) or as JSON (one object per line: time, level, event, then the event's fields), with
 * a minimum level. Process-wide: there is one stderr. Thread-safe; a line is written whole. */
#ifndef SERVAL_RPC_LOG_H
#define SERVAL_RPC_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum rpc_log_level {
    RPC_LOG_DEBUG = 0,
    RPC_LOG_INFO,
    RPC_LOG_WARN,
    RPC_LOG_ERROR
} rpc_log_level;

typedef enum rpc_log_format { RPC_LOG_TEXT = 0, RPC_LOG_JSON } rpc_log_format;

/* One field of an event. Types: 's' string, 'i' integer, 'f' number; upper case ('S', 'I',
 * 'F'): only in JSON (the text line says it in its head already). A NULL string is skipped. */
typedef struct rpc_log_kv {
    const char *key;
    char type;
    const char *s;
    long long i;
    double f;
} rpc_log_kv;

#define RPC_LOG_STR(k, v) ((rpc_log_kv){.key = (k), .type = 's', .s = (v)})
#define RPC_LOG_INT(k, v) ((rpc_log_kv){.key = (k), .type = 'i', .i = (long long)(v)})
#define RPC_LOG_NUM(k, v) ((rpc_log_kv){.key = (k), .type = 'f', .f = (double)(v)})
#define RPC_LOG_JSTR(k, v) ((rpc_log_kv){.key = (k), .type = 'S', .s = (v)})
#define RPC_LOG_JINT(k, v) ((rpc_log_kv){.key = (k), .type = 'I', .i = (long long)(v)})

/* Format and minimum level (defaults: text, info). Call before threads start, or any time
 * for the level alone (SIGHUP). */
void rpc_log_setup(rpc_log_format format, rpc_log_level min);
void rpc_log_set_level(rpc_log_level min);
rpc_log_level rpc_log_get_level(void);
rpc_log_format rpc_log_get_format(void);
/* "debug|info|warn|error" / "text|json": 0, or -1 for anything else. */
int rpc_log_level_parse(const char *s, rpc_log_level *out);
int rpc_log_format_parse(const char *s, rpc_log_format *out);
const char *rpc_log_level_name(rpc_log_level l);
/* Whether a message at this level is written. */
bool rpc_log_on(rpc_log_level l);

/* A free-text message: "serval: <text>" or {"time","level","event":"message","msg"}. */
void rpc_log(rpc_log_level l, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* A structured event: text "serval: <head> key=value ..." (head may be NULL: the event's
 * name), JSON {"time","level","event":event, fields...}. */
void rpc_log_event(rpc_log_level l, const char *event, const char *head, const rpc_log_kv *kv,
                   size_t n);

#endif
