/* test_spec.c — speculative decoding drafted from the prompt (engine/batch/spec.h): the draft
 * lookup and the adaptive length, the acceptance rule's distribution on synthetic logits, and
 * through the engine: greedy and seeded output identical with speculation on and off (tiny
 * synthetic model and the default model), stop strings and max_tokens inside an accepted run,
 * KV and prefix-cache invariants after rollbacks (check_invariants on every step). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampler.h"
#include "serval_engine.h"
#include "spec.h"
#include "testutil.h"

/* ---- drafting ----------------------------------------------------------------------------- */

Test(spec, draft_is_what_followed_the_most_recent_match_of_the_longest_suffix)
{
    /* ... 7 8 9 | 1 2 3 4 5 | 7 8 9 6 6 | 1 2 3 -> the 3-gram 1 2 3 last occurred at 3 */
    const int32_t t[] = {7, 8, 9, 1, 2, 3, 4, 5, 7, 8, 9, 6, 6, 1, 2, 3};
    int32_t out[SPEC_DRAFT_CAP];
    int32_t n = (int32_t)(sizeof t / sizeof t[0]);
    cr_assert_eq(spec_draft_find(t, n, 4, out), 4);
    cr_assert_eq(out[0], 4);
    cr_assert_eq(out[1], 5);
    cr_assert_eq(out[2], 7);
    cr_assert_eq(out[3], 8);
    /* the 3-gram 8 9 7 never occurred before: the 2-gram 9 7 neither, the 1-gram 7 did, most
     * recently at 8 (followed by 8 9 ...), not at 0 */
    const int32_t u[] = {7, 1, 1, 1, 1, 1, 1, 1, 7, 8, 9, 8, 9, 7};
    n = (int32_t)(sizeof u / sizeof u[0]);
    cr_assert_eq(spec_draft_find(u, n, 3, out), 3);
    cr_assert_eq(out[0], 8);
    cr_assert_eq(out[1], 9);
    cr_assert_eq(out[2], 8);
    /* the draft never runs past the context, and the cap holds */
    const int32_t v[] = {4, 5, 6, 4, 5};
    cr_assert_eq(spec_draft_find(v, 5, 8, out), 3, "4 5 at 0 is followed by 6 4 5 only");
    cr_assert_eq(out[0], 6);
    cr_assert_eq(spec_draft_find(v, 5, 1, out), 1);
    cr_assert_eq(spec_draft_find(v, 5, 0, out), 0);
    /* nothing repeats: no draft */
    const int32_t w[] = {1, 2, 3, 4, 5};
    cr_assert_eq(spec_draft_find(w, 5, 8, out), 0);
    cr_assert_eq(spec_draft_find(w, 1, 8, out), 0);
}

Test(spec, draft_length_grows_on_full_acceptance_and_pauses_when_acceptance_is_low)
{
    spec_config c = {.on = true, .draft_max = 6, .step_tokens = 64, .min_rate = 0.3f};
    spec_req s = {0};
    cr_assert_eq(spec_req_want(&s, &c), 4, "starts at 4");
    spec_req_update(&s, &c, 4, 4);
    cr_assert_eq(spec_req_want(&s, &c), 5);
    spec_req_update(&s, &c, 5, 5);
    spec_req_update(&s, &c, 6, 6);
    cr_assert_eq(spec_req_want(&s, &c), 6, "capped at draft_max");
    spec_req_update(&s, &c, 6, 2);
    cr_assert_eq(spec_req_want(&s, &c), 3, "shrinks to accepted + 1");
    spec_req_update(&s, &c, 3, 2);
    cr_assert_eq(spec_req_want(&s, &c), 2, "one less than before at least");
    /* rejections: the averaged rate falls below min_rate and drafting pauses, then probes 1 */
    spec_req r = {0};
    for (int i = 0; i < 4; i++)
        spec_req_update(&r, &c, 2, 0);
    for (int i = 0; i < SPEC_PROBE_STEPS; i++)
        cr_assert_eq(spec_req_want(&r, &c), 0, "step %d of the pause", i);
    cr_assert_eq(spec_req_want(&r, &c), 1);
}

Test(spec, accept_count_is_the_agreeing_prefix)
{
    const int32_t d[] = {5, 6, 7};
    const int32_t y_all[] = {5, 6, 7, 9}, y_none[] = {1, 6, 7, 9}, y_mid[] = {5, 2, 7, 9};
    cr_assert_eq(spec_accept_count(d, 3, y_all), 3);
    cr_assert_eq(spec_accept_count(d, 3, y_none), 0);
    cr_assert_eq(spec_accept_count(d, 3, y_mid), 1, "an agreement after a miss does not count");
    cr_assert_eq(spec_accept_count(d, 0, y_all), 0);
}

