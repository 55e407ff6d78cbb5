// bench_kernels.cu — the kernel workbench (llm.c's dev/cuda): for every case of every op in
// tests/kernels/kt_cases.c it first checks the GPU result against kernels/ref with the
// tests' tolerance, then times each variant (decode split counts, SIMT vs tensor-core
// prefill) with CUDA events after warm-up and an L2 flush before every timed call, and prints
// achieved GB/s and TFLOP/s as a fraction of the device's ceilings (peak bandwidth from the
// memory clock and bus width, dense bf16 tensor peak from a table; a measured device copy).
//   bench_kernels [--cases bench|test|all] [--op SUBSTRING] [--iters N] [--validate-only]
// Exit 0 when every case validated, 1 when one did not, 77 without a CUDA device.
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "attn_case.h"
#include "allreduce_p2p.h"
#include "bias_add.h"
#include "dequant.h"
#include "device.h"
#include "embed.h"
#include "gelu.h"
#include "gemm.h"
#include "kt_cases.h"
#include "kt_data.h"
#include "kv_write.h"
#include "layernorm.h"
#include "paged_attention.h"
#include "pool_l2.h"
#include "prefill_attention.h"
#include "ref.h"
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

struct bench {
    cudaStream_t st;
    cudaEvent_t e0, e1;
    void *flush;        // written before every timed call: 2x the L2, so nothing stays cached
    size_t flush_bytes;
    double peak_gbs;    // from the memory clock and bus width
    double peak_tflops; // dense bf16/fp16 tensor peak, 0 when the device is not in the table
    double copy_gbs;    // a measured device-to-device copy (read + write)
    unsigned use;       // KT_TEST, KT_BENCH or both
    const char *op;     // only cases whose name contains it
    int iters;
    bool validate_only;
    int n_fail, n_ok;
};

static bool selected(const bench &b, unsigned use, const char *name)
{
    return (use & b.use) && (!b.op || strstr(name, b.op));
}

// ---- device memory ---------------------------------------------------------------------------
static void *dev_alloc(size_t bytes) // poisoned with 0xff (NaN), like the tests' buffers
{
    void *d = NULL;
    CHECK(cudaMalloc(&d, bytes ? bytes : 1));
    CHECK(cudaMemset(d, 0xff, bytes ? bytes : 1));
    return d;
}
static void *dev_upload(const void *h, size_t bytes)
{
    void *d = dev_alloc(bytes);
    CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    return d;
}
static void *host_download(const void *d, size_t bytes)
{
    CHECK(cudaDeviceSynchronize());
    void *h = kt_xmalloc(bytes);
    CHECK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
    return h;
}

// ---- validation and timing -------------------------------------------------------------------
static bool check(bench &b, const char *name, const char *variant, kn_dtype dt, const void *got,
                  const void *want, size_t n, double rtol)
{
    const kt_diff d = kt_compare(dt, got, want, n, rtol);
    if (d.first_bad >= 0) {
        printf("%-46s %-14s FAIL: element %lld is %.7g, want %.7g (rtol %.3g)\n", name, variant,
               (long long)d.first_bad, d.got, d.want, rtol);
        b.n_fail++;
        return false;
    }
    if (b.validate_only)
        printf("%-46s %-14s ok (max rel err %.3g, rtol %.3g)\n", name, variant, d.worst, rtol);
    b.n_ok++;
    return true;
}
static bool check_bytes(bench &b, const char *name, const void *got, const void *want, size_t n,
                        const void *got2 = NULL, const void *want2 = NULL)
{
    if (memcmp(got, want, n) != 0 || (got2 && memcmp(got2, want2, n) != 0)) {
        printf("%-46s %-14s FAIL: differs from the reference\n", name, "");
        b.n_fail++;
        return false;
    }
    if (b.validate_only)
        printf("%-46s %-14s ok (bit-exact)\n", name, "");
    b.n_ok++;
    return true;
}

// Median and best milliseconds of one call of fn over b.iters calls after 3 warm-up calls, the
// L2 flushed before each timed call (the flush itself is outside the events).
template <typename F> static void time_report(bench &b, const char *name, const char *variant,
                                              double bytes, double flops, F fn)
{
    if (b.validate_only)
        return;
    for (int i = 0; i < 3; i++)
        fn();
    std::vector<float> ms((size_t)b.iters);
    for (int i = 0; i < b.iters; i++) {
        CHECK(cudaMemsetAsync(b.flush, i & 0xff, b.flush_bytes, b.st));
        CHECK(cudaEventRecord(b.e0, b.st));
        fn();
        CHECK(cudaEventRecord(b.e1, b.st));
        CHECK(cudaEventSynchronize(b.e1));
        CHECK(cudaEventElapsedTime(&ms[(size_t)i], b.e0, b.e1));
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2], best = ms[0];
    printf("%-46s %-14s %9.4f ms (best %9.4f)", name, variant, med, best);
    if (bytes > 0) {
        const double gbs = bytes / (med * 1e-3) / 1e9;
        printf("  %8.1f GB/s %5.1f%% of peak %5.1f%% of copy", gbs, 100.0 * gbs / b.peak_gbs,
               100.0 * gbs / b.copy_gbs);
    }
    if (flops > 0) {
        const double tf = flops / (med * 1e-3) / 1e12;
        printf("  %7.2f TFLOP/s", tf);
        if (b.peak_tflops > 0)
            printf(" %5.1f%% of tensor peak", 100.0 * tf / b.peak_tflops);
    }
    printf("\n");
}

