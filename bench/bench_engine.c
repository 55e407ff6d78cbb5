/* bench_engine.c — offline throughput of the continuous-batching engine: M requests submitted
 * at once (prompt/output tokens per second, batch sizes, KV use and waste), a completion-replay
 * mode where simulated developers send keystroke after keystroke sharing most of the prefix,
 * and time to first token for one long prompt with and without a prefix-cache hit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "model.h"
#include "serval_engine.h"

static void usage(FILE *o)
{
    fprintf(o,
            "usage: bench_engine --model PATH [--mode batch|replay|ttft] [options]\n"
            "\n"
            "  batch   M requests (--requests) of --prompt tokens each, --output tokens out,\n"
            "          all submitted at once; prints prompt and output tokens/s, batch sizes\n"
            "          reached and KV use/waste. Prompts differ from their first token on.\n"
            "  replay  --devs developers, each sending --keystrokes requests in turn; every\n"
            "          request is the previous prompt plus --typed new tokens (a developer\n"
            "          typing), --output tokens out; prints TTFT percentiles and prefix-cache hits.\n"
            "  ttft    one --prompt-token prompt cold, then the same prompt plus a few tokens (a\n"
            "          prefix-cache hit), 1 output token; prints both times to first token.\n"
            "\n"
            "  --backend cpu|cuda   (default cpu)   --bandwidth-gbs X  memory ceiling for the\n"
            "          decode roofline (GB/s; e.g. the device's measured copy bandwidth)\n"
            "  --threads N   CPU threads (default: online CPUs)   --kv-mb MB (default 1024;\n"
            "          0 on cuda: 90%% of free GPU memory)\n"
            "  --tflops X   compute ceiling for the prefill roofline (TFLOP/s)\n"
            "  --tp N   tensor parallelism over N ranks (default 1; cpu: thread groups sharing\n"
            "          --threads)\n"
            "  --max-running N  (default 64)   --step-tokens N (default 512)\n"
            "  --no-prefix-cache   turn prefix caching off\n"
            "  --mixed   batch mode: request i asks for between half and all of --prompt and\n"
            "          --output tokens (a mixed run)\n"
            "  --no-graphs   cuda: launch decode steps kernel by kernel (no CUDA graphs)\n"
            "  --fp16   cuda: fp16 weights and activations instead of bf16\n");
}

typedef struct opts {
    const char *model, *mode;
    int requests, prompt, output, devs, keystrokes, typed, threads, max_running, step_tokens, tp;
    long kv_mb;
    int prefix, mixed, no_graphs, fp16;
    const char *backend;
    double bw_gbs, tflops;
} opts;

/* Deterministic "text": token ids spread over the vocabulary, different per stream. */
static void fill_tokens(int32_t *ids, int n, uint64_t stream, int32_t n_vocab)
{
    uint64_t s = stream * 0x9E3779B97F4A7C15ULL + 1;
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ids[i] = 300 + (int32_t)(s % (uint64_t)(n_vocab - 400)); /* skip control tokens */
    }
}

static eng_request *submit(eng_engine *e, const int32_t *ids, int n, int out)
{
    eng_request_params p = eng_request_params_defaults();
    p.tokens = ids;
    p.n_tokens = n;
    p.max_tokens = out;
    p.ignore_eos = true;
    eng_request *r = NULL;
    eng_err err;
    if (eng_submit(e, &p, &r, &err) != ENG_OK) {
        fprintf(stderr, "bench_engine: submit failed: %s\n", err.msg);
        exit(1);
    }
    return r;
}

