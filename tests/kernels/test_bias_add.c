/* test_bias_add.c — GPU bias add (Qwen2's Q/K/V biases on a fused QKV row) equals the
 * reference bit for bit, both dtypes, padded rows untouched (the cases: kt_cases.c). */
#include <stdlib.h>
#include <string.h>

#include "bias_add.h"
#include "kt.h"
#include "kt_cases.h"
#include "ref.h"

static void run(const kt_act_case *c)
{
    kt_rng r = kt_rng_make(c->seed);
    const kn_dtype dt = c->dt;
    const int64_t n = c->n, w = c->ff, stride = w + 5;
    const size_t bytes = kn_dtype_size(dt) * (size_t)(n * stride);
    void *x = kt_host_random(dt, (size_t)(n * stride), -4.0f, 4.0f, &r);
    float *bias = kt_host_random(KN_DTYPE_F32, (size_t)w, -2.0f, 2.0f, &r);
    void *want = kt_xmalloc(bytes), *got = kt_xmalloc(bytes);
    memcpy(want, x, bytes);
    kt_buf dx = kt_buf_upload(x, bytes), db = kt_buf_upload(bias, sizeof(float) * (size_t)w);
    KT_OK(kn_bias_add(dt, dx.p, stride, db.p, n, w, 0));
    kt_sync();
    kt_buf_download(got, &dx);
    kt_buf_check_guards(&dx, c->name);
    kn_ref_bias_add(dt, want, stride, bias, n, w);
    cr_assert(memcmp(got, want, bytes) == 0, "%s differs", c->name);
    kt_buf_free(&dx);
    kt_buf_free(&db);
    free(x);
    free(bias);
    free(want);
    free(got);
}

Test(kn_bias_add, equals_reference_bit_for_bit)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_bias_add_cases_count; i++)
        if (kt_bias_add_cases[i].use & KT_TEST)
            run(&kt_bias_add_cases[i]);
}

Test(kn_bias_add, rejects_bad_shapes)
{
    uint16_t x[8] = {0};
    float b[8] = {0};
    cr_assert(kn_bias_add(KN_DTYPE_BF16, x, 3, b, 1, 4, 0) == KN_ERR_INVALID, "stride < width");
    cr_assert(kn_bias_add(KN_DTYPE_F32, x, 4, b, 1, 4, 0) == KN_ERR_UNSUPPORTED, "f32");
}
