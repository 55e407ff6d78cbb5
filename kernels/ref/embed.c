/* embed.c — reference embedding gathers (token rows; position rows added in fp32). */
#include "ref.h"

void kn_ref_embed(kn_dtype tdt, const void *table, int64_t n_vocab, int64_t d,
                  const int32_t *tokens, int64_t n, kn_dtype odt, void *out)
{
    for (int64_t i = 0; i < n; i++) {
        const int32_t tok = tokens[i];
        for (int64_t j = 0; j < d; j++) {
            const float v = tok >= 0 && tok < n_vocab
                                ? kn_ref_load(tdt, table, (size_t)tok * (size_t)d + (size_t)j)
                                : 0.0f;
            kn_ref_store(odt, out, (size_t)(i * d + j), v);
        }
    }
}

void kn_ref_embed_add(kn_dtype tdt, const void *table, int64_t n_rows, int64_t d,
                      const int32_t *idx, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= n_rows)
            continue;
        for (int64_t j = 0; j < d; j++)
            out[i * d + j] += kn_ref_load(tdt, table, (size_t)idx[i] * (size_t)d + (size_t)j);
    }
}