/* Waits for the end of r; returns its output record. */
static eng_request_output wait_done(eng_request *r)
{
    char buf[4096];
    eng_request_output o;
    do
        eng_request_read(r, buf, sizeof buf, -1, &o);
    while (!o.done);
    return o;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Weights in the matrices a token goes through (layers and the output head). */
static double param_count(const eng_hparams *hp)
{
    double d = hp->n_embd, dq = (double)hp->n_head * hp->head_dim;
    double kvd = (double)hp->n_head_kv * hp->head_dim;
    double per_layer = d * (dq + 2 * kvd) + dq * d + 3 * d * hp->n_ff;
    return hp->n_layer * per_layer + (double)hp->n_vocab * d;
}

/* Bytes of weights one decode step reads: as stored on the CPU, bf16 on the GPU. */
static double step_weight_bytes(const eng_model *m, const opts *o)
{
    if (strcmp(o->backend, "cuda") != 0)
        return (double)eng_model_weight_bytes(m);
    return 2.0 * param_count(&m->hp);
}

/* With --mixed, request i asks for between half and all of n (a fixed, uneven spread). */
static int req_len(int n, int mixed, int i)
{
    if (!mixed)
        return n;
    int l = n / 2 + (int)(((unsigned)i * 2654435761u) % (unsigned)(n / 2 + 1));
    return l > 0 ? l : 1;
}

static void run_batch(eng_engine *e, const opts *o, int32_t n_vocab)
{
    int m = o->requests;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)o->prompt * (size_t)m);
    eng_request **rs = malloc(sizeof *rs * (size_t)m);
    for (int i = 0; i < m; i++)
        fill_tokens(ids + (size_t)i * (size_t)o->prompt, o->prompt, (uint64_t)i + 1, n_vocab);
    eng_engine_stats s0, s;
    eng_engine_stats_get(e, &s0);
    double t0 = eng_clock_ms();
    for (int i = 0; i < m; i++)
        rs[i] = submit(e, ids + (size_t)i * (size_t)o->prompt, req_len(o->prompt, o->mixed, i),
                       req_len(o->output, o->mixed, i + 7));
    /* sample KV use while it runs */
    double waste_sum = 0;
    int waste_n = 0, peak_used = 0;
    double last_waste = 0, t_dec0 = 0;
    int n_first = 0;
    int64_t gen_dec0 = 0;
    for (;;) {
        eng_engine_stats_get(e, &s);
        if (s.kv_slots_reserved > 0) {
            last_waste = 1.0 - (double)s.kv_slots_filled / (double)s.kv_slots_reserved;
            waste_sum += last_waste;
            waste_n++;
        }
        if (s.kv_blocks_used > peak_used)
            peak_used = s.kv_blocks_used;
        /* the decode phase starts once every request has its first token */
        for (; n_first < m; n_first++) {
            char b0[1];
            eng_request_output ro;
            eng_request_read(rs[n_first], b0, 0, 0, &ro);
            if (ro.n_output_tokens == 0)
                break;
        }
        if (n_first == m && t_dec0 == 0) {
            t_dec0 = eng_clock_ms();
            gen_dec0 = s.tokens_generated - s0.tokens_generated;
        }
        if (s.running == 0 && s.waiting == 0 &&
            s.requests_finished - s0.requests_finished >= m)
            break;
        usleep(2000);
    }
    double t1 = eng_clock_ms();
    double first_max = 0, per_seq = 0;
    for (int i = 0; i < m; i++) {
        eng_request_output out = wait_done(rs[i]);
        if (out.first_token_ms > first_max)
            first_max = out.first_token_ms;
        double dec_ms = out.total_ms - out.first_token_ms;
        if (dec_ms > 0 && out.n_output_tokens > 1)
            per_seq += (out.n_output_tokens - 1) * 1e3 / dec_ms;
        eng_request_release(rs[i]);
    }
    int64_t gen = s.tokens_generated - s0.tokens_generated;
    int64_t pre = s.prompt_tokens_computed - s0.prompt_tokens_computed;
    double secs = (t1 - t0) / 1e3;
    printf("batch: %d requests x (%d prompt + %d output) tokens in %.2f s\n", m, o->prompt,
           o->output, secs);
    /* every prompt is in once the last request has its first token */
    printf("  prompt: %lld tokens computed, %.1f tok/s (all prompts in after %.2f s)\n",
           (long long)pre, pre / (first_max / 1e3), first_max / 1e3);
    printf("  output: %lld tokens, %.1f tok/s aggregate over the run; decode %.1f tok/s per "
           "sequence (mean of %d), %.1f aggregate\n",
           (long long)gen, gen / secs, per_seq / m, m, per_seq);
    double dec_rate = t_dec0 > 0 && t1 > t_dec0 ? (double)(gen - gen_dec0) * 1e3 / (t1 - t_dec0) : 0;
    printf("  decode phase (every request past its first token): %lld tokens in %.2f s, %.1f tok/s "
           "aggregate, %.1f per sequence\n",
           (long long)(gen - gen_dec0), (t1 - t_dec0) / 1e3, dec_rate, dec_rate / m);
    printf("  batches: %lld steps, max %d sequences / %d tokens per step, mean %.1f sequences, "
           "mean step %.1f ms\n",
           (long long)(s.steps - s0.steps), s.max_batch_seqs, s.max_batch_tokens,
           s.mean_batch_seqs, s.mean_step_ms);
    printf("  KV: %d of %d blocks peak (%d tokens each), waste (reserved but empty slots) "
           "%.2f%% mean, %.2f%% at the last sample; %lld preemptions\n",
           peak_used, s.kv_blocks_total, s.block_size, waste_n ? 100 * waste_sum / waste_n : 0,
           100 * last_waste, (long long)(s.preemptions - s0.preemptions));
    printf("  slowest first token %.0f ms\n", first_max);
    /* decode roofline: each step reads all weights once plus every sequence's K/V */
    const eng_model *mm = eng_engine_model(e);
    const eng_hparams *hp = &mm->hp;
    double wb = step_weight_bytes(mm, o);
    double kv_tok = 2.0 * 2 * hp->n_layer * (double)hp->n_head_kv * hp->head_dim;
    double mean_ctx = o->prompt + o->output / 2.0;
    double bytes_step = wb + kv_tok * mean_ctx * m;
    double steps_per_s = dec_rate > 0 ? dec_rate / m : per_seq / m;
    printf("  decode roofline: %.1f MB weights + %.1f MB KV per step at batch %d; %.1f steps/s "
           "-> %.1f GB/s",
           wb / 1e6, kv_tok * mean_ctx * m / 1e6, m, steps_per_s, bytes_step * steps_per_s / 1e9);
    if (o->bw_gbs > 0)
        printf(" = %.1f%% of %.0f GB/s", 100 * bytes_step * steps_per_s / 1e9 / o->bw_gbs,
               o->bw_gbs);
    printf("\n");
    /* prefill roofline: 2 FLOPs per weight per token, plus attention (QK and PV) */
    double dq = (double)hp->n_head * hp->head_dim;
    double flop_tok = 2 * param_count(hp) + 2.0 * 2 * hp->n_layer * dq * (o->prompt / 2.0);
    double pre_s = first_max / 1e3;
    double tf = (double)pre * flop_tok / pre_s / 1e12;
    printf("  prefill roofline: %.2f GFLOP per token -> %.2f TFLOP/s", flop_tok / 1e9, tf);
    if (o->tflops > 0)
        printf(" = %.1f%% of %.0f TFLOP/s", 100 * tf / o->tflops, o->tflops);
    printf("\n");
    free(ids);
    free(rs);
}

