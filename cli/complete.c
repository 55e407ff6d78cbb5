/* complete.c — `serval complete`: loads a model, starts an engine on the chosen backend, submits
 * one request and streams its text to stdout; EOS, stop strings and max tokens are the
 * engine's, exactly as for the gRPC and HTTP front ends. */
#include "complete.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_flags.h"
#include "flags.h"
#include "serval_engine.h"
#include "status.h"

#define COMPLETE_MAX_STOPS 16      /* the engine's limit per request */
#define PROMPT_FILE_MAX (64u << 20) /* bytes */

typedef struct complete_opts {
    const char *model;
    const char *prompt;
    const char *prompt_file;
    long max_tokens, top_k, ctx;
    eng_sampler_params sp;
    const char *stop_items[COMPLETE_MAX_STOPS];
    cli_list stops;
    cli_engine_opts eng;
    bool ignore_eos;
    bool quiet;
} complete_opts;

/* Returns the exit code for a finished parse (0 help, 2 usage), or -1 to go on. */
static int parse_complete(int argc, char **argv, complete_opts *o)
{
    *o = (complete_opts){.sp = eng_sampler_defaults()};
    o->stops = (cli_list){.items = o->stop_items, .cap = COMPLETE_MAX_STOPS};
    const cli_flag flags[] = {
        {"--model", "PATH", CLI_FLAG_STRING, &o->model, SERVAL_DEFAULT_MODEL, 0, 0, NULL,
         "GGUF model"},
        {"--prompt", "TEXT", CLI_FLAG_STRING, &o->prompt, NULL, 0, 0, NULL,
         "the prompt; special tokens such as <fim_prefix> are recognised"},
        {"--prompt-file", "PATH", CLI_FLAG_STRING, &o->prompt_file, NULL, 0, 0, NULL,
         "read the prompt from a file instead ('-' for stdin)"},
        {"--max-tokens", "N", CLI_FLAG_INT, &o->max_tokens, "64", 1, 1L << 20, NULL,
         "most tokens to generate, at most what the context leaves"},
        {"--temperature", "T", CLI_FLAG_FLOAT, &o->sp.temperature, "0", 0, 0, NULL,
         "0 = greedy, otherwise sample at temperature T"},
        {"--top-k", "K", CLI_FLAG_INT, &o->top_k, "0", 0, INT32_MAX, NULL,
         "sample from the K most likely tokens; 0 keeps all"},
        {"--top-p", "P", CLI_FLAG_FLOAT, &o->sp.top_p, "1", 0, 0, NULL,
         "nucleus sampling mass in (0, 1]; 1 is off"},
        {"--seed", "S", CLI_FLAG_U64, &o->sp.seed, "0", 0, 0, NULL,
         "RNG seed for sampling; same seed, same output"},
        {"--stop", "TEXT", CLI_FLAG_LIST, &o->stops, NULL, 0, 0, NULL,
         "stop before this text (repeatable, up to 16)"},
        {"--ctx", "N", CLI_FLAG_INT, &o->ctx, NULL, 1, 1L << 24, NULL,
         "context size in tokens, prompt included (default: prompt + max tokens, at most the "
         "model's training context)"},
        {"--ignore-eos", NULL, CLI_FLAG_BOOL, &o->ignore_eos, NULL, 0, 0, NULL,
         "keep generating past end-of-generation tokens"},
        {"--quiet", NULL, CLI_FLAG_BOOL, &o->quiet, NULL, 0, 0, NULL,
         "do not print the speed summary"},
        CLI_ENGINE_FLAGS(&o->eng),
    };
    const cli_command cmd = {
        .prog = "serval complete",
        .usage = "[--model PATH] (--prompt TEXT | --prompt-file PATH) [options]",
        .about = "Generates a completion and prints it on stdout as it is generated; prompt and "
                 "decode speed go to stderr.",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0]};
    cli_parse_result pr = cli_parse(&cmd, argc, argv);
    if (pr == CLI_PARSE_OK && !o->prompt == !o->prompt_file)
        pr = cli_usage_error(&cmd, "give exactly one of --prompt or --prompt-file");
    if (pr == CLI_PARSE_OK)
        pr = cli_engine_opts_check(&cmd, &o->eng);
    if (pr == CLI_PARSE_OK) {
        o->sp.top_k = (int32_t)o->top_k;
        /* The engine applies the same check at submit; doing it here answers before the
         * model is loaded. */
        eng_sampler_params sp = o->sp;
        eng_err err = {{0}};
        if (eng_sampler_params_check(&sp, 0, &err) != ENG_OK)
            pr = cli_usage_error(&cmd, "%s", err.msg);
    }
    return pr == CLI_PARSE_OK ? -1 : pr == CLI_PARSE_HELP ? 0 : 2;
}

/* Reads all of path ('-': stdin). Returns a new buffer owned by the caller (free()), or NULL
 * with the reason printed. */