/* ---- the acceptance rule's distribution --------------------------------------------------- */

/* The sampling distribution the engine's sampler documents (sampler.h), computed directly:
 * softmax of logits / temperature over the top_k largest, then the smallest set of the largest
 * whose mass reaches top_p. Logits are distinct here, so ties do not arise. */
static void reference_probs(const float *l, int32_t n, const eng_sampler_params *p, double *q)
{
    int32_t order[64];
    for (int32_t i = 0; i < n; i++)
        order[i] = i;
    for (int32_t i = 0; i < n; i++) /* selection sort, largest first */
        for (int32_t j = i + 1; j < n; j++)
            if (l[order[j]] > l[order[i]]) {
                int32_t t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    int32_t keep = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    double total = 0, w[64];
    for (int32_t i = 0; i < keep; i++)
        total += w[i] = exp((double)(l[order[i]] - l[order[0]]) / p->temperature);
    double acc = 0;
    int32_t nucleus = keep;
    for (int32_t i = 0; i < keep; i++) {
        acc += w[i];
        if (acc >= p->top_p * total) {
            nucleus = i + 1;
            break;
        }
    }
    double mass = 0;
    for (int32_t i = 0; i < nucleus; i++)
        mass += w[i];
    for (int32_t i = 0; i < n; i++)
        q[i] = 0;
    for (int32_t i = 0; i < nucleus; i++)
        q[order[i]] = w[i] / mass;
}

/* A one-token draft x verified with the engine's sampler (draw y with the request's seed and
 * draw index; accept x when y == x, else emit y): over 40,000 draws, x is accepted with
 * probability p(x) and a rejection emits y from p with x removed and renormalised, for
 * temperature, top-k and top-p. Tolerance: 5 standard errors per probability (a false failure
 * has odds well under 1e-5 per check; the seed is fixed, so the outcome is too). */
Test(spec, point_mass_acceptance_keeps_the_sampling_distribution)
{
    enum { V = 12, N = 40000 };
    const float logits[V] = {1.3f, -0.4f, 2.1f, 0.2f, 1.9f, -1.5f, 0.9f, 0.05f, -0.8f, 1.1f,
                             0.6f, -2.2f};
    const eng_sampler_params cases[] = {
        {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 11},
        {.temperature = 0.7f, .top_k = 6, .top_p = 1.0f, .seed = 12},
        {.temperature = 1.3f, .top_k = 0, .top_p = 0.8f, .seed = 13},
    };
    const int32_t drafts[] = {2, 9, 4}; /* a likely token, a middling one, the second best */
    float scratch[V];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double p[V];
        reference_probs(logits, V, &cases[c], p);
        int32_t x = drafts[c];
        cr_assert(p[x] > 0.05 && p[x] < 0.95, "case %zu: draft %d has p %.3f", c, x, p[x]);
        int64_t accepted = 0, rejected_as[V] = {0};
        for (uint64_t step = 0; step < N; step++) {
            int32_t y = eng_sample(logits, V, &cases[c], step, scratch);
            if (spec_accept_count(&x, 1, &y) == 1) {
                accepted++;
            } else {
                cr_assert_neq(y, x);
                rejected_as[y]++;
            }
        }
        double pa = (double)accepted / N, se = sqrt(p[x] * (1 - p[x]) / N);
        cr_assert(fabs(pa - p[x]) < 5 * se, "case %zu: accepted %.4f, p(x) %.4f", c, pa, p[x]);
        int64_t nrej = N - accepted;
        for (int32_t i = 0; i < V; i++) {
            double want = i == x ? 0 : p[i] / (1 - p[x]);
            double got = (double)rejected_as[i] / (double)nrej;
            double sei = sqrt(want * (1 - want) / (double)nrej) + 1e-9;
            cr_assert(fabs(got - want) < 5 * sei + 1e-9,
                      "case %zu: after a rejection token %d came %.4f of the time, want %.4f", c,
                      i, got, want);
        }
    }
}

/* ---- through the engine ------------------------------------------------------------------- */

enum { MAX_OUT = 256 };
#define TEST_KV_BYTES ((int64_t)128 << 20) /* a small pool keeps the per-step check quick */

