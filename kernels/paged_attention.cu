// paged_attention.cu — decode attention over paged KV blocks (one new query per sequence).
// GQA-aware: one CTA serves up to 8 query heads that share a KV head, so each K/V row is
// read from memory once per group, not once per query head. Within a CTA, lane groups of
// head_dim/8 lanes take one token each (one 16-byte load per lane per row) and keep their
// own online-softmax state; the CTA merges them at the end. Long contexts are split into
// partitions across CTAs (flash decoding) and merged by a second kernel. With a sliding
// window only the last n_swa positions are read; partitions wholly before it exit at once.
#include "paged_attention.h"

#include "attn_common.cuh"

enum { DEC_THREADS = 128, DEC_WARPS = DEC_THREADS / 32, DEC_GMAX_ALL = 8 };

struct dec_params {
    kn_attn_args a;
    int32_t n_qg;      // query groups per KV head: ceil(group / GMAX)
    int32_t n_splits;  // partitions per sequence (1: no merge pass)
    int32_t split_len; // tokens per partition
    float *part_acc;   // [n_seq, n_head, n_splits, head_dim] unnormalised outputs
    float *part_ml;    // [n_seq, n_head, n_splits, 2] running max and sum of exps
};

template <typename KV, int HD, int GMAX>
static __global__ void __launch_bounds__(DEC_THREADS) decode_kernel(const dec_params p)
{
    constexpr int LANES = HD / 8;            // lanes per token (8 elements = 16 bytes each)
    constexpr int TPW = 32 / LANES;          // tokens per warp step
    constexpr int NSUB = DEC_WARPS * TPW;    // token lanes groups in the CTA
    __shared__ float q_s[GMAX][HD];          // scaled queries of this CTA's heads
    __shared__ float acc_s[NSUB][GMAX][HD];  // per-group partial outputs, merged at the end
    __shared__ float m_s[NSUB][GMAX], l_s[NSUB][GMAX];

    const kn_attn_args &a = p.a;
    const int32_t s = blockIdx.y, split = blockIdx.z;
    const int32_t group = a.n_head / a.n_head_kv;
    const int32_t kvh = blockIdx.x / p.n_qg, qg = blockIdx.x % p.n_qg;
    const int32_t h0 = kvh * group + qg * GMAX;
    const int32_t ng = min(GMAX, group - qg * GMAX);
    const int32_t len = a.seq_lens[s];
    // this partition's positions that the query (at len - 1) sees: [t0, t1)
    const int32_t t1 = min(len, (split + 1) * p.split_len);
    const int32_t t0 = max(split * p.split_len, kn_attn_first_key(a.n_swa, len - 1));
    const int64_t ml_base = ((int64_t)s * a.n_head) * p.n_splits;

    if (t0 >= t1) { // past a shorter sequence's end, or before its window: contributes nothing
        if (p.n_splits == 1) { // seq_lens[s] < 1 breaks the contract: write zeros, not garbage
            for (int i = threadIdx.x; i < ng * HD; i += blockDim.x)
                kn_store_act(a.q_dtype, a.out,
                             (int64_t)s * a.out_stride + (int64_t)(h0 + i / HD) * HD + i % HD, 0.0f);
            return;
        }
        for (int i = threadIdx.x; i < ng; i += blockDim.x) {
            float *ml = p.part_ml + (ml_base + (int64_t)(h0 + i) * p.n_splits + split) * 2;
            ml[0] = -INFINITY;
            ml[1] = 0.0f;
        }
        return;
    }
    for (int i = threadIdx.x; i < GMAX * HD; i += blockDim.x) {
        const int g = i / HD, d = i % HD;
        q_s[g][d] = g < ng ? kn_load_act(a.q_dtype, a.q, (int64_t)s * a.q_stride +
                                                             (int64_t)(h0 + g) * HD + d) *
                                 a.scale
                           : 0.0f;
    }
    __syncthreads();

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int sub = warp * TPW + lane / LANES; // this lane's token group
    const int dl = (lane % LANES) * 8;         // first of this lane's 8 dimensions
    float qr[GMAX][8], acc[GMAX][8], m[GMAX], l[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            qr[g][i] = q_s[g][dl + i];
            acc[g][i] = 0.0f;
        }
    }
    const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
    const KV *kc = (const KV *)a.k_cache, *vc = (const KV *)a.v_cache;
    // The loop bound is warp-uniform (the shuffles need every lane); lanes past the end of
    // the partition compute on zeros and skip the update.
    for (int32_t tb = t0 + warp * TPW; tb < t1; tb += NSUB) {
        const int32_t t = tb + lane / LANES;
        const bool valid = t < t1;
        float k[8] = {0}, v[8] = {0};
        if (valid) {
            const int64_t off = kn_kv_offset(table, t, a.block_size, a.n_head_kv, kvh, HD) + dl;
            kn_load8(kc + off, k);
            kn_load8(vc + off, v); // issued before the reductions so both loads are in flight
        }
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++)
                dot += qr[g][i] * k[i];
            dot = kn_warp_sum<LANES>(dot);
            if (!valid)
                continue;
            const float m_new = fmaxf(m[g], dot);
            const float corr = __expf(m[g] - m_new), pr = __expf(dot - m_new);
            m[g] = m_new;
            l[g] = l[g] * corr + pr;