// ---- ops -------------------------------------------------------------------------------------
static void bench_embed(bench &b)
{
    for (size_t i = 0; i < kt_embed_cases_count; i++) {
        const kt_embed_case *c = &kt_embed_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        std::vector<int32_t> tok((size_t)c->n);
        for (auto &t : tok)
            t = kt_rng_int(&r, (int32_t)c->n_vocab);
        void *table = kt_host_random(c->table_dt, (size_t)(c->n_vocab * c->d), -1.0f, 1.0f, &r);
        const size_t tb = kn_dtype_size(c->table_dt) * (size_t)(c->n_vocab * c->d);
        const size_t ob = kn_dtype_size(c->out_dt) * (size_t)(c->n * c->d);
        void *dtab = dev_upload(table, tb), *dtok = dev_upload(tok.data(), tok.size() * 4);
        void *dout = dev_alloc(ob), *want = kt_xmalloc(ob);
        auto run = [&] {
            KN(kn_embed(c->table_dt, dtab, c->n_vocab, c->d, (const int32_t *)dtok, c->n,
                        c->out_dt, dout, b.st));
        };
        run();
        void *got = host_download(dout, ob);
        kn_ref_embed(c->table_dt, table, c->n_vocab, c->d, tok.data(), c->n, c->out_dt, want);
        if (check(b, c->name, "", c->out_dt, got, want, (size_t)(c->n * c->d), 0.0))
            time_report(b, c->name, "", (double)c->n * c->d * kn_dtype_size(c->table_dt) + ob, 0, run);
        cudaFree(dtab), cudaFree(dtok), cudaFree(dout);
        free(table), free(want), free(got);
    }
}

static void bench_embed_add(bench &b)
{
    for (size_t i = 0; i < kt_embed_add_cases_count; i++) {
        const kt_embed_case *c = &kt_embed_add_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        std::vector<int32_t> idx((size_t)c->n);
        for (size_t t = 0; t < idx.size(); t++)
            idx[t] = (int32_t)(t % (size_t)c->n_vocab);
        void *table = kt_host_random(c->table_dt, (size_t)(c->n_vocab * c->d), -1.0f, 1.0f, &r);
        const size_t tb = kn_dtype_size(c->table_dt) * (size_t)(c->n_vocab * c->d);
        const size_t ob = sizeof(float) * (size_t)(c->n * c->d);
        float *want = (float *)kt_host_random(KN_DTYPE_F32, (size_t)(c->n * c->d), -3.0f, 3.0f, &r);
        void *dtab = dev_upload(table, tb), *didx = dev_upload(idx.data(), idx.size() * 4);
        void *dout = dev_upload(want, ob);
        auto run = [&] {
            KN(kn_embed_add(c->table_dt, dtab, c->n_vocab, c->d, (const int32_t *)didx, c->n,
                            (float *)dout, b.st));
        };
        run(); // once: the timed calls keep adding, only this one is checked
        void *got = host_download(dout, ob);
        kn_ref_embed_add(c->table_dt, table, c->n_vocab, c->d, idx.data(), c->n, want);
        // table rows read, the fp32 stream read and written
        const double bytes = (double)c->n * c->d * kn_dtype_size(c->table_dt) + 2.0 * ob;
        if (check(b, c->name, "", KN_DTYPE_F32, got, want, (size_t)(c->n * c->d), 0.0))
            time_report(b, c->name, "", bytes, 0, run);
        cudaFree(dtab), cudaFree(didx), cudaFree(dout);
        free(table), free(want), free(got);
    }
}

static void bench_norm(bench &b, bool layer)
{
    const kt_norm_case *cases = layer ? kt_layernorm_cases : kt_rmsnorm_cases;
    const size_t count = layer ? kt_layernorm_cases_count : kt_rmsnorm_cases_count;
    for (size_t i = 0; i < count; i++) {
        const kt_norm_case *c = &cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        const size_t nd = (size_t)(c->n * c->d), ob = kn_dtype_size(c->dt) * nd;
        float *resid = (float *)kt_host_random(KN_DTYPE_F32, nd, -2.0f, 2.0f, &r);
        void *add = kt_host_random(c->dt, nd, -1.0f, 1.0f, &r);
        void *w = kt_host_random(c->dt, (size_t)c->d, 0.5f, 1.5f, &r);
        void *bias = kt_host_random(c->dt, (size_t)c->d, -0.5f, 0.5f, &r);
        void *dres = dev_upload(resid, nd * 4), *dadd = dev_upload(add, ob);
        void *dw = dev_upload(w, kn_dtype_size(c->dt) * (size_t)c->d);
        void *db = dev_upload(bias, kn_dtype_size(c->dt) * (size_t)c->d), *dout = dev_alloc(ob);
        void *want = kt_xmalloc(ob);
        const void *a = c->add ? dadd : NULL;
        auto run = [&] {
            if (layer)
                KN(kn_layernorm(c->dt, (float *)dres, a, dw, db, dout, c->n, c->d, 1e-5f, b.st));
            else
                KN(kn_rmsnorm(c->dt, (float *)dres, a, dw, dout, c->n, c->d, 1e-5f, b.st));
        };
        run();
        void *got = host_download(dout, ob);
        if (layer)
            kn_ref_layernorm(c->dt, resid, c->add ? add : NULL, w, bias, want, c->n, c->d, 1e-5f);
        else
            kn_ref_rmsnorm(c->dt, resid, c->add ? add : NULL, w, want, c->n, c->d, 1e-5f);
        // resid read and written, add and out once
        const double bytes = (double)nd * (8 + (c->add ? kn_dtype_size(c->dt) : 0)) + ob;
        if (check(b, c->name, "", c->dt, got, want, nd, kt_rtol(c->dt)))
            time_report(b, c->name, "", bytes, 0, run);
        cudaFree(dres), cudaFree(dadd), cudaFree(dw), cudaFree(db), cudaFree(dout);
        free(resid), free(add), free(w), free(bias), free(want), free(got);
    }
}

