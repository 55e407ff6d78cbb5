// faiss_c.cpp — extern "C" wrappers over FAISS's C++ API (flat and IVF inner-product indexes,
// search, file I/O) for the indexer; every FAISS exception becomes an error message.
#include "faiss_c.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/index_io.h>
#include <omp.h>
#include <utility>
#include <vector>

struct idx_faiss {
    faiss::Index *index;
    faiss::IndexIVF *ivf; // non-NULL when approximate (owned through index)
};

static void set_msg(char *msg, size_t cap, const char *what, const char *detail)
{
    if (msg && cap) std::snprintf(msg, cap, "faiss: %s: %.300s", what, detail);
}

// Probing 1/8th of the lists: on 82.7k real MiniLM vectors of Python code (bench/bench_ivf.c,
// bench/RESULTS.md) recall@10 against the exact index is 0.985 for the labelled queries and
// 0.995 for held-out chunks, at ~1.3 ms p95 CPU; 1/16th (the first choice) gave 0.965 / 0.985.
extern "C" int64_t idx_faiss_default_nprobe(int64_t nlist)
{
    return std::max<int64_t>(32, nlist / 8);
}

extern "C" int64_t idx_faiss_default_nlist(int64_t n)
{
    int64_t nlist = (int64_t)std::lround(4.0 * std::sqrt((double)n));
    return std::min<int64_t>(std::max<int64_t>(nlist, 16), 4096);
}

static void ivf_tune(faiss::IndexIVF *ivf)
{
    ivf->nprobe = (size_t)idx_faiss_default_nprobe((int64_t)ivf->nlist);
}

static faiss::IndexIVF *make_ivf(int dim, const float *x, const int64_t *ids, int64_t n,
                                 size_t nlist)
{
    auto *quant = new faiss::IndexFlatIP(dim);
    auto *ivf = new faiss::IndexIVFFlat(quant, dim, nlist, faiss::METRIC_INNER_PRODUCT);
    ivf->own_fields = true;
    ivf->cp.niter = 10;
    try {
        // Training on at most 64 points per list keeps start-up short at 100k vectors.
        int64_t n_train = std::min<int64_t>(n, (int64_t)nlist * 64);
        ivf->train(n_train, x);
        ivf->add_with_ids(n, x, ids);
    } catch (...) {
        delete ivf;
        throw;
    }
    ivf_tune(ivf);
    return ivf;
}

extern "C" idx_faiss *idx_faiss_build(int dim, const float *x, const int64_t *ids, int64_t n,
                                      bool approx, char *msg, size_t cap)
{
    idx_faiss *f = new (std::nothrow) idx_faiss{nullptr, nullptr};
    if (!f) {
        set_msg(msg, cap, "build", "out of memory");
        return nullptr;
    }
    try {
        if (approx && n >= 256) {
            faiss::IndexIVF *ivf = make_ivf(dim, x, ids, n, (size_t)idx_faiss_default_nlist(n));
            f->index = ivf;
            f->ivf = ivf;
        } else {
            auto *flat = new faiss::IndexFlatIP(dim);
            auto *map = new faiss::IndexIDMap(flat);
            map->own_fields = true;
            if (n > 0) map->add_with_ids(n, x, ids);
            f->index = map;
        }
    } catch (const std::exception &e) {
        set_msg(msg, cap, "build", e.what());
        delete f->index;
        delete f;
        return nullptr;
    }
    return f;
}

extern "C" idx_faiss *idx_faiss_build_ivf(int dim, const float *x, const int64_t *ids, int64_t n,
                                          int64_t nlist, int64_t nprobe, char *msg, size_t cap)
{
    if (nlist < 1 || nlist > n) {
        set_msg(msg, cap, "build", "nlist must be between 1 and the number of vectors");
        return nullptr;
    }
    idx_faiss *f = new (std::nothrow) idx_faiss{nullptr, nullptr};
    if (!f) {
        set_msg(msg, cap, "build", "out of memory");
        return nullptr;
    }
    try {
        f->ivf = make_ivf(dim, x, ids, n, (size_t)nlist);
        f->index = f->ivf;
        if (nprobe > 0) f->ivf->nprobe = (size_t)nprobe;
    } catch (const std::exception &e) {
        set_msg(msg, cap, "build", e.what());
        delete f;
        return nullptr;
    }
    return f;
}

extern "C" void idx_faiss_set_nprobe(idx_faiss *f, int64_t nprobe)
{
    if (f && f->ivf && nprobe > 0) f->ivf->nprobe = (size_t)nprobe;
}

