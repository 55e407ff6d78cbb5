/* bench_spec.c — speculative decoding drafted from the prompt (engine/batch/spec.h): decode
 * tokens/s with speculation on and off at several batch sizes on code-completion prompts cut
 * from real source files, with the acceptance rate and tokens per verification pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "clock.h"
#include "serval_engine.h"

static void usage(FILE *o)
{
    fprintf(o,
            "usage: bench_spec --model PATH [options]\n"
            "\n"
            "For each batch size B, B requests are submitted at once, each a code prompt (the first\n"
            "--prompt-bytes of a source file, cut at a line end) continued greedily for exactly\n"
            "--output tokens (EOS ignored), once with speculation off and once on. The prompts\n"
            "are computed once beforehand (a 1-token request each), so the timed run is almost\n"
            "all decode. Prints decode tokens/s (output tokens after the first, over the time\n"
            "from the first first token to the last finish) and output tokens per CPU-second of\n"
            "the process (steadier than wall time on a shared machine), the ratios on/off,\n"
            "drafted and accepted tokens, acceptance rate and tokens per verification pass.\n"
            "\n"
            "  --backend cpu|cuda   (default cpu)     --threads N  (default: online CPUs)\n"
            "  --batch LIST   batch sizes, comma separated (default 1,2,4,8)\n"
            "  --output N     tokens per request (default 128)\n"
            "  --prompt-bytes N  bytes of each file (default 3000, about 800 tokens)\n"
            "  --code-dir DIR    where the files are (default /usr/lib/python3.11)\n"
            "  --files LIST   comma-separated file names under DIR (default: 8 standard modules)\n"
            "  --draft-max N  (default: the engine's)   --spec-step-tokens N (default: the\n"
            "                 backend's; drafts only while a step stays within N tokens)\n"
            "  --kv-mb MB     KV pool (default 512 on cpu, 0 = the backend's on cuda)\n"
            "  --repeat N     runs of each (off, on) pair, interleaved; the best of each is\n"
            "                 shown (default 3: a shared machine's noise only slows runs down)\n");
}

typedef struct opts {
    const char *model, *backend, *code_dir, *files;
    int threads, output, prompt_bytes, draft_max, spec_step_tokens, repeat;
    int batch[16], n_batch;
    long kv_mb;
} opts;

static const char *DEFAULT_FILES =
    "argparse.py,dataclasses.py,textwrap.py,csv.py,json/decoder.py,shutil.py,tempfile.py,"
    "statistics.py";

enum { MAX_FILES = 16 };

/* The first max bytes of dir/name cut after the last newline; malloc'd, NULL if unreadable. */
static char *read_prefix(const char *dir, const char *name, int max, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc((size_t)max + 1);
    size_t n = buf ? fread(buf, 1, (size_t)max, f) : 0;
    fclose(f);
    if (!buf || n == 0) {
        free(buf);
        return NULL;
    }
    while (n > 0 && buf[n - 1] != '\n')
        n--;
    buf[n] = '\0';
    *len = n;
    return buf;
}

typedef struct result {
    double decode_tps, wall_s, cpu_tps; /* cpu_tps: output tokens per CPU-second of this process */
    int64_t out_tokens, drafted, accepted, passes, pass_tokens;
} result;

static eng_request *submit(eng_engine *e, const char *text, size_t len, int max_tokens)
{
    eng_request_params p = eng_request_params_defaults();
    p.text = text;
    p.text_len = len;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    eng_request *r = NULL;
    eng_err err = {{0}};
    if (eng_submit(e, &p, &r, &err) != ENG_OK) {
        fprintf(stderr, "bench_spec: submit: %s\n", err.msg);
        exit(1);
    }
    return r;
}

/* Reads r to its end; returns its last output (timings, token counts). */
static eng_request_output drain(eng_request *r)
{
    char buf[4096];
    eng_request_output out;
    do {
        eng_request_read(r, buf, sizeof buf, -1, &out);
    } while (!out.done);
    if (out.finish == ENG_FINISH_ERROR) {
        fprintf(stderr, "bench_spec: request failed: %s\n", out.error);
        exit(1);
    }
    eng_request_release(r);
    return out;
}