typedef struct run_out {
    int32_t toks[MAX_OUT];
    int32_t n;
    char text[8192];
    size_t len;
    eng_finish finish;
} run_out;

static eng_engine *make_engine_len(const eng_model *m, eng_speculate spec, int64_t kv_bytes,
                                   int32_t max_seq_len, eng_schedule schedule)
{
    eng_engine_config cfg = eng_engine_config_defaults();
    cfg.schedule = schedule;
    cfg.n_threads = 2;
    cfg.check_invariants = true; /* the KV pool's accounting after every step */
    cfg.speculate = spec;
    cfg.kv_bytes = kv_bytes ? kv_bytes : TEST_KV_BYTES;
    cfg.max_seq_len = max_seq_len;
    eng_engine *e = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_engine_create(m, &cfg, &e, &err), ENG_OK, "%s", err.msg);
    return e;
}

static eng_engine *make_engine(const eng_model *m, eng_speculate spec, int64_t kv_bytes)
{
    return make_engine_len(m, spec, kv_bytes, 1024, ENG_SCHEDULE_LATENCY); /* the default */
}

typedef struct job {
    const char *text;
    int32_t max_tokens;
    const char *stop; /* NULL: none */
    float temperature;
    uint64_t seed;
} job;

static eng_request *submit(eng_engine *e, const job *j)
{
    eng_request_params p = eng_request_params_defaults();
    p.text = j->text;
    p.text_len = strlen(j->text);
    p.max_tokens = j->max_tokens;
    p.sampling.temperature = j->temperature;
    p.sampling.seed = j->seed;
    const char *stops[1] = {j->stop};
    if (j->stop) {
        p.stop = stops;
        p.n_stop = 1;
    }
    eng_request *r = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_OK, "%s", err.msg);
    return r;
}

static void drain(eng_request *r, run_out *o)
{
    memset(o, 0, sizeof *o);
    for (;;) {
        eng_request_output out;
        cr_assert_eq(eng_request_read(r, o->text + o->len, sizeof o->text - o->len, 60000, &out),
                     ENG_OK);
        o->len += out.text_len;
        if (out.done) {
            o->finish = out.finish;
            break;
        }
        cr_assert(out.text_len > 0 || out.n_new_tokens > 0, "read timed out after 60 s");
    }
    o->n = eng_request_tokens(r, o->toks, MAX_OUT);
    eng_request_release(r);
}

/* Runs the jobs concurrently (submitted together: they decode in one batch) on engine e. */
static void run_jobs(eng_engine *e, const job *jobs, int n, run_out *outs)
{
    eng_request *rs[16];
    cr_assert(n <= 16);
    for (int i = 0; i < n; i++)
        rs[i] = submit(e, &jobs[i]);
    for (int i = 0; i < n; i++)
        drain(rs[i], &outs[i]);
}

static void assert_same(const run_out *on, const run_out *off, const char *what)
{
    cr_assert_eq(on->n, off->n, "%s: %d tokens with speculation, %d without", what, on->n,
                 off->n);
    for (int32_t i = 0; i < on->n; i++)
        cr_assert_eq(on->toks[i], off->toks[i], "%s: token %d is %d with speculation, %d without",
                     what, i, on->toks[i], off->toks[i]);
    cr_assert_eq(on->len, off->len, "%s: text length %zu vs %zu", what, on->len, off->len);
    cr_assert(memcmp(on->text, off->text, on->len) == 0, "%s: texts differ", what);
    cr_assert_eq(on->finish, off->finish, "%s: finish %s vs %s", what, eng_finish_str(on->finish),
                 eng_finish_str(off->finish));
}

/* Code that repeats itself (drafts get accepted) and prose that does not. */
static const char CODE[] =
    "def parse_header(line):\n"
    "    key, _, value = line.partition(':')\n"
    "    return key.strip().lower(), value.strip()\n\n"
    "def parse_headers(lines):\n"
    "    headers = {}\n"
    "    for line in lines:\n"
    "        key, value = parse_header(line)\n"
    "        headers[key] = value\n"
    "    return headers\n\n"
    "def parse_cookie(line):\n"
    "    key, _, value = line.partition('=')\n"
    "    return key.strip().lower(), value.strip()\n\n"
    "def parse_cookies(lines):\n"
    "    cookies = {}\n"
    "    for line in lines:\n";
static const char CODE2[] =
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
    "class Size:\n    def __init__(self, width, height):\n        self.width = width\n";
static const char PROSE[] = "Tell me about the weather on the coast of Norway in winter.";