static void bench_rope(bench &b)
{
    for (size_t i = 0; i < kt_rope_cases_count; i++) {
        const kt_rope_case *c = &kt_rope_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        const int64_t stride = (int64_t)(c->n_heads + 3) * c->head_dim; // V heads follow
        const size_t n = (size_t)(c->n_tok * stride), bytes = n * kn_dtype_size(c->dt);
        void *x = kt_host_random(c->dt, n, -1.0f, 1.0f, &r);
        std::vector<int32_t> pos((size_t)c->n_tok);
        for (size_t t = 0; t < pos.size(); t++)
            pos[t] = t == 0 ? 0 : t == 1 ? 32767 : kt_rng_int(&r, 4096);
        std::vector<float> ff((size_t)c->head_dim / 2);
        for (auto &f : ff)
            f = kt_rng_uniform(&r, 1.0f, 8.0f);
        const float *factors = c->factors ? ff.data() : NULL;
        void *dx = dev_upload(x, bytes), *dpos = dev_upload(pos.data(), pos.size() * 4);
        auto run = [&] {
            KN(kn_rope(c->dt, dx, stride, (const int32_t *)dpos, c->n_tok, c->n_heads,
                       c->head_dim, 10000.0f, c->freq_scale, factors, c->mode, b.st));
        };
        run();
        void *got = host_download(dx, bytes);
        kn_ref_rope(c->dt, x, stride, pos.data(), c->n_tok, c->n_heads, c->head_dim, 10000.0f,
                    c->freq_scale, factors, c->mode);
        const double moved = 2.0 * c->n_tok * c->n_heads * c->head_dim * kn_dtype_size(c->dt);
        if (check(b, c->name, "", c->dt, got, x, n, kt_rope_rtol(c->dt)))
            time_report(b, c->name, "", moved, 0, run);
        cudaFree(dx), cudaFree(dpos);
        free(x), free(got);
    }
}

static void bench_kv_write(bench &b)
{
    for (size_t i = 0; i < kt_kv_write_cases_count; i++) {
        const kt_kv_write_case *c = &kt_kv_write_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        std::vector<int32_t> slots((size_t)c->n_tok);
        kt_kv_slots(c, slots.data());
        const size_t sb = kn_dtype_size(c->src_dt), cb = kn_dtype_size(c->cache_dt);
        void *src = kt_host_random(c->src_dt, (size_t)(c->n_tok * c->src_stride), -1.0f, 1.0f, &r);
        const size_t cache = cb * (size_t)(c->n_slots * c->kv_dim);
        void *dsrc = dev_upload(src, sb * (size_t)(c->n_tok * c->src_stride));
        void *dslots = dev_upload(slots.data(), slots.size() * 4);
        void *dk = dev_alloc(cache), *dv = dev_alloc(cache);
        void *wk = kt_xmalloc(cache), *wv = kt_xmalloc(cache);
        memset(wk, 0xff, cache);
        memset(wv, 0xff, cache);
        auto run = [&] {
            KN(kn_kv_write(c->src_dt, dsrc, (char *)dsrc + sb * (size_t)c->kv_dim, c->src_stride,
                           (const int32_t *)dslots, c->n_tok, c->kv_dim, c->cache_dt, dk, dv,
                           c->n_slots, b.st));
        };
        run();
        void *gk = host_download(dk, cache), *gv = host_download(dv, cache);
        kn_ref_kv_write(c->src_dt, src, (char *)src + sb * (size_t)c->kv_dim, c->src_stride,
                        slots.data(), c->n_tok, c->kv_dim, c->cache_dt, wk, wv);
        if (check_bytes(b, c->name, gk, wk, cache, gv, wv)) // K and V caches
            time_report(b, c->name, "", 2.0 * c->n_tok * c->kv_dim * (sb + cb), 0, run);
        cudaFree(dsrc), cudaFree(dslots), cudaFree(dk), cudaFree(dv);
        free(src), free(wk), free(wv), free(gk), free(gv);
    }
}