static void run_replay(eng_engine *e, const opts *o, int32_t n_vocab)
{
    int d = o->devs, k = o->keystrokes;
    int full = o->prompt + o->typed * k;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)full * (size_t)d);
    for (int i = 0; i < d; i++)
        fill_tokens(ids + (size_t)i * (size_t)full, full, (uint64_t)i + 101, n_vocab);
    double *ttft = malloc(sizeof(double) * (size_t)d * (size_t)k);
    int nt = 0;
    eng_engine_stats s0, s;
    eng_engine_stats_get(e, &s0);
    double t0 = eng_clock_ms();
    int64_t cached = 0, prompt_total = 0;
    /* every developer has one request in flight; the next keystroke follows its answer */
    eng_request **cur = calloc((size_t)d, sizeof *cur);
    int *step = calloc((size_t)d, sizeof *step);
    for (int i = 0; i < d; i++)
        cur[i] = submit(e, ids + (size_t)i * (size_t)full, o->prompt, o->output);
    for (int left = d; left > 0;) {
        for (int i = 0; i < d; i++) {
            if (!cur[i])
                continue;
            char buf[4096];
            eng_request_output out;
            eng_request_read(cur[i], buf, sizeof buf, 1, &out);
            if (!out.done)
                continue;
            ttft[nt++] = out.first_token_ms;
            cached += out.n_cached_tokens;
            prompt_total += out.n_prompt_tokens;
            eng_request_release(cur[i]);
            cur[i] = NULL;
            if (++step[i] < k)
                cur[i] = submit(e, ids + (size_t)i * (size_t)full, o->prompt + o->typed * step[i],
                                o->output);
            else
                left--;
        }
    }
    double secs = (eng_clock_ms() - t0) / 1e3;
    eng_engine_stats_get(e, &s);
    qsort(ttft, (size_t)nt, sizeof *ttft, cmp_double);
    int64_t gen = s.tokens_generated - s0.tokens_generated;
    printf("replay: %d developers x %d keystrokes (prompt %d tokens, +%d per keystroke, %d out) "
           "in %.2f s\n",
           d, k, o->prompt, o->typed, o->output, secs);
    printf("  %.1f requests/s, %.1f output tok/s; prompt tokens reused from the prefix cache: "
           "%.1f%% (%lld of %lld)\n",
           nt / secs, gen / secs, 100.0 * (double)cached / (double)prompt_total,
           (long long)cached, (long long)prompt_total);
    printf("  time to first token: p50 %.1f ms, p95 %.1f ms, max %.1f ms\n", ttft[nt / 2],
           ttft[(nt * 95) / 100 < nt ? (nt * 95) / 100 : nt - 1], ttft[nt - 1]);
    printf("  computed %lld prompt tokens; mean %.1f sequences per step\n",
           (long long)(s.prompt_tokens_computed - s0.prompt_tokens_computed), s.mean_batch_seqs);
    free(ids);
    free(ttft);
    free(cur);
    free(step);
}

