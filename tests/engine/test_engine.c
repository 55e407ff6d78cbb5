/* test_engine.c — the continuous-batching engine through its public API: batched equals
 * alone (and equals llama.cpp), prefix-cache hits, preemption under a tiny KV pool, seeded
 * sampling unchanged by batching and preemption, a seeded submit/cancel/finish stress with invariant checks, overload, limits and stop strings. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu_forward.h"
#include "model.h"
#include "serval_engine.h"
#include "testutil.h"
#include "tu_json.h"

enum { MAX_OUT = 512 };

typedef struct run_out {
    int32_t toks[MAX_OUT];
    int32_t n;
    char text[8192];
    size_t len;
    eng_request_output last;
} run_out;

static eng_model *load_model(const char *path)
{
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(path, &m, &err), ENG_OK, "%s", err.msg);
    return m;
}

static eng_engine *make_engine(const eng_model *m, eng_engine_config cfg)
{
    eng_engine *e = NULL;
    eng_err err = {{0}};
    cfg.check_invariants = true;
    if (cfg.n_threads == 0)
        cfg.n_threads = 2;
    cr_assert_eq(eng_engine_create(m, &cfg, &e, &err), ENG_OK, "%s", err.msg);
    return e;
}

static eng_request *submit_tokens(eng_engine *e, const int32_t *ids, int32_t n, int32_t max_tokens)
{
    eng_request_params p = eng_request_params_defaults();
    p.tokens = ids;
    p.n_tokens = n;
    p.max_tokens = max_tokens;
    eng_request *r = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_OK, "%s", err.msg);
    return r;
}

/* Reads a request to its end, reading at most `chunk` bytes at a time. */
static void drain(eng_request *r, run_out *o, size_t chunk)
{
    memset(o, 0, sizeof *o);
    for (;;) {
        size_t room = sizeof o->text - o->len;
        eng_request_output out;
        cr_assert_eq(eng_request_read(r, o->text + o->len, room < chunk ? room : chunk, 60000,
                                      &out),
                     ENG_OK);
        o->len += out.text_len;
        o->last = out;
        if (out.done)
            break;
        cr_assert(out.text_len > 0 || out.n_new_tokens > 0, "read timed out after 60 s");
    }
    o->n = eng_request_tokens(r, o->toks, MAX_OUT);
}