/* Each job alone and all together, with speculation on and off: the same tokens, text and
 * finish reason. Returns the stats of the speculating engine. */
static void compare_on_off(const eng_model *m, const job *jobs, int n, eng_engine_stats *st)
{
    run_out on[16], off[16];
    eng_engine *e_on = make_engine(m, ENG_SPECULATE_ON, 0);
    eng_engine *e_off = make_engine(m, ENG_SPECULATE_OFF, 0);
    run_jobs(e_on, jobs, n, on);
    run_jobs(e_off, jobs, n, off);
    char what[64];
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "job %d batched", i);
        assert_same(&on[i], &off[i], what);
    }
    for (int i = 0; i < n; i++) { /* alone: a batch of one drafts the most */
        run_jobs(e_on, &jobs[i], 1, &on[i]);
        snprintf(what, sizeof what, "job %d alone", i);
        assert_same(&on[i], &off[i], what);
    }
    eng_engine_stats_get(e_on, st);
    eng_engine_stats off_st;
    eng_engine_stats_get(e_off, &off_st);
    cr_assert_eq(off_st.spec_drafted, 0, "speculation off drafts nothing");
    cr_assert_eq(off_st.spec_passes, 0);
    eng_engine_free(e_on);
    eng_engine_free(e_off);
}

static char *synth_tiny(void)
{
    char *path = tu_temp_path(".gguf");
    char *bin = tu_bin_path("serval-synth");
    char *argv[] = {bin, "--preset", "tiny", "--vocab-from", (char *)tu_default_model(),
                    "--out", path, NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 120);
    cr_assert_eq(rc, 0, "serval-synth failed: %s", err ? err : "");
    free(err);
    free(bin);
    return path;
}

static eng_model *load_model(const char *path)
{
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(path, &m, &err), ENG_OK, "%s", err.msg);
    return m;
}

/* The tiny random model rejects most drafts (and loops, which drafts then match): greedy and
 * seeded sampling give the same output with speculation on and off, alone and batched, with
 * every step's KV accounting checked after rollbacks. */
Test(spec, tiny_model_output_is_the_same_with_speculation_on_and_off, .timeout = 300)
{
    char *path = synth_tiny();
    eng_model *m = load_model(path);
    const job jobs[] = {
        {CODE, 60, NULL, 0, 0},        {PROSE, 33, NULL, 0, 0},     {CODE2, 7, NULL, 0, 0},
        {CODE, 48, NULL, 0.8f, 1234},  {CODE2, 40, NULL, 1.1f, 99}, {PROSE, 1, NULL, 0, 0},
    };
    eng_engine_stats st;
    compare_on_off(m, jobs, (int)(sizeof jobs / sizeof jobs[0]), &st);
    cr_assert_gt(st.spec_passes, 0, "the tiny model's contexts gave no draft at all");
    cr_assert_lt(st.spec_accepted, st.spec_drafted, "no draft was rejected: rollback untested");
    eng_model_free(m);
    unlink(path);
    free(path);
}

/* The default model on code: drafts are accepted (more than one token per verification pass)
 * and greedy output is unchanged token for token, for code and prose, alone and batched. */
Test(spec, default_model_greedy_output_is_unchanged_and_drafts_pay_on_code, .timeout = 300)
{
    eng_model *m = load_model(tu_default_model());
    const job jobs[] = {
        {CODE, 48, NULL, 0, 0},
        {CODE2, 40, NULL, 0, 0},
        {PROSE, 24, NULL, 0, 0},
        {CODE, 32, NULL, 0.7f, 5}, /* seeded: the same draws with and without speculation */
    };
    eng_engine_stats st;
    compare_on_off(m, jobs, (int)(sizeof jobs / sizeof jobs[0]), &st);
    cr_assert_gt(st.spec_accepted, 0);
    double per_pass = (double)st.spec_tokens / (double)st.spec_passes;
    /* More than one token per pass is a gain; how many depends on which steps drafted, and
     * the latency schedule's step sizes follow measured times (1.49 seen on a fresh clone) */
    cr_assert_gt(per_pass, 1.3, "tokens per verification pass %.2f (accepted %lld of %lld)",
                 per_pass, (long long)st.spec_accepted, (long long)st.spec_drafted);
    eng_model_free(m);
}

/* Stops that land inside an accepted run: max_tokens at lengths up to 24, and stop
 * strings cut out of the middle of the output, end exactly where they do without speculation
 * (tokens, published text and finish reason). */
