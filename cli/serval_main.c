/* serval_main.c — the `serval` command: argument parsing and the subcommands (complete, serve,
 * help, version). Only main() exits; everything else returns errors. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu_forward.h"
#include "model.h"
#include "sampler.h"
#include "status.h"
#include "tokenizer.h"
#ifdef SERVAL_HAVE_SERVE
#include "serve.h"
#endif

#define MAX_STOPS 16

static void usage_main(FILE *o)
{
    fprintf(o,
            "serval %s — self-hosted code-completion inference server\n"
            "\n"
            "usage: serval <command> [options]\n"
            "\n"
            "commands:\n"
            "  complete   generate a completion for a prompt on the CPU and print it\n"
            "  serve      serve completions and chat over gRPC (see `serval serve --help`)\n"
            "  help       show this help, or `serval help <command>` for one command\n"
            "  version    print the version\n"
            "\n"
            "Run `serval <command> --help` for a command's options.\n",
            SERVAL_VERSION);
}

static void usage_complete(FILE *o)
{
    fprintf(o,
            "usage: serval complete [--model PATH] (--prompt TEXT | --prompt-file PATH) [options]\n"
            "\n"
            "Generates a completion and prints it on stdout; prompt and decode speed go to stderr.\n"
            "\n"
            "  --model PATH        GGUF model (default: %s)\n"
            "  --prompt TEXT       the prompt; special tokens such as <fim_prefix> are recognised\n"
            "  --prompt-file PATH  read the prompt from a file instead ('-' for stdin)\n"
            "  --max-tokens N      most tokens to generate (default 64; 1..context)\n"
            "  --temperature T     0 = greedy (default), otherwise sample at temperature T\n"
            "  --top-k K           sample from the K most likely tokens (default 0 = all)\n"
            "  --top-p P           nucleus sampling mass in (0, 1] (default 1 = off)\n"
            "  --seed S            RNG seed for sampling (default 0); same seed, same output\n"
            "  --stop TEXT         stop before this text (repeatable, up to %d)\n"
            "  --threads K         CPU threads (default: the number of online CPUs)\n"
            "  --ctx N             context size in tokens (default: prompt + max tokens)\n"
            "  --ignore-eos        keep generating past end-of-generation tokens\n"
            "  --quiet             do not print the speed summary\n",
            SERVAL_DEFAULT_MODEL, MAX_STOPS);
}

/* Parses a whole decimal integer in [lo, hi]; false with a message otherwise. */
static bool parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "serval: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_float(const char *flag, const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || v != v) {
        fprintf(stderr, "serval: %s expects a number, got '%s'\n", flag, s);
        return false;
    }
    *out = v;
    return true;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "serval: cannot open prompt file '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > (64u << 20)) {
                fprintf(stderr, "serval: prompt file '%s' is larger than 64 MiB\n", path);
                free(buf);
                buf = NULL;
                break;
            }
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct complete_opts {
    const char *model;
    const char *prompt;
    const char *prompt_file;
    long max_tokens;
    eng_sampler_params sp;
    const char *stops[MAX_STOPS];
    size_t n_stops;
    long threads;
    long ctx;
    bool ignore_eos;
    bool quiet;
} complete_opts;

