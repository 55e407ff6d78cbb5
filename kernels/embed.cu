// embed.cu — embedding gathers: one CTA per token copies its table row (token embeddings), or
// adds it to an fp32 row (learned position embeddings onto the residual stream).
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
    // grid: one CTA per token; up to 256 threads stride over the row
    const unsigned th = kn_row_threads(d);
    switch (odt) {
    case KN_DTYPE_F32:
        KN_LAUNCH((unsigned)n, th, 0, st, embed_kernel)(table, n_vocab, d, tokens, (float *)out);
        break;
    case KN_DTYPE_F16:
        KN_LAUNCH((unsigned)n, th, 0, st, embed_kernel)(table, n_vocab, d, tokens, (__half *)out);
        break;
    case KN_DTYPE_BF16:
        KN_LAUNCH((unsigned)n, th, 0, st, embed_kernel)(
            table, n_vocab, d, tokens, (__nv_bfloat16 *)out);
        break;
    }
    KN_LAUNCH_CHECK();
    return KN_OK;
}

// out[i, :] += table[idx[i], :] in fp32: one add, as the reference does it (bit-exact)
template <typename TT>
static __global__ void embed_add_kernel(const TT *table, int64_t n_rows, int64_t d,
                                        const int32_t *idx, float *out)
{
    const int64_t i = blockIdx.x;
    const int32_t r = idx[i];
    if (r < 0 || r >= n_rows) // CTA-uniform: nothing to add
        return;
    const TT *row = table + (int64_t)r * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
        out[i * d + j] = __fadd_rn(out[i * d + j], kn_to_f32(row[j]));
}

extern "C" kn_status kn_embed_add(kn_dtype tdt, const void *table, int64_t n_rows, int64_t d,
                                  const int32_t *idx, int64_t n, float *out, cudaStream_t st)
{
    KN_REQUIRE(table && idx && out, "embed_add: null pointer");
    KN_REQUIRE(n_rows > 0 && d > 0 && n >= 0 && n < (1ll << 31),
               "embed_add: bad shape n_rows %lld d %lld n %lld", (long long)n_rows, (long long)d,
               (long long)n);
    KN_REQUIRE(kn_dtype_size(tdt), "embed_add: unknown dtype");
    if (n == 0)
        return KN_OK;
    // grid: one CTA per row of out; up to 256 threads stride over it
    const unsigned th = kn_row_threads(d);
    switch (tdt) {
    case KN_DTYPE_F32:
        KN_LAUNCH((unsigned)n, th, 0, st, embed_add_kernel)((const float *)table, n_rows, d, idx,
                                                             out);
        break;
    case KN_DTYPE_F16:
        KN_LAUNCH((unsigned)n, th, 0, st, embed_add_kernel)((const __half *)table, n_rows, d,
                                                             idx, out);
        break;
    case KN_DTYPE_BF16:
        KN_LAUNCH((unsigned)n, th, 0, st, embed_add_kernel)((const __nv_bfloat16 *)table, n_rows,
                                                             d, idx, out);
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