// The vectors are scanned here rather than by FAISS: Debian's build takes its scalar reference
// inner product, and this loop, compiled for the machine, vectorises (16 partial sums: no
// -ffast-math needed).
static inline float dot(const float *x, const float *q, int d)
{
    float acc[16] = {0};
    int j = 0;
    for (; j + 16 <= d; j += 16)
        for (int l = 0; l < 16; l++) acc[l] += x[j + l] * q[j + l];
    float s = 0;
    for (; j < d; j++) s += x[j] * q[j];
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

// The best k of a stream of (score, label): a bounded min-heap.
struct top_k {
    std::vector<std::pair<float, int64_t>> heap;
    size_t k;
    explicit top_k(size_t k_) : k(k_) { heap.reserve(k_ + 1); }
    static bool worse(const std::pair<float, int64_t> &a, const std::pair<float, int64_t> &b)
    {
        return a.first > b.first;
    }
    void push(float s, int64_t label)
    {
        if (heap.size() < k) {
            heap.emplace_back(s, label);
            std::push_heap(heap.begin(), heap.end(), worse);
        } else if (s > heap.front().first) {
            std::pop_heap(heap.begin(), heap.end(), worse);
            heap.back() = {s, label};
            std::push_heap(heap.begin(), heap.end(), worse);
        }
    }
    // Best first into sims/labels (k of each; -1 labels past what was pushed).
    void emit(float *sims, int64_t *labels)
    {
        std::sort_heap(heap.begin(), heap.end(), worse);
        for (size_t i = 0; i < k; i++) {
            bool have = i < heap.size();
            sims[i] = have ? heap[i].first : -1e30f;
            labels[i] = have ? heap[i].second : -1;
        }
    }
};

static void flat_search(const faiss::IndexIDMap *map, const float *q, int64_t k, float *sims,
                        int64_t *labels)
{
    auto *flat = static_cast<const faiss::IndexFlat *>(map->index);
    const float *xb = flat->get_xb();
    int d = flat->d;
    top_k best((size_t)k);
    for (int64_t i = 0; i < flat->ntotal; i++)
        best.push(dot(xb + (size_t)i * (size_t)d, q, d), map->id_map[(size_t)i]);
    best.emit(sims, labels);
}

// IVF-Flat: the nprobe lists whose centroids score highest, then every vector in them. The
// same work as FAISS's own search, vectorised.
static void ivf_search(const faiss::IndexIVF *ivf, const float *q, int64_t k, float *sims,
                       int64_t *labels)
{
    auto *quant = static_cast<const faiss::IndexFlat *>(ivf->quantizer);
    const float *cent = quant->get_xb();
    int d = ivf->d;
    size_t nprobe = std::min(ivf->nprobe, ivf->nlist);
    top_k lists(nprobe);
    for (size_t l = 0; l < ivf->nlist; l++)
        lists.push(dot(cent + l * (size_t)d, q, d), (int64_t)l);
    std::vector<float> lsims(nprobe);
    std::vector<int64_t> lids(nprobe);
    lists.emit(lsims.data(), lids.data());
    top_k best((size_t)k);
    for (size_t p = 0; p < nprobe; p++) {
        if (lids[p] < 0) continue;
        size_t l = (size_t)lids[p], n = ivf->invlists->list_size(l);
        if (n == 0) continue;
        faiss::InvertedLists::ScopedCodes codes(ivf->invlists, l);
        faiss::InvertedLists::ScopedIds ids(ivf->invlists, l);
        const float *x = reinterpret_cast<const float *>(codes.get());
        for (size_t i = 0; i < n; i++) best.push(dot(x + i * (size_t)d, q, d), ids[i]);
    }
    best.emit(sims, labels);
}

extern "C" int idx_faiss_search(const idx_faiss *f, const float *q, int64_t k, float *sims,
                                int64_t *labels, char *msg, size_t cap)
{
    // One query is too little work to share: OpenMP's team would spin-wait on a busy machine.
    static thread_local bool single = false;
    if (!single) {
        omp_set_num_threads(1);
        single = true;
    }
    try {
        if (!f->ivf) {
            flat_search(static_cast<const faiss::IndexIDMap *>(f->index), q, k, sims, labels);
            return 0;
        }
        if (dynamic_cast<const faiss::IndexIVFFlat *>(f->ivf) &&
            dynamic_cast<const faiss::IndexFlat *>(f->ivf->quantizer))
            ivf_search(f->ivf, q, k, sims, labels);
        else
            f->index->search(1, q, k, sims, labels);
    } catch (const std::exception &e) {
        set_msg(msg, cap, "search", e.what());
        return -1;
    }
    return 0;
}

extern "C" int idx_faiss_write(const idx_faiss *f, const char *path, char *msg, size_t cap)
{
    try {
        faiss::write_index(f->index, path);
    } catch (const std::exception &e) {
        set_msg(msg, cap, path, e.what());
        return -1;
    }
    return 0;
}

extern "C" idx_faiss *idx_faiss_read(const char *path, char *msg, size_t cap)
{
    faiss::Index *index = nullptr;
    try {
        index = faiss::read_index(path);
    } catch (const std::exception &e) {
        set_msg(msg, cap, path, e.what());
        return nullptr;
    }
    idx_faiss *f = new (std::nothrow) idx_faiss{index, dynamic_cast<faiss::IndexIVF *>(index)};
    if (!f) {
        delete index;
        set_msg(msg, cap, path, "out of memory");
        return nullptr;
    }
    if (f->ivf) ivf_tune(f->ivf);
    else if (!dynamic_cast<faiss::IndexIDMap *>(index)) {
        set_msg(msg, cap, path, "not an index the indexer wrote");
        delete index;
        delete f;
        return nullptr;
    }
    return f;
}

extern "C" int64_t idx_faiss_ntotal(const idx_faiss *f) { return f ? f->index->ntotal : 0; }
extern "C" int idx_faiss_dim(const idx_faiss *f) { return f ? f->index->d : 0; }
extern "C" bool idx_faiss_approx(const idx_faiss *f) { return f && f->ivf; }

extern "C" void idx_faiss_free(idx_faiss *f)
{
    if (!f) return;
    delete f->index;
    delete f;
}