/* Polls the stats until nothing is running or waiting (at most 20 s). */
static void wait_idle(eng_engine *e, eng_engine_stats *s)
{
    for (int i = 0; i < 2000; i++) {
        eng_engine_stats_get(e, s);
        if (s->running == 0 && s->waiting == 0)
            return;
        usleep(10000);
    }
    cr_assert_fail("engine still busy after 20 s: %d running, %d waiting", s->running, s->waiting);
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* n bytes of C source, repeated lines (a new string owned by the caller). */
static char *code_text(size_t n)
{
    static const char line[] = "    for (int i = 0; i < n; i++) total += values[i] * 3;\n";
    char *t = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        t[i] = line[i % (sizeof line - 1)];
    t[n] = '\0';
    return t;
}

/* The fastest of three submits of text (each must fail with want), in ms. */
static double refusal_ms(eng_engine *e, const char *text, size_t len, eng_status want)
{
    eng_request_params p = eng_request_params_defaults();
    p.text = text;
    p.text_len = len;
    double best = 1e30;
    for (int i = 0; i < 3; i++) {
        eng_request *r = NULL;
        eng_err err = {{0}};
        double t0 = wall_ms();
        eng_status st = eng_submit(e, &p, &r, &err);
        double dt = wall_ms() - t0;
        cr_assert_eq(st, want, "%s: %s", eng_status_str(st), err.msg);
        cr_assert_null(r);
        best = dt < best ? dt : best;
    }
    return best;
}

static double tokenize_ms(const eng_model *m, const char *text, size_t len)
{
    int32_t *ids = NULL, n = 0;
    double t0 = wall_ms();
    cr_assert_eq(eng_model_tokenize(m, text, len, true, true, &ids, &n, NULL), ENG_OK);
    double dt = wall_ms() - t0;
    free(ids);
    return dt;
}

/* ---- llama.cpp greedy fixture ---------------------------------------------------------- */

typedef struct fixture {
    char name[64];
    int32_t prompt[256], ref[64];
    int32_t n_prompt, n_ref;
    char text[4096];
    size_t text_len;
} fixture;

static void fixture_from_json(fixture *f, const tu_json *j)
{
    snprintf(f->name, sizeof f->name, "%s", tu_json_get(j, "name")->str);
    const tu_json *a = tu_json_get(j, "prompt_ids");
    cr_assert(a->n <= 256);
    for (size_t i = 0; i < a->n; i++)
        f->prompt[i] = (int32_t)a->items[i]->num;
    f->n_prompt = (int32_t)a->n;
    a = tu_json_get(j, "tokens");
    cr_assert(a->n <= 64);
    for (size_t i = 0; i < a->n; i++)
        f->ref[i] = (int32_t)a->items[i]->num;
    f->n_ref = (int32_t)a->n;
    const tu_json *t = tu_json_get(j, "text_b64");
    size_t tl = 0;
    unsigned char *dec = tu_base64_decode(t->str, t->str_len, &tl);
    cr_assert(dec && tl < sizeof f->text);
    memcpy(f->text, dec, tl);
    f->text_len = tl;
    free(dec);
}

/* The first 64 lines of greedy.jsonl. */
static fixture *load_fixtures(size_t *n_out)
{
    size_t n_lines;
    tu_json **lines = tu_read_jsonl("tests/fixtures/llamacpp/greedy.jsonl", &n_lines);
    fixture *fx = calloc(64, sizeof *fx);
    size_t n = 0;
    for (size_t li = 0; li < n_lines; li++) {
        if (n < 64)
            fixture_from_json(&fx[n++], lines[li]);
        tu_json_free(lines[li]);
    }
    free(lines);
    *n_out = n;
    return fx;
}

static void assert_tokens(const fixture *f, const run_out *o, int32_t n, const char *how)
{
    cr_assert_geq(o->n, n, "%s '%s': %d tokens, wanted %d", how, f->name, o->n, n);
    for (int32_t i = 0; i < n; i++)
        cr_assert_eq(o->toks[i], f->ref[i], "%s '%s': token %d is %d, llama.cpp and alone: %d",
                     how, f->name, i, o->toks[i], f->ref[i]);
}

/* Twelve greedy requests of different lengths, submitted at different steps while the others
 * decode, each produce exactly llama.cpp's tokens — which is also what each produces alone
 * (checked for three of them through the engine). */
Test(engine, batched_staggered_equals_alone_and_llamacpp, .timeout = 600)
{
    size_t nf;
    fixture *fx = load_fixtures(&nf);
    cr_assert_geq(nf, 8);
    eng_model *m = load_model(tu_default_model());
    /* Throughput scheduling admits every request that fits, so the batch is sure to grow; the
     * latency schedule may hold prompts back while requests decode toward their deadlines. */
    eng_engine_config c = eng_engine_config_defaults();
    c.schedule = ENG_SCHEDULE_THROUGHPUT;
    eng_engine *e = make_engine(m, c);

    eng_request *req[64];
    for (size_t i = 0; i < nf; i++) {
        req[i] = submit_tokens(e, fx[i].prompt, fx[i].n_prompt, fx[i].n_ref);
        if (i >= 3) { /* from the fourth on, join a batch that is already decoding */
            eng_request_output out;
            char buf[16];
            int32_t seen = 0;
            while (seen < 2) {
                eng_request_read(req[i - 1], buf, 0, 10000, &out);
                seen += out.n_new_tokens;
                if (out.done)
                    break;
            }
        }
    }
    run_out *o = malloc(sizeof *o);
    for (size_t i = 0; i < nf; i++) {
        drain(req[i], o, 4096);
        assert_tokens(&fx[i], o, fx[i].n_ref, "batched");
        cr_assert_eq(o->n, fx[i].n_ref);
        /* the text read equals llama.cpp's detokenized continuation, minus the EOS token */
        /* llama.cpp's text includes the end-of-generation token's own text (<|im_end|>) */
        size_t want = fx[i].text_len, eog_len = 0;
        if (tok_is_eog(m->vocab, fx[i].ref[fx[i].n_ref - 1]))
            tok_piece(m->vocab, fx[i].ref[fx[i].n_ref - 1], &eog_len);
        want -= eog_len;
        cr_assert_eq(o->len, want, "'%s': %zu bytes of text, llama.cpp %zu", fx[i].name,
                     o->len, want);
        cr_assert(memcmp(o->text, fx[i].text, o->len) == 0, "'%s': text differs", fx[i].name);
        eng_request_release(req[i]);
    }
    eng_engine_stats s;
    wait_idle(e, &s);
    cr_log_info("batched: %lld steps, max %d sequences per step, mean %.1f", (long long)s.steps,
                s.max_batch_seqs, s.mean_batch_seqs);
    cr_assert_geq(s.max_batch_seqs, 6, "requests never shared a step (max %d)", s.max_batch_seqs);
    cr_assert_eq(s.kv_blocks_used, 0);

    for (size_t i = 0; i < 3; i++) {
        eng_request *r = submit_tokens(e, fx[i].prompt, fx[i].n_prompt, fx[i].n_ref);
        drain(r, o, 4096);
        assert_tokens(&fx[i], o, fx[i].n_ref, "alone");
        eng_request_release(r);
    }
    free(o);
    eng_engine_free(e);
    eng_model_free(m);
    free(fx);
}

/* A long prompt: code from the fixture corpus, tokenized by the model. */
static int32_t *corpus_prompt(const eng_model *m, const char *file, int32_t want, int32_t *n)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/corpus/%s", file);
    char *path = tu_source_path(rel);
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text, "%s missing", path);
    int32_t *ids = malloc(sizeof(int32_t) * (len + 1));
    size_t got = 0;
    cr_assert_eq(tok_encode(m->vocab, text, len, false, ids, len + 1, &got), ENG_OK);
    cr_assert_geq((int32_t)got, want, "%s has only %zu tokens", rel, got);
    *n = want;
    free(text);
    free(path);
    return ids;
}

