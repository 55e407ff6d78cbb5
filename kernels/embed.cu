// embed.cu — token-embedding gather: one CTA per token copies its table row.
#include "embed.h"

#include "common.cuh"

template <typename TT, typename OT>
static __global__ void embed_kernel(const TT *table, int64_t n_vocab, int64_t d,
                                    const int32_t *tokens, OT *out)
{
    const int64_t i = blockIdx.x;
    const int32_t tok = tokens[i];
    const bool ok = tok >= 0 && tok < n_vocab;
    const TT *row = table + (ok ? (int64_t)tok * d : 0);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
        out[i * d + j] = kn_from_f32<OT>(ok ? kn_to_f32(row[j]) : 0.0f);
}

template <typename TT>
static kn_status launch(const TT *table, int64_t n_vocab, int64_t d, const int32_t *tokens,
                        int64_t n, kn_dtype odt, void *out, cudaStream_t st)
{
    // grid: one CTA per token; 256 threads stride over the row
    switch (odt) {
    case KN_DTYPE_F32:
        KN_LAUNCH((unsigned)n, 256, 0, st, embed_kernel)(table, n_vocab, d, tokens, (float *)out);
        break;
    case KN_DTYPE_F16:
        KN_LAUNCH((unsigned)n, 256, 0, st, embed_kernel)(table, n_vocab, d, tokens, (__half *)out);
        break;
    case KN_DTYPE_BF16:
        KN_LAUNCH((unsigned)n, 256, 0, st, embed_kernel)(
            table, n_vocab, d, tokens, (__nv_bfloat16 *)out);
        break;
    }
    KN_LAUNCH_CHECK();
    return KN_OK;
}

extern "C" kn_status kn_embed(kn_dtype tdt, const void *table, int64_t n_vocab, int64_t d,
                              const int32_t *tokens, int64_t n, kn_dtype odt, void *out,
                              cudaStream_t st)
{
    KN_REQUIRE(table && tokens && out, "embed: null pointer");
    KN_REQUIRE(n_vocab > 0 && d > 0 && n >= 0 && n < (1ll << 31), "embed: bad shape n_vocab %lld d %lld n %lld",
               (long long)n_vocab, (long long)d, (long long)n);
    KN_REQUIRE(kn_dtype_size(tdt) && kn_dtype_size(odt), "embed: unknown dtype");
    if (n == 0)
        return KN_OK;
    switch (tdt) {
    case KN_DTYPE_F32: return launch((const float *)table, n_vocab, d, tokens, n, odt, out, st);
    case KN_DTYPE_F16: return launch((const __half *)table, n_vocab, d, tokens, n, odt, out, st);
    case KN_DTYPE_BF16:
        return launch((const __nv_bfloat16 *)table, n_vocab, d, tokens, n, odt, out, st);
    }
    return KN_ERR_INVALID;
}
