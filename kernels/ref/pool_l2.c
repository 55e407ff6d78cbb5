/* pool_l2.c — reference sentence pooling: mean (or first row) of each text's rows, then L2
 * normalisation, in double (the same order of operations as engine/cpu/cpu_encoder.c). */
#include <math.h>

#include "ref.h"

void kn_ref_pool_l2(kn_dtype dt, const void *x, int64_t stride, int64_t d,
                    const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq, int cls,
                    float *out)
{
    for (int32_t s = 0; s < n_seq; s++) {
        float *o = out + (size_t)s * (size_t)d;
        const int32_t cnt = cls ? (seq_len[s] > 0 ? 1 : 0) : seq_len[s];
        double ss = 0.0;
        for (int64_t c = 0; c < d; c++) {
            double acc = 0.0;
            for (int32_t t = 0; t < cnt; t++)
                acc += kn_ref_load(dt, x, (size_t)((seq_off[s] + t) * stride + c));
            o[c] = cnt > 0 ? (float)(acc / cnt) : 0.0f;
            ss += (double)o[c] * o[c];
        }
        if (ss > 0.0) {
            const float inv = (float)(1.0 / sqrt(ss));
            for (int64_t c = 0; c < d; c++)
                o[c] *= inv;
        }
    }
}