/* The second request with the same long prefix reuses its blocks: it computes only the
 * uncached tail, and produces exactly what a cold engine without prefix caching produces. */
Test(engine, prefix_hit_same_output_and_skips_cached_prefill, .timeout = 600)
{
    eng_model *m = load_model(tu_default_model());
    int32_t n;
    int32_t *ids = corpus_prompt(m, "c_ring_buffer.c", 400, &n);
    run_out *cold = malloc(sizeof *cold), *hit = malloc(sizeof *hit), *off = malloc(sizeof *off);

    eng_engine *e = make_engine(m, eng_engine_config_defaults());
    eng_request *r = submit_tokens(e, ids, 390, 16); /* the previous keystroke */
    drain(r, cold, 4096);
    eng_request_release(r);
    eng_engine_stats s0, s1;
    wait_idle(e, &s0);
    r = submit_tokens(e, ids, n, 16);                /* the next one: 10 more tokens */
    drain(r, hit, 4096);
    eng_request_release(r);
    wait_idle(e, &s1);
    int64_t computed = s1.prompt_tokens_computed - s0.prompt_tokens_computed;
    cr_log_info("prefix hit: %d cached of %d, %lld computed, hit rate %.2f",
                hit->last.n_cached_tokens, n, (long long)computed, s1.prefix_hit_rate);
    cr_assert_eq(hit->last.n_cached_tokens, 384, "the 24 full blocks of the first prompt");
    cr_assert_eq(computed, n - 384);
    eng_engine_free(e);

    eng_engine_config c = eng_engine_config_defaults();
    c.prefix_caching = false;
    e = make_engine(m, c);
    r = submit_tokens(e, ids, n, 16);
    drain(r, off, 4096);
    cr_assert_eq(off->last.n_cached_tokens, 0);
    eng_request_release(r);
    eng_engine_free(e);

    cr_assert_eq(hit->n, off->n);
    cr_assert(memcmp(hit->toks, off->toks, sizeof(int32_t) * (size_t)off->n) == 0,
              "a prefix-cache hit changed the output");
    cr_assert(hit->len == off->len && memcmp(hit->text, off->text, off->len) == 0);
    free(cold);
    free(hit);
    free(off);
    free(ids);
    eng_model_free(m);
}

/* Per-token caches: the same prompt under the same salt reports cached tokens, under another
 * salt (or none) it reports none, and the output is the same either way. */
Test(engine, prefix_cache_is_shared_only_within_a_salt, .timeout = 600)
{
    eng_model *m = load_model(tu_default_model());
    int32_t n;
    int32_t *ids = corpus_prompt(m, "c_ring_buffer.c", 100, &n);
    eng_engine *e = make_engine(m, eng_engine_config_defaults());
    const struct { uint64_t salt; int32_t want; } runs[] = {
        {11, 0}, {11, 96}, {12, 0}, {0, 0}, {0, 96}, {12, 96}, {11, 96}};
    run_out *o = malloc(sizeof *o), *first = malloc(sizeof *first);
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        eng_request_params p = eng_request_params_defaults();
        p.tokens = ids;
        p.n_tokens = n;
        p.max_tokens = 4;
        p.cache_salt = runs[i].salt;
        eng_request *r = NULL;
        eng_err err = {{0}};
        cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_OK, "%s", err.msg);
        drain(r, i == 0 ? first : o, 4096);
        eng_request_release(r);
        eng_engine_stats s;
        wait_idle(e, &s);
        if (i == 0)
            continue;
        cr_assert_eq(o->last.n_cached_tokens, runs[i].want, "run %zu (salt %llu): %d cached",
                     i, (unsigned long long)runs[i].salt, o->last.n_cached_tokens);
        cr_assert(o->n == first->n && !memcmp(o->toks, first->toks, sizeof(int32_t) * (size_t)o->n),
                  "run %zu: the output changed", i);
    }
    cr_assert_eq(first->last.n_cached_tokens, 0);
    free(o);
    free(first);
    free(ids);
    eng_engine_free(e);
    eng_model_free(m);
}

