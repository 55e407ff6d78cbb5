/* test_index_kill.c — crash safety: `kill -9` at random moments of indexing leaves an index
 * that opens and answers, and the run after it leaves exactly what a clean build does (same
 * files, chunks, vectors and searches). */
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>

#include "idx_test_util.h"

#define N_FILES 60

static void make_repo(const char *dir, int variant)
{
    for (int f = 0; f < N_FILES; f++) {
        char name[64], body[4096] = "";
        snprintf(name, sizeof name, "pkg%d/mod_%d.py", f % 4, f);
        for (int d = 0; d < 6; d++) {
            char fn[512];
            snprintf(fn, sizeof fn,
                     "def handler_%d_%d(request, limit=%d):\n"
                     "    \"\"\"Handle request %d of module %d (v%d).\"\"\"\n"
                     "    items = fetch_items(request, limit)\n"
                     "    return [transform_%d(x) for x in items if x.ok]\n\n\n",
                     f, d, d * 10, d, f, variant, d);
            strcat(body, fn);
        }
        tu_put(dir, name, body);
    }
}

/* Everything the index holds, as one string: files, then chunks with their vectors' bytes. */
static char *dump(const char *data)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/index.db", data);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    size_t cap = 1 << 20, off = 0;
    char *out = malloc(cap);
    const char *qs[2] = {
        "SELECT f.path || ' ' || f.hash FROM files f ORDER BY f.path",
        "SELECT c.hash || ' ' || c.seq || ' ' || c.start_line || '-' || c.end_line || ' ' || "
        "hex(c.vec) || ' ' || c.body FROM chunks c ORDER BY c.hash, c.seq"};
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *st;
        cr_assert_eq(sqlite3_prepare_v2(db, qs[i], -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *row = (const char *)sqlite3_column_text(st, 0);
            size_t n = strlen(row);
            if (off + n + 2 > cap)
                out = realloc(out, cap = 2 * (off + n + 2));
            memcpy(out + off, row, n);
            off += n;
            out[off++] = '\n';
        }
        sqlite3_finalize(st);
    }
    out[off] = 0;
    sqlite3_close(db);
    return out;
}

static char *top_hits(idx_index *ix)
{
    idx_query q = {.text = "fetch_items transform request limit", .top_k = 8};
    idx_hit *h;
    size_t n;
    eng_err err;
    cr_assert_eq(idx_search(ix, &q, &h, &n, &err), ENG_OK, "%s", err.msg);
    char *s = calloc(1, 8 * 600);
    for (size_t i = 0; i < n; i++)
        sprintf(s + strlen(s), "%s:%d\n", h[i].filepath, h[i].start_line);
    idx_hits_free(h, n);
    return s;
}

static void run_to_end(const char *repo, const char *data, idx_stats *st)
{
    tu_embed_state es = {0};
    idx_embedder emb = tu_idx_embedder(&es);
    idx_index *ix;
    eng_err err;
    cr_assert_eq(idx_open(data, &emb, &ix, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(idx_index_repo(ix, repo, "repo", NULL, NULL, NULL, st, &err), ENG_OK, "%s", err.msg);
    idx_close(ix);
}

Test(index_kill, kill_9_at_random_moments_leaves_an_index_that_answers_and_then_equals_a_clean_build)
{
    char *repo = tu_idx_tempdir("-repo"), *data = tu_idx_tempdir("-data");
    char *clean = tu_idx_tempdir("-clean");
    make_repo(repo, 0);
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    int killed_mid_run = 0;
    for (int round = 0; round < 6; round++) {
        /* Every file edited each round (work for the run to be killed in), and contents coming
         * back from an earlier round: reused when that round stored them before its kill. */
        make_repo(repo, round % 3);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            tu_embed_state es = {.delay_us = 500}; /* 30 ms a batch, 0.2 s a run: killable */
            idx_embedder emb = tu_idx_embedder(&es);
            idx_index *ix;
            eng_err err;
            if (idx_open(data, &emb, &ix, &err) != ENG_OK)
                _exit(3);
            _exit(idx_index_repo(ix, repo, "repo", NULL, NULL, NULL, NULL, &err) == ENG_OK ? 0 : 4);
        }
        usleep((useconds_t)(5000 + rand() % 120000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        killed_mid_run += WIFSIGNALED(status);
        cr_assert(WIFSIGNALED(status) || WEXITSTATUS(status) == 0, "round %d (seed %u): exit %d",
                  round, seed, WEXITSTATUS(status));
        /* Whatever state it left: it opens and answers. */
        tu_embed_state es = {0};
        idx_embedder emb = tu_idx_embedder(&es);
        idx_index *ix;
        eng_err err;
        cr_assert_eq(idx_open(data, &emb, &ix, &err), ENG_OK, "round %d (seed %u): %s", round, seed, err.msg);
        free(top_hits(ix));
        idx_close(ix);
    }
    cr_assert_geq(killed_mid_run, 3, "the kills should land mid-run (seed %u)", seed);
    idx_stats st;
    run_to_end(repo, data, &st);
    run_to_end(repo, clean, &st);
    cr_assert_eq(st.files_indexed, N_FILES);
    char *a = dump(data), *b = dump(clean);
    cr_assert(strcmp(a, b) == 0, "the index after the kills differs from a clean build (seed %u)", seed);
    /* Same answers, from the reopened vector files. */
    tu_embed_state es = {0};
    idx_embedder emb = tu_idx_embedder(&es);
    idx_index *x1, *x2;
    eng_err err;
    cr_assert_eq(idx_open(data, &emb, &x1, &err), ENG_OK);
    cr_assert_eq(idx_open(clean, &emb, &x2, &err), ENG_OK);
    char *h1 = top_hits(x1), *h2 = top_hits(x2);
    cr_assert_str_eq(h1, h2);
    cr_assert_eq(es.texts, 2, "reopening embeds only the two queries");
    idx_close(x1), idx_close(x2);
    free(h1), free(h2), free(a), free(b);
    tu_rmtree(repo), tu_rmtree(data), tu_rmtree(clean);
    free(repo), free(data), free(clean);
}

Test(index_kill, a_missing_or_corrupt_vector_file_is_rebuilt_from_sqlite)
{
    char *repo = tu_idx_tempdir("-repo"), *data = tu_idx_tempdir("-data");
    make_repo(repo, 0);
    idx_stats st;
    run_to_end(repo, data, &st);
    tu_embed_state es = {0};
    idx_embedder emb = tu_idx_embedder(&es);
    idx_index *ix;
    eng_err err;
    cr_assert_eq(idx_open(data, &emb, &ix, &err), ENG_OK);
    char *before = top_hits(ix);
    idx_close(ix);
    /* Overwrite every vectors file with garbage. */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "for f in %s/vectors-*.faiss; do echo garbage > \"$f\"; done", data);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    cr_assert_eq(tu_run(argv, NULL, NULL, 10), 0);
    cr_assert_eq(idx_open(data, &emb, &ix, &err), ENG_OK, "%s", err.msg);
    char *after = top_hits(ix);
    cr_assert_str_eq(before, after);
    idx_close(ix);
    free(before), free(after);
    tu_rmtree(repo), tu_rmtree(data);
    free(repo), free(data);
}
