// prefill_attention_tc.cu — the tensor-core variant of prefill attention (kn_prefill_attn_tc,
// what the CUDA backend runs; sm_80+): the same contract as prefill_attention.cu's SIMT kernel, with Q·K^T and
// P·V as 16x16x16 WMMA products in the KV cache's 16-bit type and fp32 accumulation. A CTA
// takes 64 query rows of one head (16 per warp); K/V tiles are gathered through the block
// table into shared memory; each warp keeps its rows' online softmax (max, sum) and fp32
// output in shared memory, because a WMMA accumulator's element-to-row mapping is opaque and
// the per-row rescale needs rows. The score tile is per CTA and never leaves shared memory.
// Sliding windows: key tiles start at the first row's window, older keys are masked per row.
#include <mma.h>

#include "attn_common.cuh"
#include "prefill_attention.h"

namespace {

using namespace nvcuda;

constexpr int TC_WARPS = 4, TC_THREADS = TC_WARPS * 32, TC_BM = 16 * TC_WARPS;
constexpr int PAD16 = 8; // 16-bit rows padded by 8 elements: fragments stay 32-byte aligned
constexpr int PAD32 = 4; // fp32 rows padded by 4

// Keys per K/V tile: 64, or 32 at head size 256 to bound shared memory.
template <int HD> constexpr int tc_bn() { return HD >= 256 ? 32 : 64; }

// Shared-memory layout (element strides and byte offsets, each array 128-byte aligned).
template <typename T, int HD> struct tc_smem {
    static constexpr int BN = tc_bn<HD>();
    static constexpr int LD_H = HD + PAD16, LD_S = BN + PAD32, LD_P = BN + PAD16;
    static constexpr int LD_O = HD + PAD32;
    static constexpr size_t align(size_t b) { return (b + 127) / 128 * 128; }
    static constexpr size_t Q = 0;
    static constexpr size_t K = Q + align(sizeof(T) * TC_BM * LD_H);
    static constexpr size_t V = K + align(sizeof(T) * BN * LD_H);
    static constexpr size_t S = V + align(sizeof(T) * BN * LD_H);
    static constexpr size_t P = S + align(sizeof(float) * TC_BM * LD_S);
    static constexpr size_t O = P + align(sizeof(T) * TC_BM * LD_P);
    static constexpr size_t M = O + align(sizeof(float) * TC_BM * LD_O);
    static constexpr size_t L = M + align(sizeof(float) * TC_BM);
    static constexpr size_t BYTES = L + align(sizeof(float) * TC_BM);
};

template <typename T, int HD>
static __global__ void __launch_bounds__(TC_THREADS) prefill_tc_kernel(const kn_attn_args a)
{
    using SM = tc_smem<T, HD>;
    constexpr int BN = SM::BN, VPR = HD / 8;
    KN_DYN_SMEM(unsigned char, smem);
    T *q_s = (T *)(smem + SM::Q), *k_s = (T *)(smem + SM::K), *v_s = (T *)(smem + SM::V);
    float *s_s = (float *)(smem + SM::S), *o_s = (float *)(smem + SM::O);
    T *p_s = (T *)(smem + SM::P);
    float *m_s = (float *)(smem + SM::M), *l_s = (float *)(smem + SM::L);

    const int32_t s = blockIdx.z, h = blockIdx.y;
    const int32_t kvh = h / (a.n_head / a.n_head_kv);
    const int32_t r0 = a.q_start[s], q_len = a.q_start[s + 1] - r0;
    const int32_t tile0 = blockIdx.x * TC_BM;
    if (tile0 >= q_len) // CTA-uniform: this sequence has fewer rows than the longest
        return;
    const int32_t len = a.seq_lens[s], first_pos = len - q_len;
    const int32_t n_rows = min(TC_BM, q_len - tile0);
    // the last key of the tile's last row, or the sequence's end for an encoder; CTA-uniform
    const int32_t last_pos = a.bidirectional ? len - 1 : first_pos + tile0 + n_rows - 1;
    // the first key any row of the tile sees (its first row's window start); CTA-uniform
    const int32_t first_key = kn_attn_first_key(a.n_swa, first_pos + tile0);
    const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
    const T *kc = (const T *)a.k_cache, *vc = (const T *)a.v_cache;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

    // Q tile in T (rows past the chunk are zeros), output accumulators and softmax state
    for (int i = threadIdx.x; i < TC_BM * HD; i += TC_THREADS) {
        const int r = i / HD, d = i % HD;
        const float x = r < n_rows ? kn_load_act(a.q_dtype, a.q, (int64_t)(r0 + tile0 + r) *
                                                                     a.q_stride +
                                                                 (int64_t)h * HD + d)
                                   : 0.0f;
        q_s[r * SM::LD_H + d] = kn_from_f32<T>(x);
        o_s[r * SM::LD_O + d] = 0.0f;
    }
    for (int r = threadIdx.x; r < TC_BM; r += TC_THREADS) {
        m_s[r] = -INFINITY;
        l_s[r] = 0.0f;
    }

    const int wr = warp * 16; // this warp's first row in the tile
    for (int32_t kb = first_key; kb <= last_pos; kb += BN) {
        __syncthreads(); // Q is in, or the previous K/V tile is consumed
        for (int v = threadIdx.x; v < BN * VPR; v += TC_THREADS) {
            const int kk = v / VPR, d8 = (v % VPR) * 8;
            const int32_t p = kb + kk;
            uint4 ku = make_uint4(0, 0, 0, 0), vu = ku;
            if (p <= last_pos) {
                const int64_t off = kn_kv_offset(table, p, a.block_size, a.n_head_kv, kvh, HD) + d8;
                ku = *reinterpret_cast<const uint4 *>(kc + off);
                vu = *reinterpret_cast<const uint4 *>(vc + off);
            }
            *reinterpret_cast<uint4 *>(k_s + kk * SM::LD_H + d8) = ku;
            *reinterpret_cast<uint4 *>(v_s + kk * SM::LD_H + d8) = vu;
        }
        __syncthreads();

        // S[wr:wr+16, :] = Q · K^T, one 16x16 fragment per 16 keys
        for (int c = 0; c < BN / 16; c++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int k = 0; k < HD / 16; k++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kb_frag;
                wmma::load_matrix_sync(qa, q_s + wr * SM::LD_H + k * 16, SM::LD_H);
                wmma::load_matrix_sync(kb_frag, k_s + c * 16 * SM::LD_H + k * 16, SM::LD_H);
                wmma::mma_sync(acc, qa, kb_frag, acc);
            }
            wmma::store_matrix_sync(s_s + wr * SM::LD_S + c * 16, acc, SM::LD_S,
                                    wmma::mem_row_major);
        }
        __syncwarp();

        // online softmax over this warp's 16 rows: a row at a time, lanes across the keys
        for (int rr = 0; rr < 16; rr++) {
            const int r = wr + rr;
            // rows past the chunk mask like the chunk's last row; their output is dropped
            const int32_t qpos = first_pos + tile0 + min(r, n_rows - 1);
            const int32_t win_lo = a.n_swa > 0 ? qpos - a.n_swa : -1; // window: keys above it
            const int32_t key_hi = a.bidirectional ? len - 1 : qpos;  // its last visible key
            float sc[BN / 32], tmax = -INFINITY;
#pragma unroll
            for (int j = 0; j < BN / 32; j++) {
                const int col = lane + 32 * j;
                sc[j] = kb + col <= key_hi && kb + col > win_lo ? s_s[r * SM::LD_S + col] * a.scale
                                                                : -INFINITY;
                tmax = fmaxf(tmax, sc[j]);
            }
            tmax = kn_warp_max(tmax);
            // a row whose window starts after this tile has seen nothing yet (m_new = -inf):
            // exp(-inf) = 0 for everything rather than exp(-inf - -inf) = NaN
            const float m_old = m_s[r], m_new = fmaxf(m_old, tmax);
            const float m_ref = m_new == -INFINITY ? 0.0f : m_new;
            const float corr = __expf(m_old - m_ref);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < BN / 32; j++) {
                const float pr = __expf(sc[j] - m_ref);
                sum += pr;
                p_s[r * SM::LD_P + lane + 32 * j] = kn_from_f32<T>(pr);
            }
            sum = kn_warp_sum(sum);
            for (int d = lane; d < HD; d += 32)
                o_s[r * SM::LD_O + d] *= corr;
            __syncwarp(); // every lane read m_s[r] before lane 0 replaces it
            if (lane == 0) {
                m_s[r] = m_new;
                l_s[r] = l_s[r] * corr + sum;
            }
        }
        __syncwarp();