/* Returns 0 when parsed, 1 on bad usage, 2 when help was printed. */
static int parse_complete(int argc, char **argv, complete_opts *o)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (complete_opts){.model = SERVAL_DEFAULT_MODEL, .max_tokens = 64,
                         .sp = eng_sampler_defaults(), .threads = online > 0 ? online : 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_complete(stdout);
            return 2;
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o->quiet = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "serval complete: unexpected argument '%s' (see --help)\n", a);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "serval complete: %s needs a value (see --help)\n", a);
            return 1;
        }
        const char *v = argv[++i];
        long l;
        if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--prompt-file")) {
            o->prompt_file = v;
        } else if (!strcmp(a, "--max-tokens")) {
            if (!parse_long(a, v, 1, 1 << 20, &o->max_tokens))
                return 1;
        } else if (!strcmp(a, "--temperature")) {
            if (!parse_float(a, v, &o->sp.temperature))
                return 1;
        } else if (!strcmp(a, "--top-k")) {
            if (!parse_long(a, v, 0, INT32_MAX, &l))
                return 1;
            o->sp.top_k = (int32_t)l;
        } else if (!strcmp(a, "--top-p")) {
            if (!parse_float(a, v, &o->sp.top_p))
                return 1;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "serval: --seed expects a non-negative integer, got '%s'\n", v);
                return 1;
            }
            o->sp.seed = s;
        } else if (!strcmp(a, "--stop")) {
            if (o->n_stops == MAX_STOPS) {
                fprintf(stderr, "serval: at most %d --stop strings\n", MAX_STOPS);
                return 1;
            }
            o->stops[o->n_stops++] = v;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_long(a, v, 1, 256, &o->threads))
                return 1;
        } else if (!strcmp(a, "--ctx")) {
            if (!parse_long(a, v, 1, 1 << 24, &o->ctx))
                return 1;
        } else {
            fprintf(stderr, "serval complete: unknown option '%s' (see --help)\n", a);
            return 1;
        }
    }
    if (!o->prompt == !o->prompt_file) {
        fprintf(stderr, "serval complete: give exactly one of --prompt or --prompt-file\n");
        return 1;
    }
    eng_err err = {{0}};
    if (eng_sampler_params_check(&o->sp, 0, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* Writes the bytes that became safe to show, and remembers how many were written. */
static void emit(const eng_stop *stop, size_t keep, size_t *shown)
{
    size_t len;
    const char *out = eng_stop_output(stop, &len);
    if (keep > *shown) {
        fwrite(out + *shown, 1, keep - *shown, stdout);
        fflush(stdout);
        *shown = keep;
    }
}

static int cmd_complete(int argc, char **argv)
{
    complete_opts o;
    int pr = parse_complete(argc, argv, &o);
    if (pr)
        return pr == 2 ? 0 : 2;

    int rc = 1;
    eng_err err = {{0}};
    eng_model *m = NULL;
    eng_cpu_ctx *ctx = NULL;
    eng_sampler *smp = NULL;
    eng_stop *stop = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    char *prompt_buf = NULL;
    size_t prompt_len;
    const char *prompt = o.prompt;
    if (o.prompt_file) {
        if (!(prompt_buf = read_all(o.prompt_file, &prompt_len)))
            goto out;
        prompt = prompt_buf;
    } else {
        prompt_len = strlen(prompt);
    }
    if (prompt_len == 0) {
        fprintf(stderr, "serval complete: the prompt is empty\n");
        goto out;
    }
    double t_load = now_s();
    if (eng_model_load(o.model, &m, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: cannot load model '%s': %s\n", o.model, err.msg);
        goto out;
    }
    t_load = now_s() - t_load;
    const eng_hparams *hp = &m->hp;
    size_t cap = prompt_len + 2, n_prompt = 0;
    ids = malloc(sizeof(int32_t) * cap);
    int32_t bos = tok_bos(m->vocab);
    size_t off = 0;
    if (tok_add_bos(m->vocab) && bos >= 0)
        ids[off++] = bos;
    if (tok_encode(m->vocab, prompt, prompt_len, true, ids + off, cap - off, &n_prompt) != ENG_OK) {
        fprintf(stderr, "serval complete: cannot tokenize the prompt\n");
        goto out;
    }
    n_prompt += off;
    long n_ctx = o.ctx ? o.ctx : (long)n_prompt + o.max_tokens;
    if (n_ctx > hp->n_ctx_train)
        n_ctx = hp->n_ctx_train;
    if ((long)n_prompt >= n_ctx) {
        fprintf(stderr,
                "serval complete: the prompt is %zu tokens, which leaves no room to generate in a "
                "context of %ld tokens (the model's limit is %d)\n",
                n_prompt, n_ctx, hp->n_ctx_train);
        goto out;
    }
    if (eng_cpu_ctx_create(m, (int32_t)n_ctx, (int)o.threads, &ctx, &err) != ENG_OK ||
        eng_sampler_create(&o.sp, hp->n_vocab, &smp, &err) != ENG_OK ||
        eng_stop_create(o.stops, o.n_stops, NULL, 0, &stop, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: %s\n", err.msg);
        goto out;
    }
    logits = malloc(sizeof(float) * (size_t)hp->n_vocab);
    double t0 = now_s();
    if (eng_cpu_ctx_eval(ctx, ids, (int32_t)n_prompt, logits, false, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: %s\n", err.msg);
        goto out;
    }
    double t_prompt = now_s() - t0;
    t0 = now_s();
    long n_gen = 0;
    size_t shown = 0, keep = 0;
    const char *why = "length";
    while (n_gen < o.max_tokens) {
        int32_t tok = eng_sampler_sample(smp, logits);
        n_gen++;
        if (!o.ignore_eos && tok_is_eog(m->vocab, tok)) {
            why = "end of generation";
            break;
        }
        size_t plen;
        const char *piece = tok_piece(m->vocab, tok, &plen);
        if (eng_stop_feed(stop, piece, plen, &keep)) {
            emit(stop, keep, &shown);
            why = "stop string";
            break;
        }
        emit(stop, keep, &shown);
        if (n_gen == o.max_tokens || eng_cpu_ctx_pos(ctx) >= n_ctx)
            break;
        if (eng_cpu_ctx_eval(ctx, &tok, 1, logits, false, &err) != ENG_OK) {
            fprintf(stderr, "serval complete: %s\n", err.msg);
            goto out;
        }
    }
    if (strcmp(why, "stop string")) {
        size_t len;
        eng_stop_output(stop, &len);
        emit(stop, len, &shown);
    }
    double t_decode = now_s() - t0;
    fputc('\n', stdout);
    fflush(stdout);
    if (!o.quiet) {
        /* Decode speed counts the tokens evaluated after the prompt (n_gen - 1 forward passes,
         * the first token came from the prompt's logits). */
        long n_dec = n_gen > 1 ? n_gen - 1 : 0;
        fprintf(stderr,
                "serval: model %s (%s, %d layers), %ld threads, load %.0f ms\n"
                "serval: prompt: %zu tokens in %.1f ms (%.1f tok/s)\n"
                "serval: decode: %ld tokens in %.1f ms (%.1f tok/s), stopped by %s\n",
                hp->name, hp->arch_name, hp->n_layer, o.threads, t_load * 1e3, n_prompt,
                t_prompt * 1e3, (double)n_prompt / t_prompt, n_dec, t_decode * 1e3,
                n_dec > 0 ? (double)n_dec / t_decode : 0.0, why);
    }
    rc = 0;
out:
    free(logits);
    free(ids);
    free(prompt_buf);
    eng_stop_free(stop);
    eng_sampler_free(smp);
    eng_cpu_ctx_free(ctx);
    eng_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "complete"))
        return cmd_complete(argc - 2, argv + 2);
    if (!strcmp(cmd, "serve")) {
#ifdef SERVAL_HAVE_SERVE
        return rpc_serve_main(argc - 2, argv + 2);
#else
        fprintf(stderr, "serval: `serve` is not built in (this is an engine-only build: "
                        "configure without -DSERVAL_ENGINE_ONLY=ON)\n");
        return 2;
#endif
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("serval %s\n", SERVAL_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        if (argc > 2 && !strcmp(argv[2], "complete"))
            usage_complete(stdout);
#ifdef SERVAL_HAVE_SERVE
        else if (argc > 2 && !strcmp(argv[2], "serve"))
            return rpc_serve_main(1, (char *[]){"--help", NULL});
#endif
        else
            usage_main(stdout);
        return 0;
    }
    fprintf(stderr, "serval: unknown command '%s'\n\n", cmd);
    usage_main(stderr);
    return 2;
}