// act: 0 SwiGLU, 1 GELU (tanh approximation), 2 GELU (exact erf form, BERT)
static void bench_activation(bench &b, int act)
{
    const bool gelu = act != 0, exact = act == 2;
    const kt_act_case *cases = exact ? kt_gelu_erf_cases : gelu ? kt_gelu_cases : kt_swiglu_cases;
    const size_t count = exact  ? kt_gelu_erf_cases_count
                         : gelu ? kt_gelu_cases_count
                                : kt_swiglu_cases_count;
    for (size_t i = 0; i < count; i++) {
        const kt_act_case *c = &cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        const size_t es = kn_dtype_size(c->dt);
        const int64_t stride = 2 * c->ff; // swiglu: a fused gate|up row
        const size_t n = gelu ? (size_t)c->n : (size_t)(c->n * stride);
        void *x = kt_host_random(c->dt, n, gelu ? -5.0f : -6.0f, gelu ? 5.0f : 6.0f, &r);
        void *want = kt_xmalloc(n * es);
        memcpy(want, x, n * es);
        void *dx = dev_upload(x, n * es), *dout = gelu ? dev_alloc(n * es) : dx;
        auto run = [&] {
            if (exact)
                KN(kn_gelu_erf(c->dt, dx, dout, c->n, b.st));
            else if (gelu)
                KN(kn_gelu(c->dt, dx, dout, c->n, b.st));
            else // in place: the output overwrites the gate half
                KN(kn_swiglu(c->dt, dx, (char *)dx + es * (size_t)c->ff, stride, dx, stride, c->n,
                             c->ff, b.st));
        };
        run();
        void *got = host_download(dout, n * es);
        if (exact)
            kn_ref_gelu_erf(c->dt, x, want, c->n);
        else if (gelu)
            kn_ref_gelu(c->dt, x, want, c->n);
        else
            kn_ref_swiglu(c->dt, x, (char *)x + es * (size_t)c->ff, stride, want, stride, c->n, c->ff);
        const double bytes = gelu ? 2.0 * n * es : 3.0 * c->n * c->ff * es;
        if (check(b, c->name, "", c->dt, got, want, n, kt_rtol(c->dt)))
            time_report(b, c->name, "", bytes, 0, run);
        cudaFree(dx);
        if (gelu)
            cudaFree(dout);
        free(x), free(want), free(got);
    }
}

// Qwen2's Q/K/V biases on fused QKV rows (rows ff + 5 apart, as the test), in place
static void bench_bias_add(bench &b)
{
    for (size_t i = 0; i < kt_bias_add_cases_count; i++) {
        const kt_act_case *c = &kt_bias_add_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        const size_t es = kn_dtype_size(c->dt);
        const int64_t stride = c->ff + 5;
        const size_t n = (size_t)(c->n * stride);
        void *x = kt_host_random(c->dt, n, -4.0f, 4.0f, &r);
        float *bias = (float *)kt_host_random(KN_DTYPE_F32, (size_t)c->ff, -2.0f, 2.0f, &r);
        void *want = kt_xmalloc(n * es);
        memcpy(want, x, n * es);
        void *dx = dev_upload(x, n * es), *db = dev_upload(bias, sizeof(float) * (size_t)c->ff);
        auto run = [&] { KN(kn_bias_add(c->dt, dx, stride, (const float *)db, c->n, c->ff, b.st)); };
        run();
        void *got = host_download(dx, n * es);
        kn_ref_bias_add(c->dt, want, stride, bias, c->n, c->ff);
        // later runs add the bias again: time only after the one checked run
        if (check_bytes(b, c->name, got, want, n * es))
            time_report(b, c->name, "", 2.0 * c->n * c->ff * es + 4.0 * c->ff, 0, run);
        cudaFree(dx), cudaFree(db);
        free(x), free(bias), free(want), free(got);
    }
}

// Sentence pooling + L2 (encoders): each text's rows read once, one fp32 row per text out
static void bench_pool_l2(bench &b)
{
    for (size_t i = 0; i < kt_pool_l2_cases_count; i++) {
        const kt_pool_case *c = &kt_pool_l2_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed + 1000);
        std::vector<int32_t> off((size_t)c->n_seq), len((size_t)c->n_seq);
        const int64_t n_tok = kt_pool_layout(c, off.data(), len.data());
        const size_t es = kn_dtype_size(c->dt), n_x = (size_t)(n_tok * c->stride);
        const size_t n_out = (size_t)(c->n_seq * c->d);
        void *x = kt_host_random(c->dt, n_x ? n_x : 1, -1.0f, 3.0f, &r);
        float *want = (float *)kt_xmalloc(sizeof(float) * n_out);
        void *dx = dev_upload(x, es * (n_x ? n_x : 1)), *dout = dev_alloc(sizeof(float) * n_out);
        void *doff = dev_upload(off.data(), sizeof(int32_t) * off.size());
        void *dlen = dev_upload(len.data(), sizeof(int32_t) * len.size());
        const kn_pool_mode mode = c->cls ? KN_POOL_MODE_CLS : KN_POOL_MODE_MEAN;
        auto run = [&] {
            KN(kn_pool_l2(c->dt, dx, c->stride, c->d, (const int32_t *)doff, (const int32_t *)dlen,
                          c->n_seq, mode, (float *)dout, b.st));
        };
        run();
        void *got = host_download(dout, sizeof(float) * n_out);
        kn_ref_pool_l2(c->dt, x, c->stride, c->d, off.data(), len.data(), c->n_seq, c->cls, want);
        const double rows = c->cls ? (double)c->n_seq : (double)n_tok;
        if (check(b, c->name, "", KN_DTYPE_F32, got, want, n_out, kt_rtol(KN_DTYPE_F32)))
            time_report(b, c->name, "", rows * c->d * es + 4.0 * n_out, 0, run);
        cudaFree(dx), cudaFree(dout), cudaFree(doff), cudaFree(dlen);
        free(x), free(want), free(got);
    }
}