/* A KV pool of ten blocks for six concurrent requests: sequences are preempted and recomputed,
 * and every output is still exactly llama.cpp's. */
Test(engine, preemption_under_tiny_kv_keeps_outputs, .timeout = 600)
{
    size_t nf;
    fixture *fx = load_fixtures(&nf);
    eng_model *m = load_model(tu_default_model());
    eng_engine_config c = eng_engine_config_defaults();
    c.max_seq_len = 160;
    c.kv_bytes = (int64_t)eng_cpu_kv_block_bytes(m, 16) * 10;
    eng_engine *e = make_engine(m, c);
    eng_request *req[6];
    for (int i = 0; i < 6; i++)
        req[i] = submit_tokens(e, fx[i].prompt, fx[i].n_prompt, fx[i].n_ref);
    run_out *o = malloc(sizeof *o);
    int preempted = 0;
    for (int i = 0; i < 6; i++) {
        drain(req[i], o, 4096);
        assert_tokens(&fx[i], o, fx[i].n_ref, "preempted");
        preempted += o->last.n_preemptions;
        eng_request_release(req[i]);
    }
    eng_engine_stats s;
    wait_idle(e, &s);
    cr_log_info("tiny KV: %lld preemptions, %d blocks", (long long)s.preemptions, s.kv_blocks_total);
    cr_assert_eq(s.kv_blocks_total, 10);
    cr_assert_gt(s.preemptions, 0, "the pool was never short: the test proves nothing");
    cr_assert_eq(preempted, s.preemptions);
    free(o);
    eng_engine_free(e);
    eng_model_free(m);
    free(fx);
}

/* Seeded sampling draws token n of a request from (seed, n): the same tokens alone, batched
 * with others, and preempted and recomputed; a different seed gives different tokens. */
