/* http_events.c — Tabby's POST /v1/events: keeps the fields Tabby's agent sends (type,
 * completion_id, choice_index, view_id, elapsed, select_kind) and the sender's token name as
 * one flat JSON line in
 * <data_dir>/events/YYYY-MM-DD.jsonl, under a byte cap per day. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http_impl.h"
#include "log.h"

/* The fields stored; anything else a client sends is dropped. Values must be scalars, so the
 * stored line is flat whatever arrives. */
static const char *const known_fields[] = {"type", "completion_id", "choice_index", "view_id",
                                           "elapsed", "select_kind"};

static bool write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

/* Appends line (with its newline) to today's file unless that passes the daily cap.
 * Returns 0, or the HTTP status to answer. */
static int append_line(http_server *s, const char *text, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char dir[4096], path[4160];
    snprintf(dir, sizeof dir, "%s/events", s->data_dir);
    snprintf(path, sizeof path, "%s/%04d-%02d-%02d.jsonl", dir, tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday);
    int status = 500;
    pthread_mutex_lock(&s->events_mu);
    mkdir(s->data_dir, 0700);
    mkdir(dir, 0700);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        if ((size_t)st.st_size + len + 1 > s->cfg.events_max_bytes_per_day)
            status = 429;
        else if (write_all(fd, text, len) && write_all(fd, "\n", 1))
            status = 0;
    }
    if (status == 500) /* the operator's log says where; the client learns nothing of paths */
        rpc_log(RPC_LOG_ERROR, "cannot append an event to %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    pthread_mutex_unlock(&s->events_mu);
    return status;
}

enum MHD_Result http_route_events(http_req *r, json_t *req)
{
    http_server *s = r->s;
    json_t *ev = json_object();
    for (size_t i = 0; ev && i < sizeof known_fields / sizeof known_fields[0]; i++) {
        json_t *v = json_object_get(req, known_fields[i]);
        if (v && (json_is_string(v) || json_is_number(v) || json_is_boolean(v)))
            json_object_set(ev, known_fields[i], v);
    }
    const char *sk = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "select_kind");
    if (ev && sk && !json_object_get(ev, "select_kind"))
        json_object_set_new(ev, "select_kind", json_string(sk));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* "user": the token's name (never the token), for the status page's usage per user. */
    json_t *line = ev ? json_pack("{s:I,s:o,s:s}", "ts",
                                  (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, "event", ev,
                                  "user", r->who)
                      : NULL;
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (!text)
        return http_reply_error(r, 500, "server_error", "out of memory");
    int status = append_line(s, text, strlen(text));
    free(text);
    if (status == 429)
        return http_reply_retry(r, 429, "rate_limited",
                                "today's event log is full (%zu bytes); events resume tomorrow",
                                s->cfg.events_max_bytes_per_day);
    if (status)
        return http_reply_error(r, 500, "server_error", "cannot record the event");
    return http_reply_text(r, 200, "application/json", "", 0);
}