// The p2p all-reduce's summing step: n ranks' buffers read, one written (all on this GPU)
static void bench_p2p_sum(bench &b)
{
    for (size_t i = 0; i < kt_p2p_sum_cases_count; i++) {
        const kt_act_case *c = &kt_p2p_sum_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        const size_t bytes = (size_t)c->ff * kn_dtype_size(c->dt);
        void *host[KN_P2P_MAX_RANKS];
        const void *dev[KN_P2P_MAX_RANKS];
        for (int q = 0; q < c->n; q++) {
            host[q] = kt_host_random(c->dt, (size_t)c->ff, -2.0f, 2.0f, &r);
            dev[q] = dev_upload(host[q], bytes);
        }
        void *want = kt_xmalloc(bytes), *dout = dev_alloc(bytes);
        auto run = [&] { KN(kn_p2p_sum(c->dt, dev, (int)c->n, dout, c->ff, b.st)); };
        run();
        void *got = host_download(dout, bytes);
        kn_ref_sum_ranks(c->dt, (const void *const *)host, (int)c->n, want, c->ff);
        if (check_bytes(b, c->name, got, want, bytes))
            time_report(b, c->name, "", (double)(c->n + 1) * bytes, 0, run);
        for (int q = 0; q < c->n; q++) {
            cudaFree((void *)dev[q]);
            free(host[q]);
        }
        cudaFree(dout);
        free(want), free(got);
    }
}

static void bench_dequant(bench &b)
{
    for (size_t i = 0; i < kt_dequant_cases_count; i++) {
        const kt_dequant_case *c = &kt_dequant_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        size_t sb = 0;
        void *src = kt_dequant_source(c, &r, &sb);
        const size_t ob = kn_dtype_size(c->out_dt) * (size_t)(c->rows * c->cols);
        void *dsrc = dev_upload(src, sb), *dout = dev_alloc(ob), *want = kt_xmalloc(ob);
        auto run = [&] { KN(kn_dequant(c->type, dsrc, c->rows, c->cols, c->out_dt, dout, b.st)); };
        run();
        void *got = host_download(dout, ob);
        kn_ref_dequant(c->type, src, c->rows, c->cols, c->out_dt, want);
        if (check_bytes(b, c->name, got, want, ob))
            time_report(b, c->name, "", (double)(sb + ob), 0, run);
        cudaFree(dsrc), cudaFree(dout);
        free(src), free(want), free(got);
    }
}

// Device copies of an attention case's arrays; a.* point at them.
struct dev_attn {
    kn_attn_args a;
    void *q, *k, *v, *out, *tables, *lens, *q_start;
    size_t out_bytes;
};
static dev_attn attn_upload(const attn_case &c)
{
    dev_attn d;
    const kn_attn_args &h = c.a;
    const size_t qb = kn_dtype_size(h.q_dtype), kvb = kn_dtype_size(h.kv_dtype);
    d.a = h;
    d.q = dev_upload(c.q, c.q_elems * qb);
    d.k = dev_upload(c.k, c.kv_elems * kvb);
    d.v = dev_upload(c.v, c.kv_elems * kvb);
    d.out_bytes = c.out_elems * qb;
    d.out = dev_alloc(d.out_bytes);
    d.tables = dev_upload(c.tables, sizeof(int32_t) * (size_t)h.n_seq * (size_t)h.max_blocks_per_seq);
    d.lens = dev_upload(c.lens, sizeof(int32_t) * (size_t)h.n_seq);
    d.q_start = c.q_start ? dev_upload(c.q_start, sizeof(int32_t) * (size_t)(h.n_seq + 1)) : NULL;
    d.a.q = d.q, d.a.k_cache = d.k, d.a.v_cache = d.v, d.a.out = d.out;
    d.a.block_tables = (const int32_t *)d.tables;
    d.a.seq_lens = (const int32_t *)d.lens;
    d.a.q_start = (const int32_t *)d.q_start;
    return d;
}
static void attn_free(dev_attn &d)
{
    cudaFree(d.q), cudaFree(d.k), cudaFree(d.v), cudaFree(d.out), cudaFree(d.tables);
    cudaFree(d.lens), cudaFree(d.q_start);
}

static attn_case attn_make(const kt_attn_case *k)
{
    kt_rng r = kt_rng_make(k->seed);
    std::vector<int32_t> lens((size_t)k->n_seq), q_lens((size_t)k->n_seq);
    kt_attn_lens(k, lens.data(), q_lens.data());
    attn_case c = attn_case_make(k->q_dt, k->kv_dt, k->n_seq, lens.data(),
                                 k->q_lens[0] ? q_lens.data() : NULL, k->n_head, k->n_head_kv,
                                 k->head_dim, k->block_size, &r);
    c.a.n_swa = k->n_swa;
    c.a.bidirectional = k->bidirectional;
    return c;
}

