/* faiss_c.h — the few FAISS operations the indexer uses, as C functions (indexer/faiss_c.cpp
 * wraps Debian's libfaiss C++ library, which ships without FAISS's own C API symbols). */
#ifndef SERVAL_INDEXER_FAISS_C_H
#define SERVAL_INDEXER_FAISS_C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct idx_faiss idx_faiss;

/* Builds an inner-product index over n vectors x (n x dim, row i labelled ids[i]): exact
 * (flat) when approx is false, else IVF-Flat trained on x (nlist ~ 4 sqrt(n)). Returns NULL
 * with a message in msg on failure. The result is owned by the caller (idx_faiss_free). */
idx_faiss *idx_faiss_build(int dim, const float *x, const int64_t *ids, int64_t n, bool approx,
                           char *msg, size_t cap);
/* IVF-Flat with nlist lists (>= 1; trained on at most 64 points per list), probing nprobe lists
 * per search (0: the default, idx_faiss_default_nprobe). For benchmarks that sweep both
 * (bench/bench_ivf.c); NULL with msg set on failure. Owned by the caller. */
idx_faiss *idx_faiss_build_ivf(int dim, const float *x, const int64_t *ids, int64_t n,
                               int64_t nlist, int64_t nprobe, char *msg, size_t cap);
/* The lists idx_faiss_build gives n vectors, and the lists it probes of nlist. */
int64_t idx_faiss_default_nlist(int64_t n);
int64_t idx_faiss_default_nprobe(int64_t nlist);
/* Lists probed per search (IVF only; ignored for an exact index). */
void idx_faiss_set_nprobe(idx_faiss *f, int64_t nprobe);
/* Top k by inner product for one query q (dim floats): sims[k] and labels[k], -1 labels past
 * the index's size. Thread-safe for concurrent searches. Returns 0, or -1 with msg set. */
int idx_faiss_search(const idx_faiss *f, const float *q, int64_t k, float *sims,
                     int64_t *labels, char *msg, size_t cap);
/* Writes the index to path (the caller renames it into place). 0, or -1 with msg set. */
int idx_faiss_write(const idx_faiss *f, const char *path, char *msg, size_t cap);
/* Reads an index written by idx_faiss_write; NULL with msg set when unreadable. */
idx_faiss *idx_faiss_read(const char *path, char *msg, size_t cap);
int64_t idx_faiss_ntotal(const idx_faiss *f);
int idx_faiss_dim(const idx_faiss *f);
bool idx_faiss_approx(const idx_faiss *f);
void idx_faiss_free(idx_faiss *f);

#ifdef __cplusplus
}
#endif

#endif