Test(engine, seeded_sampling_survives_batching_and_preemption, .timeout = 600)
{
    size_t nf;
    fixture *fx = load_fixtures(&nf);
    eng_model *m = load_model(tu_default_model());
    enum { N = 4, OUT = 32 };
    eng_request_params p[N];
    for (int i = 0; i < N; i++) {
        p[i] = eng_request_params_defaults();
        p[i].tokens = fx[i].prompt;
        p[i].n_tokens = fx[i].n_prompt;
        p[i].max_tokens = OUT;
        p[i].ignore_eos = true;
        p[i].sampling.temperature = 0.9f;
        p[i].sampling.top_p = 0.95f;
        p[i].sampling.top_k = i % 2 ? 40 : 0;
        p[i].sampling.seed = 7 + (uint64_t)i;
    }
    run_out *alone = malloc(sizeof *alone * N), *o = malloc(sizeof *o);
    eng_err err = {{0}};
    eng_engine_config c = eng_engine_config_defaults();
    c.max_seq_len = 160;
    eng_engine *e = make_engine(m, c); /* a roomy pool: one at a time */
    for (int i = 0; i < N; i++) {
        eng_request *r = NULL;
        cr_assert_eq(eng_submit(e, &p[i], &r, &err), ENG_OK, "%s", err.msg);
        drain(r, &alone[i], 4096);
        cr_assert_eq(alone[i].n, OUT);
        eng_request_release(r);
    }
    /* the same seed again, and another seed */
    eng_request *r = NULL;
    cr_assert_eq(eng_submit(e, &p[0], &r, &err), ENG_OK, "%s", err.msg);
    drain(r, o, 4096);
    eng_request_release(r);
    cr_assert_arr_eq(o->toks, alone[0].toks, sizeof(int32_t) * OUT, "same seed, other tokens");
    p[0].sampling.seed = 1234567;
    cr_assert_eq(eng_submit(e, &p[0], &r, &err), ENG_OK, "%s", err.msg);
    drain(r, o, 4096);
    eng_request_release(r);
    cr_assert(memcmp(o->toks, alone[0].toks, sizeof(int32_t) * OUT) != 0,
              "another seed drew the same %d tokens", OUT);
    p[0].sampling.seed = 7;
    eng_engine_free(e);

    c.kv_bytes = (int64_t)eng_cpu_kv_block_bytes(m, 16) * 10; /* too small for all: preempts */
    e = make_engine(m, c);
    eng_request *rs[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(eng_submit(e, &p[i], &rs[i], &err), ENG_OK, "%s", err.msg);
    int preempted = 0;
    for (int i = 0; i < N; i++) {
        drain(rs[i], o, 4096);
        preempted += o->last.n_preemptions;
        cr_assert_arr_eq(o->toks, alone[i].toks, sizeof(int32_t) * OUT,
                         "request %d: batched/preempted sampling differs from alone", i);
        eng_request_release(rs[i]);
    }
    cr_assert_gt(preempted, 0, "the pool was never short: the test proves nothing");
    free(alone);
    free(o);
    eng_engine_free(e);
    eng_model_free(m);
    free(fx);
}

/* ---- a small synthetic model for the stress test ---------------------------------------- */

static char *synth_tiny(void)
{
    char *path = tu_temp_path(".gguf");
    char *bin = tu_bin_path("serval-synth");
    char *argv[] = {bin, "--preset", "tiny", "--vocab-from", (char *)tu_default_model(),
                    "--out", path, NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, 120);
    cr_assert_eq(rc, 0, "serval-synth failed: %s", err ? err : "");
    free(out);
    free(err);
    free(bin);
    return path;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Thousands of seeded submit / cancel / release / read events against a small KV pool: every
 * step verifies the pool's accounting (check_invariants aborts otherwise), nothing blocks,
 * and at the end every block is back (free or cached) with no request left. */
Test(engine, randomized_stress_leaks_nothing, .timeout = 600)
{
    char *path = synth_tiny();
    eng_model *m = load_model(path);
    eng_engine_config c = eng_engine_config_defaults();
    c.max_seq_len = 256;
    c.kv_bytes = (int64_t)eng_cpu_kv_block_bytes(m, 16) * 20; /* 16 hold one full sequence */
    c.n_threads = 1;
    c.max_running = 8;
    c.max_waiting = 24;
    c.step_tokens = 96;
    eng_engine *e = make_engine(m, c);

    uint64_t seed = 0x5eed5eedULL;
    int32_t base[4][128];
    for (int b = 0; b < 4; b++)
        for (int i = 0; i < 128; i++)
            base[b][i] = (int32_t)(rng_next(&seed) % 49000);
    enum { LIVE = 64 };
    eng_request *live[LIVE] = {0};
    int32_t live_max[LIVE] = {0};
    int n_submit = 0, n_overload = 0, n_cancel = 0, n_done = 0;
    const char *stops[] = {"a", "\n"};
    int ev;
    for (ev = 0; ev < 1000000; ev++) {
        if (ev % 100 == 0) { /* run until 1,500 requests went through the engine */
            eng_engine_stats now;
            eng_engine_stats_get(e, &now);
            if (now.requests_finished >= 1500)
                break;
        }
        int slot = (int)(rng_next(&seed) % LIVE);
        int what = (int)(rng_next(&seed) % 10);
        if (!live[slot] && what < 6) {
            int32_t prompt[200];
            int b = (int)(rng_next(&seed) % 4);
            int32_t shared = (int32_t)(rng_next(&seed) % 128);
            int32_t tail = 1 + (int32_t)(rng_next(&seed) % 60);
            memcpy(prompt, base[b], sizeof(int32_t) * (size_t)shared);
            for (int32_t i = 0; i < tail; i++)
                prompt[shared + i] = (int32_t)(rng_next(&seed) % 49000);
            eng_request_params p = eng_request_params_defaults();
            p.tokens = prompt;
            p.n_tokens = shared + tail;
            p.max_tokens = 1 + (int32_t)(rng_next(&seed) % 24);
            p.ignore_eos = rng_next(&seed) % 2;
            p.priority = (int32_t)(rng_next(&seed) % 3);
            if (rng_next(&seed) % 2) {
                p.sampling.temperature = 0.8f;
                p.sampling.top_k = 40;
                p.sampling.seed = rng_next(&seed);
            }
            if (rng_next(&seed) % 4 == 0) {
                p.stop = stops;
                p.n_stop = 2;
            }
            eng_err err;
            eng_status st = eng_submit(e, &p, &live[slot], &err);
            cr_assert(st == ENG_OK || st == ENG_ERR_OVERLOAD, "submit: %s", err.msg);
            n_submit++;
            if (st == ENG_ERR_OVERLOAD) {
                n_overload++;
                /* a client backing off: collect finished requests, and wait (up to 20 ms)
                 * for one that is still going to make progress */
                for (int k = 1; k < LIVE; k++) {
                    int j = (slot + k) % LIVE;
                    if (!live[j])
                        continue;
                    char tmp[256];
                    eng_request_output o;
                    eng_request_read(live[j], tmp, sizeof tmp, 20, &o);
                    if (!o.done)
                        break;
                    n_done++;
                    eng_request_release(live[j]);
                    live[j] = NULL;
                }
            }
            live_max[slot] = p.max_tokens;
        } else if (live[slot] && what < 3) {
            eng_request_cancel(live[slot]);
            n_cancel++;
        } else if (live[slot]) {
            char buf[256];
            eng_request_output out;
            eng_request_read(live[slot], buf, sizeof buf, what == 9 ? 50 : 0, &out);
            cr_assert_leq(out.n_output_tokens, live_max[slot]);
            if (out.done || what == 8) {
                if (out.done) {
                    n_done++;
                    cr_assert(out.finish != ENG_FINISH_NONE && out.finish != ENG_FINISH_ERROR,
                              "finish %s: %s", eng_finish_str(out.finish), out.error);
                }
                eng_request_release(live[slot]); /* release while running = cancel */
                live[slot] = NULL;
            }
        }
    }
    for (int i = 0; i < LIVE; i++)
        eng_request_release(live[i]);
    eng_engine_stats s;
    wait_idle(e, &s);
    cr_log_info("stress: %d events, %d submits (%d overloaded), %d cancels, %d read to the end, %lld steps "
                "(%.1f ms mean), %lld preemptions", ev, n_submit, n_overload, n_cancel, n_done,
                (long long)s.steps, s.mean_step_ms, (long long)s.preemptions);
    cr_assert_eq(s.kv_blocks_used, 0, "%d blocks still referenced", s.kv_blocks_used);
    cr_assert_eq(s.kv_blocks_free + s.kv_blocks_cached, s.kv_blocks_total);
    cr_assert_eq(s.requests_finished, s.requests_submitted);
    cr_assert_geq(s.requests_finished, 1500, "only %lld requests finished in %d events",
                  (long long)s.requests_finished, ev);
    cr_assert_gt(s.preemptions, 0, "the pool was never short: preemption went untested");
    eng_engine_free(e);
    eng_model_free(m);
    unlink(path);
    free(path);
}

/* A full queue says so at once instead of blocking; cancelling everything frees the engine. */
Test(engine, overload_returns_promptly, .timeout = 120)
{
    eng_model *m = load_model(tu_default_model());
    eng_engine_config c = eng_engine_config_defaults();
    c.max_running = 1;
    c.max_waiting = 3;
    c.step_tokens = 64;
    eng_engine *e = make_engine(m, c);
    int32_t prompt[8] = {1604, 314, 79, 30921, 24, 94, 727, 472};
    eng_request *r[4];
    eng_request_params p = eng_request_params_defaults();
    p.tokens = prompt;
    p.n_tokens = 8;
    p.max_tokens = 4000;
    p.ignore_eos = true;
    eng_err err;
    cr_assert_eq(eng_submit(e, &p, &r[0], &err), ENG_OK, "%s", err.msg);
    /* the first is running once it produced a token; then three wait behind it */
    eng_request_output out;
    char buf[64];
    do
        eng_request_read(r[0], buf, sizeof buf, 10000, &out);
    while (out.n_output_tokens == 0);
    for (int i = 1; i < 4; i++)
        cr_assert_eq(eng_submit(e, &p, &r[i], &err), ENG_OK, "%s", err.msg);
    /* What front ends ask before building a prompt says the same as eng_submit. */
    cr_assert_eq(eng_engine_admission_check(e, &err), ENG_ERR_OVERLOAD);
    cr_assert(strstr(err.msg, "overloaded"), "message: %s", err.msg);
    eng_request *x = NULL;
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    cr_assert_eq(eng_submit(e, &p, &x, &err), ENG_ERR_OVERLOAD);
    cr_assert_null(x);
    cr_assert(strstr(err.msg, "overloaded"), "message: %s", err.msg);
    cr_assert_lt((double)clock() / CLOCKS_PER_SEC - t0, 1.0);
    /* Text prompts are refused before they are tokenized: a 4 MiB one (which would otherwise
     * be too long), and a 256 KiB one (which would be tokenized), each in a small fraction of
     * the time tokenizing it takes. */
    char *big = code_text(4u << 20);
    double t_big = refusal_ms(e, big, 4u << 20, ENG_ERR_OVERLOAD);
    double t_mid = refusal_ms(e, big, 256u << 10, ENG_ERR_OVERLOAD);
    double t_tok = tokenize_ms(m, big, 256u << 10);
    cr_log_info("full queue: 4 MiB refused in %.3f ms, 256 KiB in %.3f ms; tokenizing 256 KiB "
                "takes %.1f ms", t_big, t_mid, t_tok);
    cr_assert_lt(t_mid * 10, t_tok, "refused in %.3f ms, tokenizing takes %.3f ms", t_mid, t_tok);
    cr_assert_lt(t_big * 10, t_tok, "refused in %.3f ms, tokenizing takes %.3f ms", t_big, t_tok);
    free(big);
    for (int i = 0; i < 4; i++)
        eng_request_cancel(r[i]);
    for (int i = 0; i < 4; i++) {
        run_out *o = malloc(sizeof *o);
        drain(r[i], o, sizeof o->text);
        cr_assert_eq(o->last.finish, ENG_FINISH_CANCELLED);
        free(o);
        eng_request_release(r[i]);
    }
    eng_engine_stats s;
    wait_idle(e, &s);
    cr_assert_eq(s.requests_rejected, 8, "the admission check, the token prompt and six text "
                 "prompts: each was a request refused");
    cr_assert_eq(s.requests_cancelled, 4);
    /* cancelled waiting requests give their queue slots back (they once leaked, and the
     * engine refused everything after a while) */
    p.max_tokens = 2;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(eng_submit(e, &p, &r[i], &err), ENG_OK, "%s", err.msg);
        eng_request_release(r[i]);
    }
    wait_idle(e, &s);
    cr_assert_eq(s.kv_blocks_used, 0);
    eng_engine_free(e);
    eng_model_free(m);
}

/* Prompts at the limit are refused with a message; generation stops at max_seq_len. */
Test(engine, max_seq_len_enforced, .timeout = 120)
{
    eng_model *m = load_model(tu_default_model());
    eng_engine_config c = eng_engine_config_defaults();
    c.max_seq_len = 64;
    eng_engine *e = make_engine(m, c);
    int32_t n;
    int32_t *ids = corpus_prompt(m, "c_ring_buffer.c", 64, &n);
    eng_request_params p = eng_request_params_defaults();
    p.tokens = ids;
    p.n_tokens = 64;
    eng_request *r = NULL;
    eng_err err;
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_TOO_LONG);
    cr_assert(strstr(err.msg, "64 tokens") && strstr(err.msg, "at most 63"), "%s", err.msg);
    p.n_tokens = 50;
    p.max_tokens = 100;
    p.ignore_eos = true;
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_OK, "%s", err.msg);
    run_out *o = malloc(sizeof *o);
    drain(r, o, 4096);
    cr_assert_eq(o->n, 14);
    cr_assert_eq(o->last.finish, ENG_FINISH_LENGTH);
    eng_request_release(r);
    free(o);
    free(ids);
    eng_engine_free(e);
    eng_model_free(m);
}

