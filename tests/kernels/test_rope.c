/* test_rope.c — GPU RoPE against the reference: interleaved and NeoX, fused-QKV row strides
 * (the V part must stay untouched), positions 0 to 32k, frequency factors, linear position
 * scaling (the cases: kt_cases.c). */
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "kt_cases.h"
#include "ref.h"
#include "rope.h"

static void run(const kt_rope_case *c)
{
    const kn_dtype dt = c->dt;
    const kn_rope_mode mode = c->mode;
    const int32_t n_tok = c->n_tok, n_heads = c->n_heads, hd = c->head_dim;
    const bool factors = c->factors;
    kt_rng r = kt_rng_make(c->seed);
    const int64_t stride = (int64_t)n_heads * hd + 3 * hd; /* a fused row: V heads follow */
    const size_t n = (size_t)(n_tok * stride), bytes = n * kn_dtype_size(dt);
    void *x = kt_host_random(dt, n, -1.0f, 1.0f, &r);
    void *want = malloc(bytes), *got = malloc(bytes);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tok);
    float ff[256];
    cr_assert(want && got && pos, "oom");
    for (int32_t t = 0; t < n_tok; t++)
        pos[t] = t == 0 ? 0 : t == 1 ? 32767 : kt_rng_int(&r, 4096);
    for (int i = 0; i < hd / 2; i++)
        ff[i] = kt_rng_uniform(&r, 1.0f, 8.0f);
    memcpy(want, x, bytes);
    kt_buf dx = kt_buf_upload(x, bytes), dpos = kt_buf_upload(pos, sizeof(int32_t) * (size_t)n_tok);
    KT_OK(kn_rope(dt, dx.p, stride, dpos.p, n_tok, n_heads, hd, 10000.0f, c->freq_scale,
                  factors ? ff : NULL, mode, 0));
    kt_sync();
    kt_buf_download(got, &dx);
    kt_buf_check_guards(&dx, "rope x");
    kn_ref_rope(dt, want, stride, pos, n_tok, n_heads, hd, 10000.0f, c->freq_scale,
                factors ? ff : NULL, mode);
    kt_check_close(dt, got, want, n, kt_rope_rtol(dt), c->name);
    cr_assert(memcmp((char *)got + (size_t)n_heads * hd * kn_dtype_size(dt),
                     (char *)x + (size_t)n_heads * hd * kn_dtype_size(dt),
                     3 * (size_t)hd * kn_dtype_size(dt)) == 0,
              "rope touched the V part of the row");
    kt_buf_free(&dx);
    kt_buf_free(&dpos);
    free(x);
    free(want);
    free(got);
    free(pos);
}

static void run_mode(kn_rope_mode mode)
{
    for (size_t i = 0; i < kt_rope_cases_count; i++)
        if ((kt_rope_cases[i].use & KT_TEST) && kt_rope_cases[i].mode == mode)
            run(&kt_rope_cases[i]);
}

Test(kn_rope, interleaved_matches_reference)
{
    KT_REQUIRE_GPU();
    run_mode(KN_ROPE_INTERLEAVED);
}

Test(kn_rope, neox_matches_reference)
{
    KT_REQUIRE_GPU();
    run_mode(KN_ROPE_NEOX);
}

Test(kn_rope, rejects_odd_head_dim)
{
    int32_t pos = 0;
    uint16_t x[8] = {0};
    cr_assert(kn_rope(KN_DTYPE_F16, x, 8, &pos, 1, 1, 7, 10000.0f, 1.0f, NULL, KN_ROPE_NEOX, 0) ==
                  KN_ERR_INVALID,
              "odd head_dim accepted");
}

/* linear scaling only ever slows rotation down (1 / rope.scaling.factor); 0 would freeze it */
Test(kn_rope, rejects_a_scale_outside_0_to_1)
{
    int32_t pos = 0;
    uint16_t x[8] = {0};
    cr_assert(kn_rope(KN_DTYPE_F16, x, 8, &pos, 1, 1, 8, 10000.0f, 0.0f, NULL, KN_ROPE_NEOX, 0) ==
                  KN_ERR_INVALID,
              "scale 0 accepted");
    cr_assert(kn_rope(KN_DTYPE_F16, x, 8, &pos, 1, 1, 8, 10000.0f, 4.0f, NULL, KN_ROPE_NEOX, 0) ==
                  KN_ERR_INVALID,
              "scale 4 (a factor, not its inverse) accepted");
}

/* the scaled rotation at position 4p equals the unscaled one at p (scale 0.25): a check of the
 * reference itself, independent of its frequency table */
Test(kn_rope, reference_scaling_equals_scaled_positions)
{
    const int32_t pos4[3] = {4, 400, 32764}, pos1[3] = {1, 100, 8191};
    kt_rng r = kt_rng_make(17);
    float *x = kt_host_random(KN_DTYPE_F32, 3 * 64, -1.0f, 1.0f, &r);
    float y[3 * 64];
    memcpy(y, x, sizeof y);
    kn_ref_rope(KN_DTYPE_F32, x, 64, pos4, 3, 2, 32, 10000.0f, 0.25f, NULL, KN_ROPE_INTERLEAVED);
    kn_ref_rope(KN_DTYPE_F32, y, 64, pos1, 3, 2, 32, 10000.0f, 1.0f, NULL, KN_ROPE_INTERLEAVED);
    kt_check_close(KN_DTYPE_F32, x, y, 3 * 64, 1e-5, "position 4p at scale 1/4 vs p");
    free(x);
}