// The reference over the first n_ref sequences (on model-sized cases the whole batch would take
// the CPU minutes); returns the number of output rows it wrote.
static int32_t attn_reference(attn_case &c, int32_t n_ref)
{
    kn_attn_args a = c.a;
    a.n_seq = std::min(a.n_seq, n_ref);
    kn_ref_paged_attention(&a);
    return c.q_start ? c.q_start[a.n_seq] : a.n_seq;
}

static bool attn_check(bench &b, const attn_case &c, const dev_attn &d, int32_t rows,
                       const char *variant, const char *name, double rtol)
{
    void *got = host_download(d.out, d.out_bytes);
    const size_t qb = kn_dtype_size(c.a.q_dtype), row = (size_t)c.a.n_head * c.a.head_dim;
    double worst = 0;
    bool ok = true;
    for (int32_t r = 0; r < rows && ok; r++) { // the heads of each row (padding is not output)
        const size_t off = (size_t)r * (size_t)c.a.out_stride * qb;
        const kt_diff df = kt_compare(c.a.q_dtype, (char *)got + off, (char *)c.out + off, row, rtol);
        worst = std::max(worst, df.worst);
        if (df.first_bad >= 0) {
            printf("%-46s %-14s FAIL: row %d element %lld is %.7g, want %.7g (rtol %.3g)\n", name,
                   variant, r, (long long)df.first_bad, df.got, df.want, rtol);
            ok = false;
        }
    }
    if (ok && b.validate_only)
        printf("%-46s %-14s ok (max rel err %.3g, rtol %.3g, %d rows)\n", name, variant, worst,
               rtol, rows);
    ok ? b.n_ok++ : b.n_fail++;
    free(got);
    return ok;
}

static void bench_decode(bench &b)
{
    for (size_t i = 0; i < kt_decode_cases_count; i++) {
        const kt_attn_case *k = &kt_decode_cases[i];
        if (!selected(b, k->use, k->name))
            continue;
        attn_case c = attn_make(k);
        const int32_t rows = attn_reference(c, 16);
        dev_attn d = attn_upload(c);
        double kv_bytes = 0; // K and V of every visible context position, once
        for (int32_t s = 0; s < c.a.n_seq; s++) {
            const int32_t seen = c.a.n_swa > 0 ? std::min(c.lens[s], c.a.n_swa) : c.lens[s];
            kv_bytes += 2.0 * seen * c.a.n_head_kv * c.a.head_dim * kn_dtype_size(c.a.kv_dtype);
        }
        // the split-count sweep: one pass, forced splits, and the launcher's own choice (0); the
        // test-sized cases take the tests' counts (the emulator runs those)
        static const int32_t sweep[] = {1, 2, 4, 8, 16, 32, 0};
        const bool model = k->use & KT_BENCH;
        const size_t n_sweep = model ? sizeof sweep / sizeof sweep[0] : kt_decode_splits_count;
        for (size_t j = 0; j < n_sweep; j++) {
            const int32_t ns = model ? sweep[j] : kt_decode_splits[j];
            if (ns > c.a.max_seq_len)
                continue;
            size_t ws_bytes = 0;
            KN(kn_paged_attn_decode_workspace(&d.a, ns, &ws_bytes));
            void *ws = ws_bytes ? dev_alloc(ws_bytes) : NULL;
            char variant[32];
            snprintf(variant, sizeof variant, ns ? "splits %d" : "splits auto", ns);
            CHECK(cudaMemset(d.out, 0xff, d.out_bytes));
            auto run = [&] { KN(kn_paged_attn_decode(&d.a, ns, ws, ws_bytes, b.st)); };
            run();
            if (attn_check(b, c, d, rows, variant, k->name, kt_rtol(c.a.q_dtype)))
                time_report(b, k->name, variant, kv_bytes, 0, run);
            cudaFree(ws);
        }
        attn_free(d);
        attn_case_free(&c);
    }
}

static void bench_prefill(bench &b)
{
    for (size_t i = 0; i < kt_prefill_cases_count; i++) {
        const kt_attn_case *k = &kt_prefill_cases[i];
        if (!selected(b, k->use, k->name))
            continue;
        attn_case c = attn_make(k);
        const int32_t rows = attn_reference(c, (k->use & KT_TEST) ? c.a.n_seq : 1);
        dev_attn d = attn_upload(c);
        double pairs = 0; // visible (query, key) pairs: each chunk sits at the end of its context
        for (int32_t s = 0; s < c.a.n_seq; s++) {
            const int32_t q = c.q_start[s + 1] - c.q_start[s];
            for (int32_t j = 0; j < q; j++) {
                // an encoder's row sees the whole sequence
                const int32_t keys = c.a.bidirectional ? c.lens[s] : c.lens[s] - q + j + 1;
                pairs += c.a.n_swa > 0 ? std::min(keys, c.a.n_swa) : keys;
            }
        }
        const double flops = 4.0 * c.a.n_head * c.a.head_dim * pairs; // Q·Kᵀ and P·V
        for (int tc = 0; tc < 2; tc++) {
            const char *variant = tc ? "tensor cores" : "SIMT fp32";
            CHECK(cudaMemset(d.out, 0xff, d.out_bytes));
            auto run = [&] { KN(tc ? kn_prefill_attn_tc(&d.a, b.st) : kn_prefill_attn(&d.a, b.st)); };
            run();
            const double rtol = tc ? kt_prefill_tc_rtol(c.a.kv_dtype) : kt_rtol(c.a.q_dtype);
            if (attn_check(b, c, d, rows, variant, k->name, rtol))
                time_report(b, k->name, variant, 0, flops, run);
        }
        attn_free(d);
        attn_case_free(&c);
    }
}