        // O[wr:wr+16, :] += P · V
        for (int c = 0; c < HD / 16; c++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, o_s + wr * SM::LD_O + c * 16, SM::LD_O,
                                   wmma::mem_row_major);
            for (int k = 0; k < BN / 16; k++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vb;
                wmma::load_matrix_sync(pa, p_s + wr * SM::LD_P + k * 16, SM::LD_P);
                wmma::load_matrix_sync(vb, v_s + k * 16 * SM::LD_H + c * 16, SM::LD_H);
                wmma::mma_sync(acc, pa, vb, acc);
            }
            wmma::store_matrix_sync(o_s + wr * SM::LD_O + c * 16, acc, SM::LD_O,
                                    wmma::mem_row_major);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n_rows * HD; i += TC_THREADS) {
        const int r = i / HD, d = i % HD;
        kn_store_act(a.q_dtype, a.out,
                     (int64_t)(r0 + tile0 + r) * a.out_stride + (int64_t)h * HD + d,
                     o_s[r * SM::LD_O + d] / l_s[r]);
    }
}

template <typename T, int HD> static kn_status launch(const kn_attn_args *a, cudaStream_t st)
{
    constexpr size_t bytes = tc_smem<T, HD>::BYTES;
    static_assert(bytes <= 160 * 1024, "prefill_tc: shared memory beyond what sm_80 offers");
    // above 48 KiB the kernel must opt in (once per process is enough; cheap to repeat)
    KN_CUDA_CHECK(cudaFuncSetAttribute(prefill_tc_kernel<T, HD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    // grid: (64-row query tile, head, sequence); CTAs past a sequence's rows exit at once
    const dim3 grid((unsigned)((a->max_q_len + TC_BM - 1) / TC_BM), (unsigned)a->n_head,
                    (unsigned)a->n_seq);
    KN_LAUNCH(grid, TC_THREADS, bytes, st, prefill_tc_kernel<T, HD>)(*a);
    KN_LAUNCH_CHECK();
    return KN_OK;
}

template <typename T> static kn_status launch_t(const kn_attn_args *a, cudaStream_t st)
{
    switch (a->head_dim) {
    case 16: return launch<T, 16>(a, st);
    case 32: return launch<T, 32>(a, st);
    case 64: return launch<T, 64>(a, st);
    case 128: return launch<T, 128>(a, st);
    case 256: return launch<T, 256>(a, st);
    }
    return KN_ERR_UNSUPPORTED;
}

} // namespace

extern "C" kn_status kn_prefill_attn_tc(const kn_attn_args *a, cudaStream_t st)
{
    kn_status s = kn_prefill_check(a);
    if (s != KN_OK)
        return s;
    if (a->n_seq == 0)
        return KN_OK;
    return a->kv_dtype == KN_DTYPE_F16 ? launch_t<__half>(a, st) : launch_t<__nv_bfloat16>(a, st);
}
