/* engine_flags.c — the engine flags shared by `serval complete` and `serval serve`
 * (cli/engine_flags.h). */
#include "engine_flags.h"

#include <stdint.h>
#include <stdio.h>

/* Parses --gpus' "0,1,2,3" into ids[0 .. *n) (cap entries); false with why (cap_why bytes)
 * for anything else: an empty item, a non-digit, an id above 63, an id twice, too many. */
static bool parse_gpus(const char *s, int *ids, int cap, int *n, char *why, size_t cap_why)
{
    *n = 0;
    const char *p = s;
    for (;;) {
        if (*p < '0' || *p > '9') {
            snprintf(why, cap_why, "'%s' is not a comma-separated list of GPU ids (0,1,2,3)", s);
            return false;
        }
        int v = 0;
        while (*p >= '0' && *p <= '9' && v <= 63)
            v = v * 10 + (*p++ - '0');
        if (v > 63 || (*p >= '0' && *p <= '9')) {
            snprintf(why, cap_why, "GPU ids are 0..63 ('%s')", s);
            return false;
        }
        for (int i = 0; i < *n; i++)
            if (ids[i] == v) {
                snprintf(why, cap_why, "GPU %d is listed twice ('%s')", v, s);
                return false;
            }
        if (*n == cap) {
            snprintf(why, cap_why, "more than %d GPUs ('%s')", cap, s);
            return false;
        }
        ids[(*n)++] = v;
        if (*p == '\0')
            return true;
        if (*p++ != ',' || *p == '\0') {
            snprintf(why, cap_why, "'%s' is not a comma-separated list of GPU ids (0,1,2,3)", s);
            return false;
        }
    }
}

cli_parse_result cli_engine_opts_check(const cli_command *c, const cli_engine_opts *o)
{
#ifndef SERVAL_HAVE_CUDA
    if (o->backend == ENG_BACKEND_CUDA)
        return cli_usage_error(c, "--backend cuda: this serval was built without CUDA (rebuild "
                                  "with -DSERVAL_CUDA=ON on a machine with nvcc)");
#endif
    if (o->gpus) {
        int ids[64], n = 0;
        char why[256];
        if (!parse_gpus(o->gpus, ids, 64, &n, why, sizeof why))
            return cli_usage_error(c, "--gpus: %s", why);
        const long tp = o->tp > 1 ? o->tp : 1;
        if (n % tp != 0)
            return cli_usage_error(c, "--gpus lists %d GPUs, which --tp %ld does not divide "
                                      "(each replica takes --tp GPUs)", n, tp);
        /* --gpus on the CPU backend: the engine refuses it at start (a config file may hold
         * both while backend is switched) */
    }
    return CLI_PARSE_OK;
}

eng_engine_config cli_engine_config(const cli_engine_opts *o)
{
    eng_engine_config ec = eng_engine_config_defaults();
    ec.backend = o->backend == ENG_BACKEND_CUDA ? ENG_BACKEND_CUDA : ENG_BACKEND_CPU;
    ec.cuda_fp16 = o->cuda_fp16;
    ec.no_cuda_graphs = o->no_cuda_graphs;
    ec.speculate = (eng_speculate)o->speculate; /* "auto|on|off" are the enum's order */
    ec.draft_max = (int32_t)o->draft_max;
    if (o->threads)
        ec.n_threads = (int)o->threads;
    ec.tp = o->tp > 1 ? (int)o->tp : 1;
    if (o->kv_mb)
        ec.kv_bytes = (int64_t)o->kv_mb << 20;
    char why[256];
    if (o->gpus && !parse_gpus(o->gpus, ec.gpus, 64, &ec.n_gpus, why, sizeof why))
        ec.n_gpus = 0; /* cli_engine_opts_check refused it already */
    return ec;
}

const char *cli_backend_name(const cli_engine_opts *o)
{
    return o->backend == ENG_BACKEND_CUDA ? "cuda" : "cpu";
}