#pragma unroll
            for (int i = 0; i < 8; i++)
                acc[g][i] = acc[g][i] * corr + pr * v[i];
        }
    }
    // merge the token groups: every lane of a group holds the same m and l
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
#pragma unroll
        for (int i = 0; i < 8; i++)
            acc_s[sub][g][dl + i] = acc[g][i];
        if (lane % LANES == 0) {
            m_s[sub][g] = m[g];
            l_s[sub][g] = l[g];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < ng * HD; i += blockDim.x) {
        const int g = i / HD, d = i % HD;
        float mx = -INFINITY;
        for (int j = 0; j < NSUB; j++)
            mx = fmaxf(mx, m_s[j][g]);
        float sum = 0.0f, o = 0.0f;
        for (int j = 0; j < NSUB; j++) {
            const float w = m_s[j][g] == -INFINITY ? 0.0f : __expf(m_s[j][g] - mx);
            sum += l_s[j][g] * w;
            o += acc_s[j][g][d] * w;
        }
        const int32_t h = h0 + g;
        if (p.n_splits == 1) {
            kn_store_act(a.q_dtype, a.out, (int64_t)s * a.out_stride + (int64_t)h * HD + d, o / sum);
        } else {
            const int64_t part = ml_base + (int64_t)h * p.n_splits + split;
            p.part_acc[part * HD + d] = o;
            if (d == 0) {
                p.part_ml[part * 2] = mx;
                p.part_ml[part * 2 + 1] = sum;
            }
        }
    }
}

// Merges the partitions of one (sequence, head): rescale each by exp(m_i - max) and divide.
template <int HD> static __global__ void decode_merge_kernel(const dec_params p)
{
    const kn_attn_args &a = p.a;
    const int32_t s = blockIdx.y, h = blockIdx.x, d = threadIdx.x;
    const int64_t base = ((int64_t)s * a.n_head + h) * p.n_splits;
    float mx = -INFINITY;
    for (int j = 0; j < p.n_splits; j++)
        mx = fmaxf(mx, p.part_ml[(base + j) * 2]);
    float sum = 0.0f, o = 0.0f;
    for (int j = 0; j < p.n_splits; j++) {
        const float mj = p.part_ml[(base + j) * 2];
        if (mj == -INFINITY)
            continue;
        const float w = __expf(mj - mx);
        sum += p.part_ml[(base + j) * 2 + 1] * w;
        o += p.part_acc[(base + j) * HD + d] * w;
    }
    kn_store_act(a.q_dtype, a.out, (int64_t)s * a.out_stride + (int64_t)h * HD + d, o / sum);
}

// How many partitions: enough CTAs to fill the GPU twice over, each at least KN_DECODE_SPLIT
// tokens long (paged_attention.h); 1 when the batch alone fills it or the contexts are short.
static void plan_splits(const kn_attn_args *a, int32_t forced, int32_t *n_splits,
                        int32_t *split_len)
{
    const int32_t group = a->n_head / a->n_head_kv;
    const int32_t n_qg = (group + DEC_GMAX_ALL - 1) / DEC_GMAX_ALL;
    const int64_t ctas = (int64_t)a->n_seq * a->n_head_kv * n_qg;
    const int32_t max_parts = (a->max_seq_len + KN_DECODE_SPLIT - 1) / KN_DECODE_SPLIT;
    int32_t n = forced;
    if (n <= 0) {
        const int64_t want = 2 * (int64_t)kn_sm_count();
        n = ctas >= want || ctas == 0 ? 1 : (int32_t)((want + ctas - 1) / ctas);
        if (n > max_parts)
            n = max_parts;
    }
    if (n > a->max_seq_len)
        n = a->max_seq_len;
    if (n < 1)
        n = 1;
    int32_t len = (a->max_seq_len + n - 1) / n;
    *split_len = len;
    *n_splits = (a->max_seq_len + len - 1) / len;
}

