/* idx_test_util.h — what the indexer tests share: a deterministic stand-in embedding model
 * (hashed bag of words, L2-normalised: texts sharing words point the same way) and helpers to
 * write small repositories into temporary folders. */
#ifndef SERVAL_TESTS_IDX_TEST_UTIL_H
#define SERVAL_TESTS_IDX_TEST_UTIL_H

#include <criterion/criterion.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "serval_index.h"
#include "testutil.h"

#define TU_IDX_DIM 64

typedef struct tu_embed_state {
    int calls;         /* embed calls */
    long texts;        /* texts embedded */
    int delay_us;      /* per text, to make indexing slow enough to kill mid-run */
} tu_embed_state;

static inline eng_status tu_hash_embed(void *user, const char *const *texts, const size_t *lens,
                                       size_t n, float *out, eng_err *err)
{
    (void)err;
    tu_embed_state *s = user;
    if (s) {
        __atomic_add_fetch(&s->calls, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->texts, (long)n, __ATOMIC_RELAXED);
        if (s->delay_us)
            usleep((useconds_t)s->delay_us * (useconds_t)n);
    }
    for (size_t t = 0; t < n; t++) {
        float *v = out + t * TU_IDX_DIM;
        memset(v, 0, TU_IDX_DIM * sizeof *v);
        size_t i = 0;
        while (i < lens[t]) {
            while (i < lens[t] && !isalnum((unsigned char)texts[t][i]))
                i++;
            uint32_t h = 2166136261u;
            size_t a = i;
            while (i < lens[t] && isalnum((unsigned char)texts[t][i]))
                h = (h ^ (uint32_t)tolower((unsigned char)texts[t][i++])) * 16777619u;
            if (i > a)
                v[h % TU_IDX_DIM] += (h & 0x10000) ? 1.0f : -1.0f;
        }
        float norm = 0;
        for (int k = 0; k < TU_IDX_DIM; k++)
            norm += v[k] * v[k];
        norm = sqrtf(norm);
        for (int k = 0; norm > 0 && k < TU_IDX_DIM; k++)
            v[k] /= norm;
    }
    return ENG_OK;
}

static inline idx_embedder tu_idx_embedder(tu_embed_state *s)
{
    return (idx_embedder){tu_hash_embed, s, TU_IDX_DIM, "test-hash-64"};
}

/* Writes dir/rel (creating folders), content as given. */
static inline void tu_put(const char *dir, const char *rel, const char *content)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    for (char *p = path + strlen(dir) + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0755);
            *p = '/';
        }
    cr_assert_eq(tu_write_file(path, content, strlen(content)), 0, "writing %s", path);
}

/* A fresh empty folder (caller frees the path). */
static inline char *tu_idx_tempdir(const char *tag)
{
    char *p = tu_temp_path(tag);
    cr_assert(p);
    unlink(p); /* tu_temp_path made a file of that name */
    cr_assert_eq(mkdir(p, 0755), 0, "mkdir %s", p);
    return p;
}

/* rm -rf path (a temporary folder of the test). */
static inline void tu_rmtree(const char *path)
{
    char *argv[] = {"/bin/rm", "-rf", (char *)path, NULL};
    tu_run(argv, NULL, NULL, 30);
}

#endif