Test(spec, max_tokens_and_stop_strings_inside_an_accepted_run, .timeout = 300)
{
    eng_model *m = load_model(tu_default_model());
    eng_engine *e_on = make_engine(m, ENG_SPECULATE_ON, 0);
    eng_engine *e_off = make_engine(m, ENG_SPECULATE_OFF, 0);
    run_out full, on, off;
    job j = {CODE, 24, NULL, 0, 0};
    run_jobs(e_off, &j, 1, &full);
    cr_assert_eq(full.n, 24);
    char what[96];
    static const int32_t lens[] = {1, 2, 3, 4, 6, 9, 13, 18, 23};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int32_t n = lens[li];
        j.max_tokens = n;
        run_jobs(e_on, &j, 1, &on);
        cr_assert_eq(on.n, n);
        cr_assert_eq(on.finish, ENG_FINISH_LENGTH);
        for (int32_t i = 0; i < n; i++)
            cr_assert_eq(on.toks[i], full.toks[i], "max_tokens %d: token %d", n, i);
    }
    /* stop strings: 3 bytes starting at several offsets of the full output */
    char stop[8];
    for (size_t at = 4; at + 3 <= full.len && at < 60; at += 13) {
        memcpy(stop, full.text + at, 3);
        stop[3] = '\0';
        j = (job){CODE, 24, stop, 0, 0};
        run_jobs(e_on, &j, 1, &on);
        run_jobs(e_off, &j, 1, &off);
        snprintf(what, sizeof what, "stop \"%s\" at byte %zu", stop, at);
        assert_same(&on, &off, what);
        cr_assert_eq(on.finish, ENG_FINISH_STOP, "%s", what);
        cr_assert(on.len <= at, "%s: %zu bytes published", what, on.len);
    }
    eng_engine_stats st;
    eng_engine_stats_get(e_on, &st);
    cr_assert_gt(st.spec_accepted, 0);
    eng_engine_free(e_on);
    eng_engine_free(e_off);
    eng_model_free(m);
}

/* After rollbacks the prefix cache holds only verified tokens: the same prompt again reuses
 * the blocks the first run committed and produces the same output, and under a KV pool so
 * small that sequences are preempted and recomputed, outputs are still unchanged (every step
 * checks the pool's invariants). */
Test(spec, prefix_cache_and_preemption_keep_outputs_after_rollback, .timeout = 300)
{
    eng_model *m = load_model(tu_default_model());
    eng_engine *e_off = make_engine(m, ENG_SPECULATE_OFF, 0);
    job j = {CODE2, 40, NULL, 0, 0};
    run_out ref, a, b;
    run_jobs(e_off, &j, 1, &ref);
    eng_engine_free(e_off);
    eng_engine *e = make_engine(m, ENG_SPECULATE_ON, 0);
    run_jobs(e, &j, 1, &a);
    run_jobs(e, &j, 1, &b);
    assert_same(&a, &ref, "first run");
    assert_same(&b, &ref, "second run, from the prefix cache");
    eng_engine_stats st;
    eng_engine_stats_get(e, &st);
    cr_assert_gt(st.prompt_tokens_cached, 0);
    eng_engine_free(e);

    /* 4 sequences of 100-200 tokens in a pool of 16 blocks of 16 (256 positions): they are
     * preempted and recomputed */
    job js[4] = {{CODE2, 40, NULL, 0, 0}, {CODE, 40, NULL, 0, 0}, {PROSE, 40, NULL, 0, 0},
                 {CODE, 30, NULL, 0.9f, 7}};
    run_out on[4], off[4];
    e_off = make_engine(m, ENG_SPECULATE_OFF, 0);
    run_jobs(e_off, js, 4, off);
    eng_engine_stats_get(e_off, &st);
    int64_t kv_bytes = TEST_KV_BYTES / st.kv_blocks_total * 16; /* the least for 256 */
    eng_engine_free(e_off);
    /* the throughput schedule admits every prompt that fits, so the small pool preempts */
    e = make_engine_len(m, ENG_SPECULATE_ON, kv_bytes, 256, ENG_SCHEDULE_THROUGHPUT);
    run_jobs(e, js, 4, on);
    for (int i = 0; i < 4; i++)
        assert_same(&on[i], &off[i], "small pool");
    eng_engine_stats_get(e, &st);
    cr_assert_gt(st.preemptions, 0, "the pool was not small enough to preempt");
    cr_assert_gt(st.spec_passes, 0);
    eng_engine_free(e);
    eng_model_free(m);
}