/* A text prompt over 64 bytes per position the server accepts is ENG_ERR_TOO_LONG without
 * being tokenized: a 4 MiB one is refused in a small fraction of the time tokenizing it takes,
 * and one just under the bound is still tokenized (and then refused by its token count). */
Test(engine, huge_text_prompt_refused_without_tokenizing, .timeout = 120)
{
    eng_model *m = load_model(tu_default_model());
    eng_engine_config c = eng_engine_config_defaults();
    c.max_seq_len = 1024; /* the byte bound: 64 KiB */
    eng_engine *e = make_engine(m, c);
    size_t n = 4u << 20;
    char *big = code_text(n);
    double t_ref = refusal_ms(e, big, n, ENG_ERR_TOO_LONG);
    double t_tok = tokenize_ms(m, big, n);
    cr_log_info("idle engine: 4 MiB refused in %.3f ms; tokenizing it takes %.1f ms", t_ref,
                t_tok);
    cr_assert_lt(t_ref * 10, t_tok, "refused in %.3f ms, tokenizing takes %.3f ms", t_ref, t_tok);
    eng_request_params p = eng_request_params_defaults();
    p.text = big;
    p.text_len = n;
    eng_request *r = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_TOO_LONG);
    cr_assert(strstr(err.msg, "bytes of text") && strstr(err.msg, "at most 1023 tokens"), "%s",
              err.msg);
    /* The bound front ends check before building prompts is the one eng_submit applies. */
    cr_assert_eq(eng_engine_max_text_bytes(e), 64 * 1024 - 1);
    p.text_len = 64 * 1024; /* one byte over it: refused without tokenizing */
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_TOO_LONG);
    cr_assert(strstr(err.msg, "bytes of text"), "%s", err.msg);
    p.text_len = 64 * 1024 - 1; /* under the bound: tokenized, ~4k tokens, too many */
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_TOO_LONG);
    cr_assert(strstr(err.msg, "tokens; this server accepts at most 1023"), "%s", err.msg);
    p.text_len = 2000; /* a few hundred tokens: accepted */
    p.max_tokens = 1;
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_OK, "%s", err.msg);
    eng_request_release(r);
    free(big);
    eng_engine_free(e);
    eng_model_free(m);
}

