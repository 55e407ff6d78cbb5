/* service.c — indexing in the background of a server: one thread indexes the configured
 * repositories at start, then again every interval (only changed files are embedded), while
 * searches are answered from what is already committed. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idx_impl.h"

struct idx_service {
    idx_index *ix;
    idx_repo_spec *repos;
    size_t n_repos;
    int interval_s;
    idx_log_fn log;
    void *log_user;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    volatile bool stop;
    int64_t runs_done; /* under mu */
};

static void say(idx_service *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(idx_service *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->log)
        s->log(s->log_user, line);
    else
        fprintf(stderr, "serval: %s\n", line);
}

static void *service_main(void *p)
{
    idx_service *s = p;
    for (int64_t round = 0; !s->stop; round++) {
        for (size_t i = 0; i < s->n_repos && !s->stop; i++) {
            idx_stats st;
            eng_err err = {{0}};
            eng_status rc = idx_index_repo(s->ix, s->repos[i].path, s->repos[i].git_url, NULL,
                                           NULL, &s->stop, &st, &err);
            if (rc == ENG_ERR_CANCELLED)
                break;
            if (rc != ENG_OK)
                say(s, "index %s: %s", s->repos[i].path, err.msg);
            else if (round == 0 || st.chunks_embedded || st.files_deleted)
                say(s, "index %s (%s): %lld files, %lld chunks (%lld embedded, %lld files "
                       "deleted), skipped %lld vendored, %lld generated, %lld binary, %lld huge, "
                       "%.1f s", s->repos[i].path, s->repos[i].git_url ? s->repos[i].git_url : "its path",
                    (long long)st.files_indexed, (long long)st.chunks_total,
                    (long long)st.chunks_embedded, (long long)st.files_deleted,
                    (long long)st.skipped_vendored, (long long)st.skipped_generated,
                    (long long)st.skipped_binary, (long long)st.skipped_huge, st.seconds);
        }
        pthread_mutex_lock(&s->mu);
        s->runs_done++;
        pthread_cond_broadcast(&s->cv);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += s->interval_s;
        while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0)
            ;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

eng_status idx_service_start(idx_index *ix, const idx_repo_spec *repos, size_t n,
                             int interval_s, idx_log_fn log, void *log_user, idx_service **out,
                             eng_err *err)
{
    *out = NULL;
    if (interval_s < 1)
        return eng_fail(err, ENG_ERR_INVALID, "the re-index interval must be at least 1 s");
    idx_service *s = calloc(1, sizeof *s);
    if (!s || !(s->repos = calloc(n ? n : 1, sizeof *s->repos)))
        goto oom;
    for (size_t i = 0; i < n; i++) {
        s->repos[i].path = strdup(repos[i].path);
        s->repos[i].git_url = repos[i].git_url ? strdup(repos[i].git_url) : NULL;
        s->n_repos++;
        if (!s->repos[i].path || (repos[i].git_url && !s->repos[i].git_url))
            goto oom;
    }
    s->ix = ix, s->interval_s = interval_s, s->log = log, s->log_user = log_user;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, service_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        s->thread = 0;
        idx_service_stop(s);
        return eng_fail(err, ENG_ERR_NOMEM, "cannot start the indexing thread");
    }
    *out = s;
    return ENG_OK;
oom:
    idx_service_stop(s);
    return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
}

bool idx_service_wait_first(idx_service *s, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->mu);
    while (s->runs_done == 0 && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0)
        ;
    bool done = s->runs_done > 0;
    pthread_mutex_unlock(&s->mu);
    return done;
}

void idx_service_stop(idx_service *s)
{
    if (!s)
        return;
    if (s->thread) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
    }
    for (size_t i = 0; s->repos && i < s->n_repos; i++)
        free((char *)s->repos[i].path), free((char *)s->repos[i].git_url);
    free(s->repos);
    free(s);
}