static void bench_gemm(bench &b, kn_gemm *g)
{
    for (size_t i = 0; i < kt_gemm_cases_count; i++) {
        const kt_gemm_case *c = &kt_gemm_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        const size_t ib = kn_dtype_size(c->in_dt), ob = kn_dtype_size(c->out_dt);
        void *x = kt_host_random(c->in_dt, (size_t)(c->m * c->k), -1.0f, 1.0f, &r);
        void *w = kt_host_random(c->in_dt, (size_t)(c->n * c->k), -1.0f, 1.0f, &r);
        void *y = kt_host_random(c->out_dt, (size_t)(c->m * c->n), -1.0f, 1.0f, &r);
        void *dx = dev_upload(x, ib * (size_t)(c->m * c->k)), *dw = dev_upload(w, ib * (size_t)(c->n * c->k));
        void *dy = dev_upload(y, ob * (size_t)(c->m * c->n));
        auto run = [&] {
            KN(kn_gemm_run(g, b.st, c->in_dt, dx, c->k, dw, c->k, c->out_dt, dy, c->n, c->m, c->n,
                           c->k, 1.0f, c->beta));
        };
        run();
        void *got = host_download(dy, ob * (size_t)(c->m * c->n));
        const int64_t m_ref = std::min<int64_t>(c->m, 8); // rows are independent: check the first
        kn_ref_gemm(c->in_dt, x, w, c->out_dt, y, m_ref, c->n, c->k, 1.0f, c->beta);
        const double bytes = (double)ib * (c->m + c->n) * c->k + (double)ob * c->m * c->n;
        if (check(b, c->name, "", c->out_dt, got, y, (size_t)(m_ref * c->n), kt_gemm_rtol(c->out_dt)))
            time_report(b, c->name, "cuBLAS", bytes, 2.0 * c->m * c->n * c->k, run);
        cudaFree(dx), cudaFree(dw), cudaFree(dy);
        free(x), free(w), free(y), free(got);
    }
}

static void bench_sample(bench &b)
{
    for (size_t i = 0; i < kt_sample_cases_count; i++) {
        const kt_sample_case *c = &kt_sample_cases[i];
        if (!selected(b, c->use, c->name))
            continue;
        kt_rng r = kt_rng_make(c->seed);
        const int32_t rows = c->n_rows, V = c->n_vocab, ld = V + 3;
        float *logits = (float *)kt_host_random(KN_DTYPE_F32, (size_t)rows * ld, -8.0f, 8.0f, &r);
        std::vector<kn_sample_params> p((size_t)rows);
        for (int32_t j = 0; j < rows; j++)
            p[(size_t)j] = kt_sample_params(j, &r);
        void *dl = dev_upload(logits, sizeof(float) * (size_t)rows * ld);
        void *dp = dev_upload(p.data(), p.size() * sizeof(kn_sample_params));
        void *dt = dev_alloc(sizeof(int32_t) * (size_t)rows);
        void *scratch = dev_alloc(sizeof(float) * (size_t)rows * V);
        auto run = [&] {
            KN(kn_sample((const float *)dl, ld, rows, V, (const kn_sample_params *)dp,
                         (int32_t *)dt, (float *)scratch, b.st));
        };
        run();
        int32_t *got = (int32_t *)host_download(dt, sizeof(int32_t) * (size_t)rows);
        // the test's rule: greedy rows exact, at most 2 rows on a float-rounding boundary
        int exact = 0, greedy_bad = 0;
        for (int32_t j = 0; j < rows; j++) {
            const int32_t want = kn_ref_sample(logits + (size_t)j * ld, V, &p[(size_t)j], NULL, NULL);
            exact += got[j] == want;
            greedy_bad += got[j] != want && p[(size_t)j].temperature <= 0.0f;
        }
        if (exact < rows - 2 || greedy_bad) {
            printf("%-46s %-14s FAIL: %d of %d rows drew the reference's token\n", c->name, "",
                   exact, rows);
            b.n_fail++;
        } else {
            if (b.validate_only)
                printf("%-46s %-14s ok (%d of %d rows exact)\n", c->name, "", exact, rows);
            b.n_ok++;
            time_report(b, c->name, "", (double)rows * V * 4, 0, run);
        }
        cudaFree(dl), cudaFree(dp), cudaFree(dt), cudaFree(scratch);
        free(logits), free(got);
    }
}