/* Bad requests get ENG_ERR_INVALID with a message and queue nothing. */
Test(engine, bad_requests_rejected, .timeout = 120)
{
    eng_model *m = load_model(tu_default_model());
    eng_engine *e = make_engine(m, eng_engine_config_defaults());
    eng_request *r = NULL;
    eng_err err;
    eng_request_params p = eng_request_params_defaults();
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_INVALID); /* empty */
    int32_t bad[2] = {5, 49152};
    p.tokens = bad;
    p.n_tokens = 2;
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "49152"), "%s", err.msg);
    bad[1] = 6;
    p.max_tokens = 0;
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_INVALID);
    p.max_tokens = 4;
    p.sampling.top_p = 0.0f;
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_ERR_INVALID);
    cr_assert_null(r);
    eng_engine_stats s;
    eng_engine_stats_get(e, &s);
    cr_assert_eq(s.requests_submitted, 0);
    eng_engine_free(e);
    eng_model_free(m);
}

/* Cancelling mid-generation ends the request as cancelled and frees its blocks. */
Test(engine, cancel_frees_blocks, .timeout = 120)
{
    eng_model *m = load_model(tu_default_model());
    eng_engine *e = make_engine(m, eng_engine_config_defaults());
    int32_t n;
    int32_t *ids = corpus_prompt(m, "c_ring_buffer.c", 100, &n);
    eng_request_params p = eng_request_params_defaults();
    p.tokens = ids;
    p.n_tokens = n;
    p.max_tokens = 2000;
    p.ignore_eos = true;
    eng_request *r = NULL;
    cr_assert_eq(eng_submit(e, &p, &r, NULL), ENG_OK);
    eng_request_output out;
    char buf[256];
    do
        eng_request_read(r, buf, sizeof buf, 10000, &out);
    while (out.n_output_tokens < 3);
    eng_engine_stats s;
    eng_engine_stats_get(e, &s);
    cr_assert_geq(s.kv_blocks_used, 7, "100+ positions hold at least 7 blocks");
    eng_request_cancel(r);
    run_out *o = malloc(sizeof *o);
    drain(r, o, 4096);
    cr_assert_eq(o->last.finish, ENG_FINISH_CANCELLED);
    cr_assert_lt(o->n, 2000);
    wait_idle(e, &s);
    cr_assert_eq(s.kv_blocks_used, 0);
    cr_assert_eq(s.requests_cancelled, 1);
    eng_request_release(r);
    free(o);
    free(ids);
    eng_engine_free(e);
    eng_model_free(m);
}

