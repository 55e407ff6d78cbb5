/* embed.c — reference token-embedding gather. */
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
