/* grpc_lifecycle.c — the gRPC server's start (channel-level limits: streams per connection,
 * keepalive enforcement, connection idle/age; TLS), its watchdog (request-message and
 * generation timeouts), and drain, abort and stop. */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "grpc_impl.h"
#include "tls_pem.h"
#include "prompt.h"

bool gs_draining(const gs_call *c) { return atomic_load(&c->s->draining); }

int gs_inflight(const gs_call *c) { return atomic_load(&c->s->inflight); }

/* ---- watchdog ----------------------------------------------------------------------------- */

void gs_watchdog(rpc_grpc_server *s)
{
    int msg_ms = s->cfg.request_message_timeout_ms, gen_ms = atomic_load(&s->gen_timeout_ms);
    if ((msg_ms <= 0 && gen_ms <= 0) || atomic_load(&s->aborted)) return;
    size_t n;
    gs_call **v = gs_live_calls(s, &n);
    double now = eng_clock_ms();
    for (size_t i = 0; i < n; i++) {
        gs_call *c = v[i];
        int ph = atomic_load(&c->phase);
        if (ph == GS_PHASE_WAIT_MSG && msg_ms > 0 && now - c->t_start > msg_ms) {
            int expect = GS_PHASE_WAIT_MSG;
            if (atomic_compare_exchange_strong(&c->phase, &expect, GS_PHASE_TIMED_OUT)) {
                char d[128];
                snprintf(d, sizeof d, "no request message within %d ms of the call's start",
                         msg_ms);
                grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, d, NULL);
            }
        } else if (ph == GS_PHASE_GENERATING && gen_ms > 0 && now - c->t_gen > gen_ms) {
            int expect = GS_PHASE_GENERATING;
            if (atomic_compare_exchange_strong(&c->phase, &expect, GS_PHASE_TIMED_OUT))
                gs_call_gen_timeout(c);
        }
        gs_call_unref(c);
    }
    free(v);
}

/* ---- start -------------------------------------------------------------------------------- */

/* Plaintext, or TLS with the configured certificate and key. NULL on error (err set). */
static grpc_server_credentials *server_credentials(const rpc_grpc_config *cfg, eng_err *err)
{
    if (!cfg->tls_cert_file && !cfg->tls_key_file) return grpc_insecure_server_credentials_create();
    if (!cfg->tls_cert_file || !cfg->tls_key_file) {
        eng_fail(err, ENG_ERR_INVALID, "gRPC TLS needs both a certificate and a key file");
        return NULL;
    }
    char *cert = rpc_read_pem("gRPC", "certificate", cfg->tls_cert_file, "-----BEGIN CERTIFICATE-----", err);
    if (!cert) return NULL;
    char *key = rpc_read_pem("gRPC", "key", cfg->tls_key_file, "PRIVATE KEY-----", err);
    if (!key) {
        free(cert);
        return NULL;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    grpc_server_credentials *creds = grpc_ssl_server_credentials_create(NULL, &pair, 1, 0, NULL);
    free(key);
    free(cert);
    if (!creds) eng_fail(err, ENG_ERR_FORMAT, "gRPC TLS: the certificate or key is invalid");
    return creds;
}

static int with_default(int v, int def) { return v == 0 ? def : v; }

static grpc_arg int_arg(const char *key, int64_t v)
{
    grpc_arg a;
    memset(&a, 0, sizeof a);
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)key;
    a.value.integer = v > INT32_MAX ? INT32_MAX : (int)v;
    return a;
}

/* The config with its defaults filled in. */
static void config_defaults(rpc_grpc_config *c)
{
    if (!c->bind) c->bind = "127.0.0.1";
    if (c->n_pollers <= 0) c->n_pollers = 2;
    if (c->max_inflight <= 0) c->max_inflight = 512;
    if (c->max_message_bytes <= 0) c->max_message_bytes = 4 << 20;
    if (!c->backend_name) c->backend_name = "cpu";
    c->request_message_timeout_ms = with_default(c->request_message_timeout_ms, 10000);
    c->max_streams_per_connection = with_default(c->max_streams_per_connection, 64);
    c->max_inflight_per_token = with_default(c->max_inflight_per_token, 16);
    c->keepalive_time_ms = with_default(c->keepalive_time_ms, 2 * 3600 * 1000);
    c->keepalive_timeout_ms = with_default(c->keepalive_timeout_ms, 20000);
    c->min_recv_ping_interval_ms = with_default(c->min_recv_ping_interval_ms, 60000);
    c->max_ping_strikes = with_default(c->max_ping_strikes, 2);
    c->max_connection_idle_ms = with_default(c->max_connection_idle_ms, 30 * 60 * 1000);
    c->max_connection_age_grace_ms = with_default(c->max_connection_age_grace_ms, 30000);
}

