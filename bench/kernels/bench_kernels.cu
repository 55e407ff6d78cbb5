// bench_kernels.cu — times every kernel in kernels/ with CUDA events after warm-up, on
// model-shaped inputs (StarCoder-1B, SmolLM2-135M), and prints achieved GB/s or TFLOP/s next
// to the device's ceilings: a device-to-device copy measured in the same run and the spec
// numbers from docs/performance.md. Needs a GPU; exits 0 with a note when there is none.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#include "dequant.h"
#include "device.h"
#include "embed.h"
#include "gelu.h"
#include "gemm.h"
#include "kv_write.h"
#include "layernorm.h"
#include "paged_attention.h"
#include "prefill_attention.h"
#include "rmsnorm.h"
#include "rope.h"
#include "sampling.h"
#include "swiglu.h"

#define CHECK(x)                                                                              \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)
#define KN(x)                                                                                 \
    do {                                                                                      \
        kn_status s_ = (x);                                                                   \
        if (s_ != KN_OK) {                                                                    \
            fprintf(stderr, "%s: %s: %s\n", #x, kn_status_str(s_), kn_last_error());          \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

struct bench_ctx {
    cudaStream_t st;
    cudaEvent_t e0, e1;
    double copy_gbs; // measured device-to-device copy bandwidth (read + write)
    double spec_gbs, spec_tflops;
};

// Mean milliseconds per call of fn over iters calls, after 3 warm-up calls.
template <typename F> static double time_ms(bench_ctx &c, int iters, F fn)
{
    for (int i = 0; i < 3; i++)
        fn();
    CHECK(cudaStreamSynchronize(c.st));
    CHECK(cudaEventRecord(c.e0, c.st));
    for (int i = 0; i < iters; i++)
        fn();
    CHECK(cudaEventRecord(c.e1, c.st));
    CHECK(cudaEventSynchronize(c.e1));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, c.e0, c.e1));
    return ms / iters;
}

static void report_bw(const bench_ctx &c, const char *name, double ms, double bytes)
{
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    printf("%-44s %9.3f ms %9.1f GB/s  %5.1f%% of copy  %5.1f%% of spec\n", name, ms, gbs,
           100.0 * gbs / c.copy_gbs, 100.0 * gbs / c.spec_gbs);
}

static void report_flops(const bench_ctx &c, const char *name, double ms, double flops)
{
    const double tf = flops / (ms * 1e-3) / 1e12;
    printf("%-44s %9.3f ms %9.1f TFLOP/s  %5.1f%% of dense bf16 spec\n", name, ms, tf,
           100.0 * tf / c.spec_tflops);
}

static void *dev_random(size_t n_half, unsigned seed) // n_half 16-bit values in [-1, 1)
{
    std::vector<uint16_t> h(n_half);
    srand(seed);
    for (size_t i = 0; i < n_half; i++) // bf16 and fp16 bit patterns of small values both work
        h[i] = (uint16_t)(0x3c00 ^ (rand() & 0x83ff)) & 0xbbff;
    void *d = NULL;
    CHECK(cudaMalloc(&d, n_half * 2 + 16));
    CHECK(cudaMemcpy(d, h.data(), n_half * 2, cudaMemcpyHostToDevice));
    return d;
}

static void bench_attention(bench_ctx &c, const char *name, int n_seq, int len, int n_head,
                            int n_kv, int hd, bool prefill, int q_len)
{
    const int bs = 16, nb_seq = (len + bs - 1) / bs;
    const int64_t n_blocks = (int64_t)n_seq * nb_seq, kv_dim = (int64_t)n_kv * hd;
    std::vector<int32_t> tables((size_t)n_blocks), lens((size_t)n_seq, len), qs((size_t)n_seq + 1);
    for (int64_t i = 0; i < n_blocks; i++) // interleave sequences' blocks, as a busy pool does
        tables[(size_t)i] = (int32_t)((i % nb_seq) * n_seq + i / nb_seq);
    for (int s = 0; s <= n_seq; s++)
        qs[(size_t)s] = s * q_len;
    const int n_tok = prefill ? n_seq * q_len : n_seq;
    void *k = dev_random((size_t)(n_blocks * bs * kv_dim), 1), *v = dev_random((size_t)(n_blocks * bs * kv_dim), 2);
    void *q = dev_random((size_t)n_tok * n_head * hd, 3), *out = dev_random((size_t)n_tok * n_head * hd, 4);
    int32_t *dt, *dl, *dq;
    CHECK(cudaMalloc(&dt, tables.size() * 4));
    CHECK(cudaMalloc(&dl, lens.size() * 4));
    CHECK(cudaMalloc(&dq, qs.size() * 4));
    CHECK(cudaMemcpy(dt, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dl, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dq, qs.data(), qs.size() * 4, cudaMemcpyHostToDevice));
    kn_attn_args a;
    memset(&a, 0, sizeof a);
    a.q_dtype = KN_DTYPE_BF16;
    a.kv_dtype = KN_DTYPE_F16;
    a.q = q;
    a.q_stride = (int64_t)n_head * hd;
    a.k_cache = k;
    a.v_cache = v;
    a.n_slots = n_blocks * bs;
    a.block_tables = dt;
    a.max_blocks_per_seq = nb_seq;
    a.seq_lens = dl;
    a.q_start = prefill ? dq : NULL;
    a.n_seq = n_seq;
    a.n_head = n_head;
    a.n_head_kv = n_kv;
    a.head_dim = hd;
    a.block_size = bs;
    a.max_seq_len = len;
    a.max_q_len = q_len;
    a.scale = 1.0f / sqrtf((float)hd);
    a.out = out;
    a.out_stride = a.q_stride;
    if (prefill) {
        // QK^T and PV over the causal triangle of each chunk (chunk at the end of len)
        double pairs = 0;
        for (int i = 0; i < q_len; i++)
            pairs += len - q_len + i + 1;
        const double ms = time_ms(c, 10, [&] { KN(kn_prefill_attn(&a, c.st)); });
        report_flops(c, (std::string(name) + " SIMT").c_str(), ms, 4.0 * n_seq * n_head * hd * pairs);
        const double ms_tc = time_ms(c, 10, [&] { KN(kn_prefill_attn_tc(&a, c.st)); });
        report_flops(c, (std::string(name) + " tensor cores").c_str(), ms_tc,
                     4.0 * n_seq * n_head * hd * pairs);
    } else {
        size_t ws_bytes = 0;
        KN(kn_paged_attn_decode_workspace(&a, 0, &ws_bytes));
        void *ws = NULL;
        if (ws_bytes)
            CHECK(cudaMalloc(&ws, ws_bytes));
        const double ms = time_ms(c, 20, [&] { KN(kn_paged_attn_decode(&a, 0, ws, ws_bytes, c.st)); });
        report_bw(c, name, ms, 2.0 * n_seq * (double)len * kv_dim * 2); // K and V, fp16
        cudaFree(ws);
    }
    cudaFree(k), cudaFree(v), cudaFree(q), cudaFree(out), cudaFree(dt), cudaFree(dl), cudaFree(dq);
}

int main(void)
{
    if (kn_device_count() <= 0) {
        printf("bench_kernels: no CUDA device, nothing to time\n");
        return 0;
    }
    bench_ctx c;
    char dev[256] = "?";
    kn_device_name(0, dev, sizeof dev);
    // spec ceilings (performance.md): H100 SXM 3.35 TB/s, H200 4.8 TB/s; dense bf16 ≈989 TFLOP/s
    c.spec_gbs = strstr(dev, "H200") ? 4800.0 : 3350.0;
    c.spec_tflops = 989.0;
    CHECK(cudaStreamCreate(&c.st));
    CHECK(cudaEventCreate(&c.e0));
    CHECK(cudaEventCreate(&c.e1));
    printf("device: %s\n", dev);

    const size_t big = (size_t)1 << 30;
    void *a0, *a1;
    CHECK(cudaMalloc(&a0, big));
    CHECK(cudaMalloc(&a1, big));
    CHECK(cudaMemset(a0, 1, big));
    c.copy_gbs = 1.0;
    const double copy_ms = time_ms(c, 10, [&] { CHECK(cudaMemcpyAsync(a1, a0, big, cudaMemcpyDeviceToDevice, c.st)); });
    c.copy_gbs = 2.0 * big / (copy_ms * 1e-3) / 1e9;
    printf("%-44s %9.3f ms %9.1f GB/s  (the measured ceiling below)\n", "device-to-device copy 1 GiB", copy_ms, c.copy_gbs);
    cudaFree(a0);
    cudaFree(a1);

    { // elementwise and row ops on a prefill-sized batch: 4096 tokens × d 2048 (StarCoder-1B)
        const int64_t n = 4096, d = 2048, ff = 8192;
        float *resid;
        CHECK(cudaMalloc(&resid, sizeof(float) * n * d));
        CHECK(cudaMemset(resid, 0, sizeof(float) * n * d));
        void *add = dev_random((size_t)(n * d), 5), *w = dev_random((size_t)d, 6), *b = dev_random((size_t)d, 7);
        void *out = dev_random((size_t)(n * d), 8);
        double ms = time_ms(c, 20, [&] { KN(kn_rmsnorm(KN_DTYPE_BF16, resid, add, w, out, n, d, 1e-5f, c.st)); });
        report_bw(c, "rmsnorm+residual 4096x2048 bf16", ms, (double)n * d * (4 + 4 + 2 + 2));
        ms = time_ms(c, 20, [&] { KN(kn_layernorm(KN_DTYPE_BF16, resid, add, w, b, out, n, d, 1e-5f, c.st)); });
        report_bw(c, "layernorm+residual 4096x2048 bf16", ms, (double)n * d * (4 + 4 + 2 + 2));
        void *gu = dev_random((size_t)(n * 2 * ff), 9);
        ms = time_ms(c, 20, [&] { KN(kn_swiglu(KN_DTYPE_BF16, gu, (char *)gu + 2 * ff, 2 * ff, gu, 2 * ff, n, ff, c.st)); });
        report_bw(c, "swiglu 4096x8192 bf16 (in place)", ms, (double)n * ff * 6);
        ms = time_ms(c, 20, [&] { KN(kn_gelu(KN_DTYPE_BF16, gu, gu, n * ff, c.st)); });
        report_bw(c, "gelu 4096x8192 bf16 (in place)", ms, (double)n * ff * 4);
        // RoPE on fused QKV rows: 16 query heads + 1 KV head of 128 (StarCoder-1B is MQA)
        int32_t *pos;
        CHECK(cudaMalloc(&pos, sizeof(int32_t) * n));
        CHECK(cudaMemset(pos, 0, sizeof(int32_t) * n));
        ms = time_ms(c, 20, [&] { KN(kn_rope(KN_DTYPE_BF16, gu, 18 * 128, pos, n, 17, 128, 10000.0f, NULL, KN_ROPE_NEOX, c.st)); });
        report_bw(c, "rope neox 4096 tok x 17 heads x 128", ms, (double)n * 17 * 128 * 4);
        // embedding gather into the fp32 residual
        void *table = dev_random((size_t)49152 * d, 10);
        ms = time_ms(c, 20, [&] { KN(kn_embed(KN_DTYPE_BF16, table, 49152, d, pos, n, KN_DTYPE_F32, resid, c.st)); });
        report_bw(c, "embed 4096 tok x 2048 -> fp32", ms, (double)n * d * 6);
        // KV write: 4096 tokens × (1 × 128) K and V
        void *kc = dev_random((size_t)n * 128, 11), *vc = dev_random((size_t)n * 128, 12);
        std::vector<int32_t> slots((size_t)n);
        for (int64_t i = 0; i < n; i++)
            slots[(size_t)i] = (int32_t)((i * 7919) % n);
        int32_t *ds;
        CHECK(cudaMalloc(&ds, sizeof(int32_t) * n));
        CHECK(cudaMemcpy(ds, slots.data(), sizeof(int32_t) * n, cudaMemcpyHostToDevice));
        ms = time_ms(c, 20, [&] { KN(kn_kv_write(KN_DTYPE_BF16, gu, (char *)gu + 256, 18 * 128, ds, n, 128, KN_DTYPE_F16, kc, vc, n, c.st)); });
        report_bw(c, "kv_write 4096 tok x 128 (K and V)", ms, (double)n * 128 * 8);
        cudaFree(resid), cudaFree(add), cudaFree(w), cudaFree(b), cudaFree(out), cudaFree(gu);
        cudaFree(pos), cudaFree(table), cudaFree(kc), cudaFree(vc), cudaFree(ds);
    }
    { // load-time dequantisation: a 8192 x 2048 Q4_1 matrix to bf16
        const int64_t rows = 8192, cols = 2048;
        const size_t qb = (size_t)(rows * cols / 32) * 20;
        void *src = dev_random(qb / 2, 13), *dst = dev_random((size_t)(rows * cols), 14);
        const double ms = time_ms(c, 10, [&] { KN(kn_dequant(KN_QTYPE_Q4_1, src, rows, cols, KN_DTYPE_BF16, dst, c.st)); });
        report_bw(c, "dequant Q4_1 8192x2048 -> bf16", ms, (double)qb + rows * cols * 2.0);
        cudaFree(src), cudaFree(dst);
    }
    // decode attention: memory-bound on the KV read
    bench_attention(c, "decode attn StarCoder-1B B=256 ctx 1024", 256, 1024, 16, 1, 128, false, 1);
    bench_attention(c, "decode attn SmolLM2 B=64 ctx 2048", 64, 2048, 9, 3, 64, false, 1);
    bench_attention(c, "decode attn SmolLM2 B=1 ctx 8192 (split-K)", 1, 8192, 9, 3, 64, false, 1);
    // prefill attention: compute-bound; the code-completion prompt shape
    bench_attention(c, "prefill attn StarCoder-1B 1x1536", 1, 1536, 16, 1, 128, true, 1536);
    bench_attention(c, "prefill attn 8 chunks of 512 at ctx 2048", 8, 2048, 16, 1, 128, true, 512);
    { // GEMMs: prefill (compute-bound) and decode (weight-read-bound)
        kn_gemm *g;
        KN(kn_gemm_create(&g));
        const int64_t m = 4096, n = 8192, k = 2048;
        void *x = dev_random((size_t)(m * k), 15), *w = dev_random((size_t)(n * k), 16), *y = dev_random((size_t)(m * n), 17);
        double ms = time_ms(c, 10, [&] { KN(kn_gemm_run(g, c.st, KN_DTYPE_BF16, x, k, w, k, KN_DTYPE_BF16, y, n, m, n, k, 1.0f, 0.0f)); });
        report_flops(c, "gemm bf16 4096x8192x2048", ms, 2.0 * m * n * k);
        ms = time_ms(c, 20, [&] { KN(kn_gemm_run(g, c.st, KN_DTYPE_BF16, x, k, w, k, KN_DTYPE_BF16, y, n, 1, n, k, 1.0f, 0.0f)); });
        report_bw(c, "gemm bf16 1x8192x2048 (decode, weight read)", ms, 2.0 * n * k);
        kn_gemm_free(g);
        cudaFree(x), cudaFree(w), cudaFree(y);
    }
    { // sampling: 256 rows of a 49152 vocabulary, top-k 50 + top-p 0.9
        const int rows = 256, V = 49152;
        std::vector<float> l((size_t)rows * V);
        for (size_t i = 0; i < l.size(); i++)
            l[i] = (float)((i * 2654435761u) % 1000) / 100.0f;
        std::vector<kn_sample_params> p((size_t)rows);
        for (int i = 0; i < rows; i++)
            p[(size_t)i] = kn_sample_params{0.8f, 50, 0.9f, 0, (uint64_t)i, 0};
        float *dl;
        kn_sample_params *dp;
        int32_t *dt;
        CHECK(cudaMalloc(&dl, l.size() * 4));
        CHECK(cudaMalloc(&dp, p.size() * sizeof(kn_sample_params)));
        CHECK(cudaMalloc(&dt, rows * 4));
        CHECK(cudaMemcpy(dl, l.data(), l.size() * 4, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(dp, p.data(), p.size() * sizeof(kn_sample_params), cudaMemcpyHostToDevice));
        const double ms = time_ms(c, 10, [&] { KN(kn_sample(dl, V, rows, V, dp, dt, NULL, c.st)); });
        report_bw(c, "sample 256 x 49152 top-k 50 top-p 0.9", ms, (double)rows * V * 4);
        cudaFree(dl), cudaFree(dp), cudaFree(dt);
    }
    CHECK(cudaStreamSynchronize(c.st));
    return 0;
}
