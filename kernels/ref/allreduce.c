/* allreduce.c — reference sum of the ranks' buffers (the p2p all-reduce's summing step):
 * fp32 in rank order, rounded once to the dtype. */
#include "ref.h"

void kn_ref_sum_ranks(kn_dtype dt, const void *const *in, int n, void *out, int64_t count)
{
    for (int64_t i = 0; i < count; i++) {
        float s = kn_ref_load(dt, in[0], (size_t)i);
        for (int q = 1; q < n; q++)
            s += kn_ref_load(dt, in[q], (size_t)i);
        kn_ref_store(dt, out, (size_t)i, s);
    }
}