void rpc_grpc_server_set_limits(rpc_grpc_server *s, int max_inflight_per_token,
                                int generation_timeout_ms)
{
    if (!s) return;
    atomic_store(&s->per_token_cap, with_default(max_inflight_per_token, 16));
    atomic_store(&s->gen_timeout_ms, generation_timeout_ms);
}

eng_status rpc_grpc_server_start(const rpc_grpc_config *cfg, eng_engine *e, const rpc_auth *auth,
                                 rpc_grpc_server **out, int *bound_port, eng_err *err)
{
    *out = NULL;
    if (cfg->port < 0 || cfg->port > 65535)
        return eng_fail(err, ENG_ERR_INVALID, "gRPC port %d is out of range", cfg->port);
    if (cfg->max_streams_per_connection < 0)
        return eng_fail(err, ENG_ERR_INVALID, "gRPC max_streams_per_connection %d is negative",
                        cfg->max_streams_per_connection);
    rpc_grpc_server *s = calloc(1, sizeof *s);
    if (!s) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    config_defaults(&s->cfg);
    atomic_init(&s->per_token_cap, s->cfg.max_inflight_per_token);
    atomic_init(&s->gen_timeout_ms, s->cfg.generation_timeout_ms);
    const eng_model *m = eng_engine_model(e);
    snprintf(s->model_id, sizeof s->model_id, "%s", cfg->model_id ? cfg->model_id : eng_model_name(m));
    if (s->cfg.context_length <= 0) s->cfg.context_length = eng_model_n_ctx_train(m);
    s->n_tokens = auth ? rpc_auth_n_slots(auth) : 0;
    s->token_inflight = calloc(s->n_tokens + 1, sizeof *s->token_inflight);
    if (!s->token_inflight) {
        free(s);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    grpc_init();
    grpc_server_credentials *creds = server_credentials(&s->cfg, err);
    if (!creds) {
        grpc_shutdown();
        free(s->token_inflight);
        free(s);
        return ENG_ERR_INVALID;
    }
    if (prompt_builder_create(m, &s->prompts, err) != ENG_OK) {
        grpc_server_credentials_release(creds);
        grpc_shutdown();
        free(s->token_inflight);
        free(s);
        return ENG_ERR_INVALID;
    }
    if (!cfg->router && eng_router_create(&e, 1, &s->own_router, err) != ENG_OK) {
        grpc_server_credentials_release(creds);
        grpc_shutdown();
        prompt_builder_free(s->prompts);
        free(s->token_inflight);
        free(s);
        return ENG_ERR_NOMEM;
    }
    s->ctx = (gs_context){.engine = e, .router = cfg->router ? cfg->router : s->own_router,
                          .model = m, .auth = auth, .prompts = s->prompts,
                          .model_id = s->model_id,
                          .backend = s->cfg.backend_name, .context_length = s->cfg.context_length,
                          .embedder = s->cfg.embedder, .index = s->cfg.index,
                          .retrieval = s->cfg.index && !s->cfg.no_retrieval};
    s->t_shutdown = (gs_tag){.c = NULL, .kind = TAG_SHUTDOWN};
    atomic_init(&s->draining, false);
    atomic_init(&s->shut_down, false);
    atomic_init(&s->aborted, false);
    atomic_init(&s->inflight, 0);
    atomic_init(&s->next_id, 1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv_ready, &ca);
    pthread_cond_init(&s->cv_state, &ca);
    pthread_cond_init(&s->cv_work, &ca);
    pthread_condattr_destroy(&ca);

    const rpc_grpc_config *c = &s->cfg;
    grpc_arg args[13];
    size_t na = 0;
    /* gRPC sets SO_REUSEPORT by default: a second server on the same port would start and the
     * kernel would split connections between the two. One port, one server. */
    args[na++] = int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0);
    args[na++] = int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, c->max_message_bytes);
    /* Rapid reset and stream floods: a connection has at most this many streams open. */
    args[na++] = int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, c->max_streams_per_connection);
    args[na++] = int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, c->keepalive_time_ms);
    args[na++] = int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, c->keepalive_timeout_ms);
    args[na++] = int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                         c->min_recv_ping_interval_ms);
    args[na++] = int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, c->max_ping_strikes);
    if (c->max_connection_idle_ms > 0)
        args[na++] = int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, c->max_connection_idle_ms);
    if (c->max_connection_age_ms > 0) {
        args[na++] = int_arg(GRPC_ARG_MAX_CONNECTION_AGE_MS, c->max_connection_age_ms);
        args[na++] = int_arg(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, c->max_connection_age_grace_ms);
    }
    grpc_channel_args chargs = {na, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    char addr[300];
    bool v6 = strchr(c->bind, ':') != NULL;
    snprintf(addr, sizeof addr, v6 ? "[%s]:%d" : "%s:%d", c->bind, c->port);
    int port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        eng_fail(err, ENG_ERR_IO, "gRPC: cannot listen on %s (address in use or not local?%s)",
                 addr, c->tls_cert_file ? " or the TLS certificate and key do not load" : "");
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
        grpc_shutdown();
        prompt_builder_free(s->prompts);
        eng_router_free(s->own_router);
        free(s->token_inflight);
        free(s);
        return ENG_ERR_IO;
    }
    grpc_server_start(s->server);
    s->pollers = calloc((size_t)c->n_pollers, sizeof *s->pollers);
    ENG_ASSERT(s->pollers != NULL);
    ENG_ASSERT(pthread_create(&s->pump, NULL, gs_pump_main, s) == 0);
    s->pump_started = true;
    for (int i = 0; i < GS_WORKERS; i++) {
        ENG_ASSERT(pthread_create(&s->workers[i], NULL, gs_worker_main, s) == 0);
        s->n_workers++;
    }
    for (int i = 0; i < c->n_pollers; i++) {
        ENG_ASSERT(pthread_create(&s->pollers[i], NULL, gs_poller_main, s) == 0);
        s->n_pollers++;
    }
    for (int i = 0; i < GS_REQUEST_SLOTS; i++) gs_request_next(s);
    if (bound_port) *bound_port = port;
    *out = s;
    return ENG_OK;
}