static char *read_prompt_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "serval complete: cannot open prompt file '%s': %s\n", path,
                strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            char *bigger = cap < PROMPT_FILE_MAX ? realloc(buf, cap * 2) : NULL;
            if (!bigger) {
                fprintf(stderr, "serval complete: prompt file '%s' is larger than %u MiB\n", path,
                        PROMPT_FILE_MAX >> 20);
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    if (buf && ferror(f)) {
        fprintf(stderr, "serval complete: cannot read prompt file '%s'\n", path);
        free(buf);
        buf = NULL;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

/* Streams the request's text to stdout until it is done; *out holds the final counters.
 * False when the engine failed the request (message printed). */
static bool stream_output(eng_request *r, eng_request_output *out)
{
    char buf[4096];
    do {
        if (eng_request_read(r, buf, sizeof buf, -1, out) != ENG_OK)
            break;
        if (out->text_len) {
            fwrite(buf, 1, out->text_len, stdout);
            fflush(stdout);
        }
    } while (!out->done);
    if (!out->done || out->finish == ENG_FINISH_ERROR) {
        fprintf(stderr, "serval complete: generation failed: %s\n",
                out->done ? out->error : "the request could not be read");
        return false;
    }
    return true;
}

static void print_summary(const complete_opts *o, const eng_model *m, double load_ms,
                          const eng_request_output *out)
{
    const char *why = out->finish == ENG_FINISH_LENGTH ? "length"
                      : o->stops.n                     ? "end of generation or a stop string"
                                                       : "end of generation";
    /* The first token comes from the prompt's logits; decode counts the forward passes after
     * it. */
    int32_t n_dec = out->n_output_tokens > 1 ? out->n_output_tokens - 1 : 0;
    double prompt_ms = out->first_token_ms, dec_ms = out->total_ms - out->first_token_ms;
    char threads[32] = "one thread per CPU";
    if (o->eng.threads)
        snprintf(threads, sizeof threads, "%ld threads", o->eng.threads);
    fprintf(stderr,
            "serval: model %s (%s, %d layers) on %s, %s, load %.0f ms\n"
            "serval: prompt: %d tokens in %.1f ms (%.1f tok/s)\n"
            "serval: decode: %d tokens in %.1f ms (%.1f tok/s), stopped by %s\n",
            eng_model_name(m), eng_model_arch_name(m), eng_model_n_layer(m),
            cli_backend_name(&o->eng), threads, load_ms, out->n_prompt_tokens, prompt_ms,
            prompt_ms > 0 ? out->n_prompt_tokens / (prompt_ms * 1e-3) : 0.0, n_dec, dec_ms,
            n_dec > 0 && dec_ms > 0 ? n_dec / (dec_ms * 1e-3) : 0.0, why);
}

/* The context: --ctx, or the prompt plus max tokens, at most the model's. 0 (message printed)
 * when the prompt leaves no room to generate. */
static int32_t context_size(const complete_opts *o, const eng_model *m, int32_t n_prompt)
{
    int64_t n_ctx = o->ctx ? o->ctx : (int64_t)n_prompt + o->max_tokens;
    if (n_ctx > eng_model_n_ctx_train(m))
        n_ctx = eng_model_n_ctx_train(m);
    if (n_prompt >= n_ctx) {
        fprintf(stderr,
                "serval complete: the prompt is %d tokens, which leaves no room to generate in a "
                "context of %lld tokens (the model's limit is %d)\n",
                n_prompt, (long long)n_ctx, eng_model_n_ctx_train(m));
        return 0;
    }
    return (int32_t)n_ctx;
}

int cli_complete_main(int argc, char **argv)
{
    complete_opts o;
    int rc = parse_complete(argc, argv, &o);
    if (rc >= 0)
        return rc;

    rc = 1;
    eng_err err = {{0}};
    eng_model *m = NULL;
    eng_engine *e = NULL;
    eng_request *r = NULL;
    int32_t *ids = NULL, n_prompt = 0;
    char *prompt_buf = NULL;
    size_t prompt_len;
    const char *prompt = o.prompt;
    if (o.prompt_file) {
        if (!(prompt_buf = read_prompt_file(o.prompt_file, &prompt_len)))
            goto out;
        prompt = prompt_buf;
    } else {
        prompt_len = strlen(prompt);
    }
    if (prompt_len == 0) {
        fprintf(stderr, "serval complete: the prompt is empty\n");
        goto out;
    }
    double t_load = eng_clock_ms();
    if (eng_model_load(o.model, &m, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: cannot load model '%s': %s\n", o.model, err.msg);
        goto out;
    }
    t_load = eng_clock_ms() - t_load;
    /* Tokenized here (the engine's one rule) to size the context before the engine exists. */
    if (eng_model_tokenize(m, prompt, prompt_len, true, true, &ids, &n_prompt, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: cannot tokenize the prompt: %s\n", err.msg);
        goto out;
    }
    if (n_prompt == 0) {
        fprintf(stderr, "serval complete: the prompt has no tokens\n");
        goto out;
    }
    int32_t n_ctx = context_size(&o, m, n_prompt);
    if (n_ctx == 0)
        goto out;
    eng_engine_config ec = cli_engine_config(&o.eng);
    ec.max_seq_len = n_ctx;
    ec.max_running = 1;
    ec.max_waiting = 1;
    if (eng_engine_create(m, &ec, &e, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: cannot start the engine on %s: %s\n",
                cli_backend_name(&o.eng), err.msg);
        goto out;
    }
    eng_request_params rp = eng_request_params_defaults();
    rp.tokens = ids;
    rp.n_tokens = n_prompt;
    rp.sampling = o.sp;
    rp.max_tokens = (int32_t)o.max_tokens;
    rp.stop = o.stops.items;
    rp.n_stop = o.stops.n;
    rp.ignore_eos = o.ignore_eos;
    if (eng_submit(e, &rp, &r, &err) != ENG_OK) {
        fprintf(stderr, "serval complete: %s\n", err.msg);
        goto out;
    }
    eng_request_output res;
    if (!stream_output(r, &res))
        goto out;
    fputc('\n', stdout);
    fflush(stdout);
    if (!o.quiet)
        print_summary(&o, m, t_load, &res);
    rc = 0;
out:
    eng_request_release(r);
    eng_engine_free(e);
    eng_model_free(m);
    free(ids);
    free(prompt_buf);
    return rc;
}