static void run_ttft(eng_engine *e, const opts *o, int32_t n_vocab)
{
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(o->prompt + 8));
    fill_tokens(ids, o->prompt + 8, 7, n_vocab);
    eng_request *r = submit(e, ids, o->prompt, 1);
    eng_request_output cold = wait_done(r);
    eng_request_release(r);
    r = submit(e, ids, o->prompt + 8, 1);
    eng_request_output hit = wait_done(r);
    eng_request_release(r);
    printf("ttft: %d-token prompt cold %.1f ms; +8 tokens with a prefix-cache hit (%d cached) "
           "%.1f ms; speed-up %.1fx\n",
           o->prompt, cold.first_token_ms, hit.n_cached_tokens, hit.first_token_ms,
           cold.first_token_ms / hit.first_token_ms);
    free(ids);
}

int main(int argc, char **argv)
{
    opts o = {.mode = "batch", .requests = 16, .prompt = 128, .output = 64, .devs = 8,
              .keystrokes = 8, .typed = 4, .max_running = 64, .step_tokens = 512,
              .kv_mb = 1024, .prefix = 1, .backend = "cpu"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-prefix-cache")) {
            o.prefix = 0;
            continue;
        } else if (!strcmp(a, "--mixed")) {
            o.mixed = 1;
            continue;
        } else if (!strcmp(a, "--no-graphs")) {
            o.no_graphs = 1;
            continue;
        } else if (!strcmp(a, "--fp16")) {
            o.fp16 = 1;
            continue;
        } else if (!v) {
            fprintf(stderr, "bench_engine: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--mode")) o.mode = v;
        else if (!strcmp(a, "--requests")) o.requests = atoi(v);
        else if (!strcmp(a, "--prompt")) o.prompt = atoi(v);
        else if (!strcmp(a, "--output")) o.output = atoi(v);
        else if (!strcmp(a, "--devs")) o.devs = atoi(v);
        else if (!strcmp(a, "--keystrokes")) o.keystrokes = atoi(v);
        else if (!strcmp(a, "--typed")) o.typed = atoi(v);
        else if (!strcmp(a, "--threads")) o.threads = atoi(v);
        else if (!strcmp(a, "--tp")) o.tp = atoi(v);
        else if (!strcmp(a, "--kv-mb")) o.kv_mb = atol(v);
        else if (!strcmp(a, "--max-running")) o.max_running = atoi(v);
        else if (!strcmp(a, "--step-tokens")) o.step_tokens = atoi(v);
        else if (!strcmp(a, "--backend")) o.backend = v;
        else if (!strcmp(a, "--bandwidth-gbs")) o.bw_gbs = atof(v);
        else if (!strcmp(a, "--tflops")) o.tflops = atof(v);
        else {
            fprintf(stderr, "bench_engine: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o.model || o.requests < 1 || o.prompt < 1 || o.output < 1 || o.devs < 1 ||
        o.keystrokes < 1 || o.typed < 0) {
        usage(stderr);
        return 2;
    }
    eng_model *m = NULL;
    eng_err err;
    if (eng_model_load(o.model, &m, &err) != ENG_OK) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    eng_engine_config c = eng_engine_config_defaults();
    c.n_threads = o.threads;
    c.tp = o.tp;
    c.kv_bytes = (int64_t)o.kv_mb << 20;
    c.max_running = o.max_running;
    c.max_waiting = o.requests + o.devs + 16;
    c.step_tokens = o.step_tokens;
    c.prefix_caching = o.prefix != 0;
    c.no_cuda_graphs = o.no_graphs != 0;
    c.cuda_fp16 = o.fp16 != 0;
    if (!strcmp(o.backend, "cuda")) {
        c.backend = ENG_BACKEND_CUDA;
    } else if (strcmp(o.backend, "cpu") != 0) {
        fprintf(stderr, "bench_engine: --backend is cpu or cuda\n");
        return 2;
    }
    eng_engine *e = NULL;
    if (eng_engine_create(m, &c, &e, &err) != ENG_OK) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        eng_model_free(m);
        return 1;
    }
    printf("model %s, backend %s, %d threads, tp %d, prefix cache %s\n", m->hp.name,
           o.backend, c.n_threads, c.tp > 1 ? c.tp : 1, o.prefix ? "on" : "off");
    int rc = 0;
    if (!strcmp(o.mode, "batch")) run_batch(e, &o, m->hp.n_vocab);
    else if (!strcmp(o.mode, "replay")) run_replay(e, &o, m->hp.n_vocab);
    else if (!strcmp(o.mode, "ttft")) run_ttft(e, &o, m->hp.n_vocab);
    else {
        fprintf(stderr, "bench_engine: unknown mode %s\n", o.mode);
        rc = 2;
    }
    eng_engine_free(e);
    eng_model_free(m);
    return rc;
}