/* ---- drain / stop ------------------------------------------------------------------------- */

/* Cancels every live call and its engine request (release: and releases that request). */
static void abort_calls(rpc_grpc_server *s, bool release)
{
    size_t n;
    gs_call **v = gs_live_calls(s, &n);
    for (size_t i = 0; i < n; i++) {
        gs_call_abort(v[i], release);
        gs_call_unref(v[i]);
    }
    free(v);
}

/* Waits until every call (request slots included) is gone and the shutdown tag came, or the
 * deadline passes. */
static bool wait_gone(rpc_grpc_server *s, double deadline_ms)
{
    pthread_mutex_lock(&s->mu);
    while ((s->live > 0 || !s->shutdown_done) && eng_clock_ms() < deadline_ms) {
        struct timespec ts = eng_clock_deadline(20);
        pthread_cond_timedwait(&s->cv_state, &s->mu, &ts);
    }
    bool ok = s->live == 0 && s->shutdown_done;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void rpc_grpc_server_stop_accepting(rpc_grpc_server *s)
{
    /* The listener stays up so Health can say DRAINING; on_new_call refuses the rest. */
    if (s) atomic_store(&s->draining, true);
}

bool rpc_grpc_server_drain_wait(rpc_grpc_server *s, int drain_ms)
{
    if (!s) return true;
    rpc_grpc_server_stop_accepting(s);
    double deadline = eng_clock_ms() + (drain_ms > 0 ? drain_ms : 0);
    while (atomic_load(&s->inflight) > 0 && !atomic_load(&s->aborted) &&
           eng_clock_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&s->inflight) == 0;
}

void rpc_grpc_server_drain_abort(rpc_grpc_server *s)
{
    if (!s) return;
    atomic_store(&s->draining, true);
    atomic_store(&s->aborted, true);
    abort_calls(s, false);
}

void rpc_grpc_server_stop(rpc_grpc_server *s, int drain_ms)
{
    if (!s) return;
    bool clean = rpc_grpc_server_drain_wait(s, drain_ms);
    atomic_store(&s->shut_down, true);
    /* The outstanding request slots complete unsuccessfully and go away. */
    grpc_server_shutdown_and_notify(s->server, s->cq, gs_tag_arm(&s->t_shutdown));
    if (!clean) atomic_store(&s->aborted, true);
    abort_calls(s, false);
    grpc_server_cancel_all_calls(s->server);
    /* No worker submits after this; then no engine request is left pointing at a call. */
    pthread_mutex_lock(&s->mu);
    s->work_stop = true;
    pthread_cond_broadcast(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_workers; i++) pthread_join(s->workers[i], NULL);
    abort_calls(s, true);
    if (!wait_gone(s, eng_clock_ms() + 10000)) {
        /* Something in grpc still holds a call: leaking the server beats freeing what it uses. */
        rpc_log(RPC_LOG_ERROR, "grpc: %d calls did not end after cancel; not freeing them",
                s->live);
        return;
    }
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    for (int i = 0; i < s->n_pollers; i++) pthread_join(s->pollers[i], NULL);
    pthread_mutex_lock(&s->mu);
    s->pump_stop = true;
    pthread_cond_signal(&s->cv_ready);
    pthread_mutex_unlock(&s->mu);
    if (s->pump_started) pthread_join(s->pump, NULL);
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown();
    free(s->pollers);
    free(s->token_inflight);
    prompt_builder_free(s->prompts);
    eng_router_free(s->own_router);
    pthread_cond_destroy(&s->cv_ready);
    pthread_cond_destroy(&s->cv_state);
    pthread_cond_destroy(&s->cv_work);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