// ---- device ceilings -------------------------------------------------------------------------
static void ceilings(bench &b, const char *name)
{
    int clock_khz = 0, bus_bits = 0, l2 = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
    CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
    // DDR: two transfers per clock
    b.peak_gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    // dense bf16/fp16 tensor peaks and HBM specs (/work/shared/reference/performance.md)
    static const struct {
        const char *name;
        double gbs, tflops;
    } table[] = {{"H200", 4800, 989}, {"H100 PCIe", 2000, 756}, {"H100", 3350, 989},
                 {"A100-SXM4-80GB", 2039, 312}, {"A100", 1555, 312}};
    b.peak_tflops = 0;
    for (const auto &t : table)
        if (strstr(name, t.name)) {
            if (b.peak_gbs <= 0)
                b.peak_gbs = t.gbs;
            b.peak_tflops = t.tflops;
            break;
        }
    if (b.peak_gbs <= 0)
        b.peak_gbs = 1000; // unknown device: fractions are against 1 TB/s
    b.flush_bytes = 2 * (size_t)(l2 > 0 ? l2 : 64 << 20);
    CHECK(cudaMalloc(&b.flush, b.flush_bytes));
    printf("device: %s; peak %.0f GB/s (memory clock %d MHz x %d bits); tensor peak %s",
           name, b.peak_gbs, clock_khz / 1000, bus_bits, b.peak_tflops > 0 ? "" : "unknown");
    if (b.peak_tflops > 0)
        printf("%.0f TFLOP/s dense bf16", b.peak_tflops);
    printf("; L2 %d MiB, flushed with %zu MiB before every timed call\n", l2 >> 20,
           b.flush_bytes >> 20);
    b.copy_gbs = b.peak_gbs;
    if (b.validate_only)
        return;
    const size_t big = (size_t)1 << 30;
    void *a0, *a1;
    CHECK(cudaMalloc(&a0, big));
    CHECK(cudaMalloc(&a1, big));
    CHECK(cudaMemset(a0, 1, big));
    std::vector<float> ms(5);
    for (size_t i = 0; i < ms.size(); i++) {
        CHECK(cudaEventRecord(b.e0, b.st));
        CHECK(cudaMemcpyAsync(a1, a0, big, cudaMemcpyDeviceToDevice, b.st));
        CHECK(cudaEventRecord(b.e1, b.st));
        CHECK(cudaEventSynchronize(b.e1));
        CHECK(cudaEventElapsedTime(&ms[i], b.e0, b.e1));
    }
    std::sort(ms.begin(), ms.end());
    b.copy_gbs = 2.0 * big / (ms[ms.size() / 2] * 1e-3) / 1e9;
    printf("device-to-device copy of 1 GiB: %.1f GB/s (%.1f%% of peak; \"of copy\" below)\n",
           b.copy_gbs, 100.0 * b.copy_gbs / b.peak_gbs);
    cudaFree(a0);
    cudaFree(a1);
}

int main(int argc, char **argv)
{
    bench b;
    memset(&b, 0, sizeof b);
    b.use = KT_BENCH;
    b.iters = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--validate-only"))
            b.validate_only = true;
        else if (!strcmp(argv[i], "--cases") && i + 1 < argc) {
            const char *v = argv[++i];
            b.use = !strcmp(v, "test") ? KT_TEST : !strcmp(v, "all") ? KT_TEST | KT_BENCH : KT_BENCH;
        } else if (!strcmp(argv[i], "--op") && i + 1 < argc)
            b.op = argv[++i];
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            b.iters = std::max(1, atoi(argv[++i]));
        else {
            fprintf(stderr, "usage: %s [--cases bench|test|all] [--op SUBSTRING] [--iters N] "
                            "[--validate-only]\n", argv[0]);
            return 2;
        }
    }
    if (kn_device_count() <= 0) {
        printf("bench_kernels: no CUDA device, nothing to validate or time\n");
        return 77;
    }
    char dev[256] = "?";
    kn_device_name(0, dev, sizeof dev);
    CHECK(cudaStreamCreate(&b.st));
    CHECK(cudaEventCreate(&b.e0));
    CHECK(cudaEventCreate(&b.e1));
    ceilings(b, dev);
    printf("%-46s %-14s %s\n", "case (tests/kernels/kt_cases.c)", "variant",
           b.validate_only ? "against kernels/ref" : "median of timed calls");

    bench_embed(b);
    bench_embed_add(b);
    bench_norm(b, false);
    bench_norm(b, true); // LayerNorm (StarCoder, StarCoder2)
    bench_rope(b);
    bench_kv_write(b);
    bench_activation(b, 0);
    bench_activation(b, 1); // GELU (StarCoder, StarCoder2)
    bench_activation(b, 2); // exact GELU (BERT)
    bench_pool_l2(b);       // sentence embeddings (BERT)
    bench_bias_add(b);
    bench_p2p_sum(b);
    bench_dequant(b);
    bench_decode(b);
    bench_prefill(b); // the SIMT variant is not called by the engine
    kn_gemm *g = NULL;
    KN(kn_gemm_create(&g));
    bench_gemm(b, g);
    kn_gemm_free(g);
    bench_sample(b);

    CHECK(cudaStreamSynchronize(b.st));
    cudaFree(b.flush);
    printf("bench_kernels: %d cases validated, %d failed\n", b.n_ok, b.n_fail);
    return b.n_fail ? 1 : 0;
}