/* CPU seconds this process used (all its threads). */
static double cpu_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

static result run_batch(eng_engine *e, char **texts, size_t *lens, int n_texts, int b, int output)
{
    eng_request *rs[64];
    eng_request_output outs[64];
    eng_engine_stats s0, s1;
    eng_engine_stats_get(e, &s0);
    double t0 = eng_clock_ms(), c0 = cpu_seconds();
    for (int i = 0; i < b; i++)
        rs[i] = submit(e, texts[i % n_texts], lens[i % n_texts], output);
    for (int i = 0; i < b; i++)
        outs[i] = drain(rs[i]);
    double wall = eng_clock_ms() - t0, cpu = cpu_seconds() - c0;
    eng_engine_stats_get(e, &s1);
    /* request times are ms since each request's submit; all were submitted at ~t0 */
    double first = 1e300, last = 0;
    int64_t toks = 0;
    for (int i = 0; i < b; i++) {
        first = outs[i].first_token_ms < first ? outs[i].first_token_ms : first;
        last = outs[i].total_ms > last ? outs[i].total_ms : last;
        toks += outs[i].n_output_tokens - 1;
    }
    result r = {.decode_tps = last > first ? (double)toks * 1e3 / (last - first) : 0,
                .wall_s = wall / 1e3, .out_tokens = toks,
                .cpu_tps = cpu > 0 ? (double)(toks + b) / cpu : 0,
                .drafted = s1.spec_drafted - s0.spec_drafted,
                .accepted = s1.spec_accepted - s0.spec_accepted,
                .passes = s1.spec_passes - s0.spec_passes,
                .pass_tokens = s1.spec_tokens - s0.spec_tokens};
    return r;
}

static eng_engine *make_engine(const eng_model *m, const opts *o, eng_speculate spec)
{
    eng_engine_config c = eng_engine_config_defaults();
    c.backend = strcmp(o->backend, "cuda") == 0 ? ENG_BACKEND_CUDA : ENG_BACKEND_CPU;
    c.n_threads = o->threads;
    c.kv_bytes = o->kv_mb * 1024 * 1024;
    c.max_seq_len = 2048;
    c.speculate = spec;
    c.draft_max = o->draft_max;
    c.spec_step_tokens = o->spec_step_tokens;
    eng_engine *e = NULL;
    eng_err err = {{0}};
    if (eng_engine_create(m, &c, &e, &err) != ENG_OK) {
        fprintf(stderr, "bench_spec: engine: %s\n", err.msg);
        exit(1);
    }
    return e;
}

