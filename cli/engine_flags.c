/* engine_flags.c — the engine flags shared by `serval complete` and `serval serve`
 * (cli/engine_flags.h). */
#include "engine_flags.h"

#include <stdint.h>

cli_parse_result cli_engine_opts_check(const cli_command *c, const cli_engine_opts *o)
{
#ifndef SERVAL_HAVE_CUDA
    if (o->backend == ENG_BACKEND_CUDA)
        return cli_usage_error(c, "--backend cuda: this serval was built without CUDA (rebuild "
                                  "with -DSERVAL_CUDA=ON on a machine with nvcc)");
#else
    (void)c;
    (void)o;
#endif
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
    return ec;
}

const char *cli_backend_name(const cli_engine_opts *o)
{
    return o->backend == ENG_BACKEND_CUDA ? "cuda" : "cpu";
}