static void count_notify(void *user, eng_request *r)
{
    (void)r;
    atomic_fetch_add((atomic_int *)user, 1);
}

/* A text prompt with a stop string: the streamed text (read three bytes at a time) is
 * llama.cpp's continuation cut before the stop string, and the callback fired. */
Test(engine, text_prompt_stop_string_and_notify, .timeout = 120)
{
    size_t nf;
    fixture *fx = load_fixtures(&nf);
    const fixture *f = &fx[0];
    const char *cut = "helper";
    const char *at = memmem(f->text, f->text_len, cut, strlen(cut));
    cr_assert_not_null(at, "fixture text changed: no '%s' in it", cut);
    eng_model *m = load_model(tu_default_model());
    eng_engine *e = make_engine(m, eng_engine_config_defaults());
    char prompt[2048];
    size_t plen = 0;
    cr_assert_eq(tok_decode(m->vocab, (const int32_t *)f->prompt, (size_t)f->n_prompt, prompt,
                            sizeof prompt, &plen),
                 ENG_OK);
    atomic_int calls = 0;
    eng_request_params p = eng_request_params_defaults();
    p.text = prompt;
    p.text_len = plen;
    p.max_tokens = f->n_ref;
    p.stop = &cut;
    p.n_stop = 1;
    p.notify = count_notify;
    p.notify_user = &calls;
    eng_request *r = NULL;
    eng_err err;
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_OK, "%s", err.msg);
    run_out *o = malloc(sizeof *o);
    drain(r, o, 3);
    cr_assert_eq(o->last.finish, ENG_FINISH_STOP);
    cr_assert_eq(o->last.n_prompt_tokens, f->n_prompt);
    cr_assert_eq(o->len, (size_t)(at - f->text));
    cr_assert(memcmp(o->text, f->text, o->len) == 0);
    /* the last call may still be running when the reader wakes up */
    cr_assert_geq(atomic_load(&calls), o->n - 1, "notify called %d times for %d tokens",
                  atomic_load(&calls), o->n);
    cr_assert_gt(o->last.first_token_ms, 0.0);
    cr_assert_geq(o->last.total_ms, o->last.first_token_ms);
    eng_request_release(r);
    free(o);
    eng_engine_free(e);
    eng_model_free(m);
    free(fx);
}