static int parse_opts(int argc, char **argv, opts *o)
{
    *o = (opts){.backend = "cpu", .code_dir = "/usr/lib/python3.11", .files = DEFAULT_FILES,
                .output = 128, .prompt_bytes = 3000, .kv_mb = -1, .repeat = 3};
    const char *batch = "1,2,4,8";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "bench_spec: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--backend")) o->backend = v;
        else if (!strcmp(a, "--threads")) o->threads = atoi(v);
        else if (!strcmp(a, "--batch")) batch = v;
        else if (!strcmp(a, "--output")) o->output = atoi(v);
        else if (!strcmp(a, "--prompt-bytes")) o->prompt_bytes = atoi(v);
        else if (!strcmp(a, "--code-dir")) o->code_dir = v;
        else if (!strcmp(a, "--files")) o->files = v;
        else if (!strcmp(a, "--draft-max")) o->draft_max = atoi(v);
        else if (!strcmp(a, "--spec-step-tokens")) o->spec_step_tokens = atoi(v);
        else if (!strcmp(a, "--kv-mb")) o->kv_mb = atol(v);
        else if (!strcmp(a, "--repeat")) o->repeat = atoi(v);
        else {
            fprintf(stderr, "bench_spec: unknown option %s\n", a);
            return -1;
        }
    }
    if (!o->model || o->output < 2 || o->prompt_bytes < 64 || o->repeat < 1) {
        fprintf(stderr, "bench_spec: --model is required, --output >= 2, --prompt-bytes >= 64, "
                        "--repeat >= 1\n");
        return -1;
    }
    if (o->kv_mb < 0)
        o->kv_mb = strcmp(o->backend, "cuda") == 0 ? 0 : 512;
    for (const char *p = batch; *p && o->n_batch < 16;) {
        int b = atoi(p);
        if (b < 1 || b > 64) {
            fprintf(stderr, "bench_spec: batch sizes are in [1, 64]\n");
            return -1;
        }
        o->batch[o->n_batch++] = b;
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse_opts(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    char *texts[MAX_FILES];
    size_t lens[MAX_FILES];
    int n_texts = 0;
    char *names = strdup(o.files);
    for (char *save = NULL, *t = strtok_r(names, ",", &save); t && n_texts < MAX_FILES;
         t = strtok_r(NULL, ",", &save)) {
        texts[n_texts] = read_prefix(o.code_dir, t, o.prompt_bytes, &lens[n_texts]);
        if (!texts[n_texts]) {
            fprintf(stderr, "bench_spec: cannot read %s/%s\n", o.code_dir, t);
            return 1;
        }
        n_texts++;
    }
    free(names);
    eng_model *m = NULL;
    eng_err err = {{0}};
    if (eng_model_load(o.model, &m, &err) != ENG_OK) {
        fprintf(stderr, "bench_spec: %s\n", err.msg);
        return 1;
    }
    int max_b = 1;
    for (int i = 0; i < o.n_batch; i++)
        max_b = o.batch[i] > max_b ? o.batch[i] : max_b;
    printf("model %s, backend %s, %d files x %d bytes from %s, %d output tokens\n",
           eng_model_name(m), o.backend, n_texts, o.prompt_bytes, o.code_dir, o.output);
    printf("| batch | off tok/s | on tok/s | on/off | off tok/cpu-s | on tok/cpu-s | on/off (cpu) "
           "| drafted | accepted | acceptance | tokens/pass | passes |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    eng_engine *e_off = make_engine(m, &o, ENG_SPECULATE_OFF);
    eng_engine *e_on = make_engine(m, &o, ENG_SPECULATE_ON);
    /* compute every prompt once in each engine: the timed runs hit the prefix cache */
    int n_warm = max_b < n_texts ? max_b : n_texts;
    for (int i = 0; i < n_warm; i++) {
        drain(submit(e_off, texts[i], lens[i], 1));
        drain(submit(e_on, texts[i], lens[i], 1));
    }
    for (int i = 0; i < o.n_batch; i++) {
        int b = o.batch[i];
        result off = {0}, on = {0};
        double cpu_off = 0, cpu_on = 0;
        for (int k = 0; k < o.repeat; k++) {
            result f = run_batch(e_off, texts, lens, n_texts, b, o.output);
            result n = run_batch(e_on, texts, lens, n_texts, b, o.output);
            if (f.decode_tps > off.decode_tps)
                off = f;
            if (n.decode_tps > on.decode_tps)
                on = n; /* greedy: every run drafts and accepts the same */
            cpu_off = f.cpu_tps > cpu_off ? f.cpu_tps : cpu_off;
            cpu_on = n.cpu_tps > cpu_on ? n.cpu_tps : cpu_on;
        }
        printf("| %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %lld | %lld | %.2f | %.2f | %lld |\n",
               b, off.decode_tps, on.decode_tps,
               off.decode_tps > 0 ? on.decode_tps / off.decode_tps : 0, cpu_off, cpu_on,
               cpu_off > 0 ? cpu_on / cpu_off : 0,
               (long long)on.drafted, (long long)on.accepted,
               on.drafted ? (double)on.accepted / (double)on.drafted : 0.0,
               on.passes ? (double)on.pass_tokens / (double)on.passes : 0.0, (long long)on.passes);
        fflush(stdout);
    }
    eng_engine_free(e_on);
    eng_engine_free(e_off);
    eng_model_free(m);
    for (int i = 0; i < n_texts; i++)
        free(texts[i]);
    return 0;
}
