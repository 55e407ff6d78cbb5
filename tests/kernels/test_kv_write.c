/* test_kv_write.c — GPU KV scatter against the reference: every dtype pair, padded source
 * rows, slots all over the pool, skipped (-1) slots leave the poison in place. */
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "kv_write.h"
#include "ref.h"

Test(kn_kv_write, matches_reference)
{
    KT_REQUIRE_GPU();
    kt_rng r = kt_rng_make(5);
    const int64_t n_tok = 29, kv_dim = 3 * 64, stride = kv_dim * 3 + 8, n_slots = 16 * 40;
    const kn_dtype dts[] = {KN_DTYPE_F16, KN_DTYPE_BF16};
    int32_t slots[29];
    for (int i = 0; i < n_tok; i++)
        slots[i] = (int32_t)(i * 19 % n_slots); /* distinct, scattered */
    slots[4] = -1;
    slots[n_tok - 1] = (int32_t)n_slots - 1;
    kt_buf ds = kt_buf_upload(slots, sizeof slots);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            void *src = kt_host_random(dts[a], (size_t)(n_tok * stride), -1.0f, 1.0f, &r);
            const size_t cb = kn_dtype_size(dts[b]) * (size_t)(n_slots * kv_dim);
            void *wk = malloc(cb), *wv = malloc(cb), *gk = malloc(cb), *gv = malloc(cb);
            cr_assert(wk && wv && gk && gv, "oom");
            memset(wk, 0xff, cb);
            memset(wv, 0xff, cb);
            kt_buf dsrc = kt_buf_upload(src, kn_dtype_size(dts[a]) * (size_t)(n_tok * stride));
            kt_buf dk = kt_buf_alloc(cb), dv = kt_buf_alloc(cb);
            /* K and V are two column ranges of a fused QKV row */
            const void *k = dsrc.p;
            const void *v = (char *)dsrc.p + kn_dtype_size(dts[a]) * (size_t)kv_dim;
            KT_OK(kn_kv_write(dts[a], k, v, stride, ds.p, n_tok, kv_dim, dts[b], dk.p, dv.p, n_slots, 0));
            kt_sync();
            kt_buf_download(gk, &dk);
            kt_buf_download(gv, &dv);
            kt_buf_check_guards(&dk, "k cache");
            kt_buf_check_guards(&dv, "v cache");
            kn_ref_kv_write(dts[a], src, (char *)src + kn_dtype_size(dts[a]) * (size_t)kv_dim, stride,
                            slots, n_tok, kv_dim, dts[b], wk, wv);
            /* bytes equal, the untouched (NaN) slots included */
            cr_assert(memcmp(gk, wk, cb) == 0, "k cache differs (%d -> %d)", a, b);
            cr_assert(memcmp(gv, wv, cb) == 0, "v cache differs (%d -> %d)", a, b);
            kt_buf_free(&dsrc);
            kt_buf_free(&dk);
            kt_buf_free(&dv);
            free(src);
            free(wk);
            free(wv);
            free(gk);
            free(gv);
        }
    kt_buf_free(&ds);
}
