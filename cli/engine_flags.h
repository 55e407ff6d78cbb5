/* engine_flags.h — the engine flags every `serval` command that runs a model shares (--backend,
 * --threads, --kv-mb, the CUDA switches, speculation): their table entries, their check, and how they
 * become an eng_engine_config. */
#ifndef SERVAL_CLI_ENGINE_FLAGS_H
#define SERVAL_CLI_ENGINE_FLAGS_H

#include <stdbool.h>

#include "flags.h"
#include "serval_engine.h"

typedef struct cli_engine_opts {
    int backend;         /* eng_backend_kind, by its index in "cpu|cuda" */
    long threads;        /* 0: the engine's default (the number of online CPUs) */
    long tp;             /* tensor-parallel degree; 1: none */
    const char *gpus;    /* --gpus "0,1,2,3" (checked by cli_engine_opts_check), or NULL */
    long kv_mb;          /* 0: the engine's default (1 GiB on the CPU, 90% of free GPU memory) */
    bool cuda_fp16;
    bool no_cuda_graphs;
    int speculate;       /* eng_speculate, by its index in "auto|on|off" */
    long draft_max;      /* most drafted tokens per request and step */
} cli_engine_opts;

/* The table entries, to put inside a command's cli_flag array; o points to its opts. */
#define CLI_ENGINE_FLAGS(o)                                                                   \
    {"--backend", "cpu|cuda", CLI_FLAG_CHOICE, &(o)->backend, "cpu", 0, 0, "cpu|cuda",        \
     "where the model runs; cuda needs a CUDA build and an NVIDIA GPU"},                      \
    {"--cuda-fp16", NULL, CLI_FLAG_BOOL, &(o)->cuda_fp16, NULL, 0, 0, NULL,                   \
     "cuda: fp16 weights and activations (default bf16)"},                                    \
    {"--no-cuda-graphs", NULL, CLI_FLAG_BOOL, &(o)->no_cuda_graphs, NULL, 0, 0, NULL,         \
     "cuda: launch decode steps kernel by kernel instead of replaying CUDA graphs (slower; "  \
     "for debugging)"},                                                                       \
    {"--threads", "N", CLI_FLAG_INT, &(o)->threads, NULL, 1, 256, NULL,                       \
     "CPU backend threads (serve: of each replica; default: the online CPUs, shared among " \
     "serve's --replicas)"},                                                                  \
    {"--tp", "N", CLI_FLAG_INT, &(o)->tp, "1", 1, 64, NULL,                                  \
     "tensor parallelism: split the model's attention heads, FFN columns and vocabulary "    \
     "across N ranks (serve: within each replica) that all-reduce after each layer's output " \
     "and down projections; on the CPU backend the ranks are thread groups sharing "         \
     "--threads, each with its own KV cache. N must divide the heads (quantised "            \
     "attn_output/ffn_down also in whole blocks); an error lists the degrees the model "     \
     "allows"},                                                                               \
    {"--gpus", "LIST", CLI_FLAG_STRING, &(o)->gpus, NULL, 0, 0, NULL,                       \
     "cuda: the GPUs to run on, by id, comma-separated (0,1,2,3); one per --tp rank, and "   \
     "serve splits the list into groups of --tp, one replica each (--gpus 0,1,2,3 --tp 2: "  \
     "two replicas of two GPUs; --replicas may be left out). Default: GPU 0, or 0 .. N-1 "    \
     "with --tp N"},                                                                          \
    {"--kv-mb", "N", CLI_FLAG_INT, &(o)->kv_mb, NULL, 1, 1L << 20, NULL,                      \
     "KV cache memory in MiB (serve: of each replica; default 1024 on the CPU, 90% of free "  \
     "GPU memory on cuda)"},                                                                  \
    {"--speculate", "auto|on|off", CLI_FLAG_CHOICE, &(o)->speculate, "auto", 0, 0,           \
     "auto|on|off",                                                                           \
     "speculative decoding drafted from the prompt: the model checks several tokens copied "  \
     "from the prompt in one pass; output is unchanged (greedy and seeded sampling alike), "  \
     "decoding faster where a completion repeats its context and the batch is small; auto: "  \
     "on with the CPU backend, off with cuda (not measured on a GPU yet)"},                  \
    {"--draft-max", "N", CLI_FLAG_INT, &(o)->draft_max, "8", 1, 16, NULL,                     \
     "speculation: most tokens drafted per request and step (each request adapts its own "   \
     "draft length below this to how many of its drafts the model accepts)"}

/* After parsing: a usage error (printed, CLI_PARSE_USAGE) when the flags ask for what this
 * build cannot do, --backend cuda without the CUDA backend, or --gpus is not a list of
 * distinct ids in [0, 63] that --tp divides. (GPUs named for the CPU backend are the
 * engine's to refuse, and whether they exist the CUDA backend's, when they start.) */
cli_parse_result cli_engine_opts_check(const cli_command *c, const cli_engine_opts *o);

/* The engine configuration the flags describe, over eng_engine_config_defaults(). */
eng_engine_config cli_engine_config(const cli_engine_opts *o);

/* "cpu" or "cuda". */
const char *cli_backend_name(const cli_engine_opts *o);

#endif
