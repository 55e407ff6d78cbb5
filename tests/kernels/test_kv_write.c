/* test_kv_write.c — GPU KV scatter against the reference: every dtype pair, padded source
 * rows, slots all over the pool, skipped (-1) slots leave the poison in place (the cases:
 * kt_cases.c). */
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "kt_cases.h"
#include "kv_write.h"
#include "ref.h"

static void run(const kt_kv_write_case *c)
{
    kt_rng r = kt_rng_make(c->seed);
    const int64_t n_tok = c->n_tok, kv_dim = c->kv_dim, stride = c->src_stride;
    const kn_dtype sdt = c->src_dt, cdt = c->cache_dt;
    int32_t *slots = kt_xmalloc(sizeof(int32_t) * (size_t)n_tok);
    kt_kv_slots(c, slots);
    kt_buf ds = kt_buf_upload(slots, sizeof(int32_t) * (size_t)n_tok);
    void *src = kt_host_random(sdt, (size_t)(n_tok * stride), -1.0f, 1.0f, &r);
    const size_t cb = kn_dtype_size(cdt) * (size_t)(c->n_slots * kv_dim);
    void *wk = kt_xmalloc(cb), *wv = kt_xmalloc(cb), *gk = kt_xmalloc(cb), *gv = kt_xmalloc(cb);
    memset(wk, 0xff, cb);
    memset(wv, 0xff, cb);
    kt_buf dsrc = kt_buf_upload(src, kn_dtype_size(sdt) * (size_t)(n_tok * stride));
    kt_buf dk = kt_buf_alloc(cb), dv = kt_buf_alloc(cb);
    /* K and V are two column ranges of a fused QKV row */
    const void *k = dsrc.p;
    const void *v = (char *)dsrc.p + kn_dtype_size(sdt) * (size_t)kv_dim;
    KT_OK(kn_kv_write(sdt, k, v, stride, ds.p, n_tok, kv_dim, cdt, dk.p, dv.p, c->n_slots, 0));
    kt_sync();
    kt_buf_download(gk, &dk);
    kt_buf_download(gv, &dv);
    kt_buf_check_guards(&dk, "k cache");
    kt_buf_check_guards(&dv, "v cache");
    kn_ref_kv_write(sdt, src, (char *)src + kn_dtype_size(sdt) * (size_t)kv_dim, stride, slots,
                    n_tok, kv_dim, cdt, wk, wv);
    /* bytes equal, the untouched (NaN) slots included */
    cr_assert(memcmp(gk, wk, cb) == 0, "%s: k cache differs", c->name);
    cr_assert(memcmp(gv, wv, cb) == 0, "%s: v cache differs", c->name);
    kt_buf_free(&ds);
    kt_buf_free(&dsrc);
    kt_buf_free(&dk);
    kt_buf_free(&dv);
    free(slots);
    free(src);
    free(wk);
    free(wv);
    free(gk);
    free(gv);
}

Test(kn_kv_write, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_kv_write_cases_count; i++)
        if (kt_kv_write_cases[i].use & KT_TEST)
            run(&kt_kv_write_cases[i]);
}
