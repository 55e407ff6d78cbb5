// prefill_attention.cu — causal attention for prompt chunks over paged KV, flash-attention
// style: a CTA holds a tile of query rows of one head in registers, streams K/V tiles of the
// sequence through shared memory (gathered through the block table), and keeps an online
// softmax per row, so the score matrix never exists. Handles chunked prefill (queries that
// start mid-sequence, earlier positions already cached) and sliding windows (key tiles start
// at the tile's first window, older keys are masked per row) and encoders (bidirectional: every
// row sees the whole sequence). fp32 SIMT math: the first, simple
// version; a tensor-core (mma/wgmma) variant is the next step (kernels/README.md).
#include "prefill_attention.h"

#include "attn_common.cuh"

enum { PF_THREADS = 128 };

template <typename KV, int HD>
static __global__ void __launch_bounds__(PF_THREADS) prefill_kernel(const kn_attn_args a)
{
    constexpr int DPT = HD < 32 ? HD : 32;  // dimensions per thread
    constexpr int TPR = HD / DPT;           // threads per query row
    constexpr int ROWS = PF_THREADS / TPR;  // query rows per CTA
    constexpr int BK = HD <= 128 ? 32 : 16; // keys per shared-memory tile (32 KiB for K+V)
    constexpr int VPR = HD / 8;             // 16-byte vectors per K/V row
    __shared__ float k_s[BK][HD], v_s[BK][HD];

    const int32_t s = blockIdx.z, h = blockIdx.y;
    const int32_t kvh = h / (a.n_head / a.n_head_kv);
    const int32_t r0 = a.q_start[s], q_len = a.q_start[s + 1] - r0;
    const int32_t tile0 = blockIdx.x * ROWS;
    if (tile0 >= q_len) // CTA-uniform: this sequence has fewer rows than the longest
        return;
    const int32_t len = a.seq_lens[s], first_pos = len - q_len;
    const int row = threadIdx.x / TPR, j = threadIdx.x % TPR;
    const bool valid = tile0 + row < q_len;
    // rows past the end compute on the last row (the shuffles need every lane), write nothing
    const int32_t qi = valid ? tile0 + row : q_len - 1;
    const int32_t qpos = first_pos + qi;
    // the last key any row of the tile sees: its last row's position, or the sequence's end
    // for an encoder (bidirectional: no causal mask); CTA-uniform
    const int32_t last_pos = a.bidirectional ? len - 1 : first_pos + min(tile0 + ROWS, q_len) - 1;
    const int32_t key_hi = a.bidirectional ? len - 1 : qpos; // this row's last visible key
    // the first key any row of the tile sees (its first row's window start); CTA-uniform
    const int32_t first_key = kn_attn_first_key(a.n_swa, first_pos + tile0);
    const int32_t win_lo = a.n_swa > 0 ? qpos - a.n_swa : -1; // keys above it are in the window
    const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
    const KV *kc = (const KV *)a.k_cache, *vc = (const KV *)a.v_cache;

    float q[DPT], acc[DPT];
    const int64_t qo = (int64_t)(r0 + qi) * a.q_stride + (int64_t)h * HD;
#pragma unroll
    for (int i = 0; i < DPT; i++) {
        q[i] = kn_load_act(a.q_dtype, a.q, qo + j + TPR * i) * a.scale;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;

    for (int32_t kb = first_key; kb <= last_pos; kb += BK) {
        __syncthreads(); // the previous tile is consumed
        for (int v = threadIdx.x; v < BK * VPR; v += PF_THREADS) {
            const int kk = v / VPR, d8 = (v % VPR) * 8;
            const int32_t p = kb + kk;
            float kx[8] = {0}, vx[8] = {0};
            if (p <= last_pos) {
                const int64_t off = kn_kv_offset(table, p, a.block_size, a.n_head_kv, kvh, HD) + d8;
                kn_load8(kc + off, kx);
                kn_load8(vc + off, vx);
            }
#pragma unroll
            for (int i = 0; i < 8; i++) {
                k_s[kk][d8 + i] = kx[i];
                v_s[kk][d8 + i] = vx[i];
            }
        }
        __syncthreads();
        float sc[BK], tmax = -INFINITY;
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < DPT; i++)
                dot += q[i] * k_s[kk][j + TPR * i];
            dot = kn_warp_sum<TPR>(dot);
            sc[kk] = kb + kk <= key_hi && kb + kk > win_lo ? dot : -INFINITY; // causal, window
            tmax = fmaxf(tmax, sc[kk]);
        }
        // A row whose window starts after this tile has seen nothing yet (m_new = -inf): it
        // takes exp(-inf) = 0 for everything instead of exp(-inf - -inf) = NaN.
        const float m_new = fmaxf(m, tmax), m_ref = m_new == -INFINITY ? 0.0f : m_new;
        const float corr = __expf(m - m_ref);
        l *= corr;
#pragma unroll
        for (int i = 0; i < DPT; i++)
            acc[i] *= corr;
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            const float pr = __expf(sc[kk] - m_ref);
            l += pr;
#pragma unroll
            for (int i = 0; i < DPT; i++)
                acc[i] += pr * v_s[kk][j + TPR * i];
        }
        m = m_new;
    }
    if (!valid)
        return;
    const int64_t oo = (int64_t)(r0 + qi) * a.out_stride + (int64_t)h * HD;
    const float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < DPT; i++)
        kn_store_act(a.q_dtype, a.out, oo + j + TPR * i, acc[i] * inv);
}

template <typename KV, int HD> static kn_status launch(const kn_attn_args *a, cudaStream_t st)
{
    constexpr int ROWS = PF_THREADS / (HD < 32 ? 1 : HD / 32);
    // grid: (query-row tile, head, sequence); CTAs past a sequence's rows exit at once
    const dim3 grid((unsigned)((a->max_q_len + ROWS - 1) / ROWS), (unsigned)a->n_head,
                    (unsigned)a->n_seq);
    KN_LAUNCH(grid, PF_THREADS, 0, st, prefill_kernel<KV, HD>)(*a);
    KN_LAUNCH_CHECK();
    return KN_OK;
}

template <typename KV> static kn_status launch_kv(const kn_attn_args *a, cudaStream_t st)
{
    switch (a->head_dim) {
    case 16: return launch<KV, 16>(a, st);
    case 32: return launch<KV, 32>(a, st);
    case 64: return launch<KV, 64>(a, st);
    case 128: return launch<KV, 128>(a, st);
    case 256: return launch<KV, 256>(a, st);
    }
    return KN_ERR_UNSUPPORTED;
}

extern "C" kn_status kn_prefill_attn(const kn_attn_args *a, cudaStream_t st)
{
    kn_status s = kn_prefill_check(a);
    if (s != KN_OK)
        return s;
    if (a->n_seq == 0)
        return KN_OK;
    return a->kv_dtype == KN_DTYPE_F16 ? launch_kv<__half>(a, st) : launch_kv<__nv_bfloat16>(a, st);
}