extern "C" int kn_attn_supported(int32_t head_dim) { return kn_attn_head_dim_ok(head_dim); }

extern "C" kn_status kn_paged_attn_decode_workspace(const kn_attn_args *a, int32_t n_splits,
                                                    size_t *bytes)
{
    kn_status st = kn_attn_check(a, true);
    if (st != KN_OK)
        return st;
    KN_REQUIRE(bytes, "decode attention: null bytes");
    int32_t ns, len;
    plan_splits(a, n_splits, &ns, &len);
    const size_t parts = (size_t)a->n_seq * (size_t)a->n_head * (size_t)ns;
    *bytes = ns == 1 ? 0 : parts * sizeof(float) * ((size_t)a->head_dim + 2);
    return KN_OK;
}

template <typename KV, int HD, int GMAX>
static kn_status launch_gmax(const dec_params &p, cudaStream_t st)
{
    const kn_attn_args &a = p.a;
    // grid: (KV head × query group, sequence, partition); 128 threads
    const dim3 grid((unsigned)(a.n_head_kv * p.n_qg), (unsigned)a.n_seq, (unsigned)p.n_splits);
    KN_LAUNCH(grid, DEC_THREADS, 0, st, decode_kernel<KV, HD, GMAX>)(p);
    KN_LAUNCH_CHECK();
    if (p.n_splits > 1) {
        // grid: (head, sequence); one thread per output element of the head
        const dim3 mgrid((unsigned)a.n_head, (unsigned)a.n_seq);
        KN_LAUNCH(mgrid, HD, 0, st, decode_merge_kernel<HD>)(p);
        KN_LAUNCH_CHECK();
    }
    return KN_OK;
}

template <typename KV, int HD> static kn_status launch_hd(dec_params &p, cudaStream_t st)
{
    const int32_t group = p.a.n_head / p.a.n_head_kv;
    // the smallest query-group width that covers the group, up to 8 heads per CTA
    if (group == 1)
        return p.n_qg = 1, launch_gmax<KV, HD, 1>(p, st);
    if (group == 2)
        return p.n_qg = 1, launch_gmax<KV, HD, 2>(p, st);
    if (group <= 4)
        return p.n_qg = 1, launch_gmax<KV, HD, 4>(p, st);
    p.n_qg = (group + 7) / 8;
    return launch_gmax<KV, HD, 8>(p, st);
}

template <typename KV> static kn_status launch_kv(dec_params &p, cudaStream_t st)
{
    switch (p.a.head_dim) {
    case 16: return launch_hd<KV, 16>(p, st);
    case 32: return launch_hd<KV, 32>(p, st);
    case 64: return launch_hd<KV, 64>(p, st);
    case 128: return launch_hd<KV, 128>(p, st);
    case 256: return launch_hd<KV, 256>(p, st);
    }
    return KN_ERR_UNSUPPORTED;
}

extern "C" kn_status kn_paged_attn_decode(const kn_attn_args *a, int32_t n_splits,
                                          void *workspace, size_t workspace_bytes,
                                          cudaStream_t st)
{
    size_t need = 0;
    kn_status s = kn_paged_attn_decode_workspace(a, n_splits, &need);
    if (s != KN_OK)
        return s;
    KN_REQUIRE(workspace_bytes >= need && (need == 0 || (workspace && KN_ALIGNED(workspace, 16))),
               "decode attention: workspace %zu bytes, needs %zu (16-byte aligned)",
               workspace_bytes, need);
    if (a->n_seq == 0)
        return KN_OK;
    dec_params p;
    p.a = *a;
    plan_splits(a, n_splits, &p.n_splits, &p.split_len);
    p.n_qg = 1;
    p.part_acc = (float *)workspace;
    p.part_ml = p.part_acc + (size_t)a->n_seq * a->n_head * p.n_splits * a->head_dim;
    return a->kv_dtype == KN_DTYPE_F16 ? launch_kv<__half>(p, st) : launch_kv<__nv_bfloat16>(p, st);
}
