/* embed_engine.c — the indexer's embedding function backed by the engine's embedder
 * (engine/serval_embed.h): texts go in slices the embedder's queue accepts, and a full queue is
 * waited out rather than failing an indexing run. */
#include <time.h>

#include "serval_embed.h"
#include "serval_index.h"

#define SLICE 256 /* texts per eng_embed call (well under the queue's 1024) */

static eng_status embed_engine(void *user, const char *const *texts, const size_t *lens,
                               size_t n, float *out, eng_err *err)
{
    eng_embedder *e = user;
    size_t dim = (size_t)eng_embedder_dim(e);
    for (size_t a = 0; a < n; a += SLICE) {
        int32_t k = (int32_t)(n - a < SLICE ? n - a : SLICE);
        for (int tries = 0;; tries++) {
            eng_status s = eng_embed(e, texts + a, lens + a, k, out + a * dim, NULL, NULL, err);
            if (s == ENG_OK)
                break;
            if (s != ENG_ERR_OVERLOAD || tries >= 200)
                return s;
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL); /* others' texts drain */
        }
    }
    return ENG_OK;
}

idx_embedder idx_embedder_from_engine(eng_embedder *e)
{
    return (idx_embedder){embed_engine, e, eng_embedder_dim(e), eng_embedder_model_name(e)};
}
