/* build.c — one indexing run over a repository: walk, hash each file (git's blob hash), chunk
 * and embed only contents not stored yet, commit files with their chunks and vectors in
 * transactions, drop deleted files and orphaned contents, then bring the vector index up to
 * date. A run killed at any point leaves only whole contents behind. */
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "idx_impl.h"

#define BATCH_CHUNKS 64  /* chunks embedded, then committed, together */
#define BATCH_FILES 256  /* file rows (reused contents) committed together */
#define EMBED_SLICE 8    /* texts per embedding call */

typedef struct pend_file {
    const char *path;      /* borrowed from the walk */
    char hash[GIT_OID_HEXSZ + 1];
    char *text;            /* owned; NULL for a reused content */
    idx_chunk *ch;         /* owned */
    int64_t n_ch;
} pend_file;

typedef struct run {
    idx_index *ix;
    int64_t repo_id;
    sqlite3_stmt *sel_file, *has_content, *up_file, *ins_chunk, *ins_content;
    pend_file *pend;
    size_t n_pend, cap_pend;
    int64_t pend_chunks;
    float *vecs;            /* BATCH_CHUNKS-ish x dim, grown as needed */
    size_t vecs_cap;
    idx_stats *st;
    idx_progress pr;
    idx_progress_fn progress;
    void *progress_user;
    struct timespec t0;
    double last_report;
    const volatile bool *stop; /* may be NULL */
} run;

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

static void report(run *r, bool done)
{
    if (!r->progress)
        return;
    double s = since(&r->t0);
    if (!done && s - r->last_report < 0.25)
        return;
    r->last_report = s;
    r->pr.seconds = s;
    r->pr.done = done;
    r->progress(r->progress_user, &r->pr);
}

static eng_status sql_fail(run *r, eng_err *err, const char *what)
{
    return eng_fail(err, ENG_ERR_IO, "%s: %s: %s", r->ix->dir, what, sqlite3_errmsg(r->ix->wdb));
}

static void pend_clear(run *r)
{
    for (size_t i = 0; i < r->n_pend; i++)
        free(r->pend[i].text), free(r->pend[i].ch);
    r->n_pend = 0;
    r->pend_chunks = 0;
}

/* Embeds the pending new contents, then commits every pending file in one transaction. */
static eng_status flush(run *r, eng_err *err)
{
    if (r->n_pend == 0)
        return ENG_OK;
    idx_index *ix = r->ix;
    size_t dim = (size_t)ix->emb.dim, n = (size_t)r->pend_chunks;
    if (n > r->vecs_cap) {
        float *v = realloc(r->vecs, n * dim * sizeof *v);
        if (!v)
            return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        r->vecs = v, r->vecs_cap = n;
    }
    if (n > 0) {
        const char **texts = malloc(n * sizeof *texts);
        size_t *lens = malloc(n * sizeof *lens);
        if (!texts || !lens) {
            free(texts), free(lens);
            return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        }
        size_t k = 0;
        for (size_t i = 0; i < r->n_pend; i++)
            for (int64_t c = 0; c < r->pend[i].n_ch; c++, k++) {
                texts[k] = r->pend[i].text + r->pend[i].ch[c].off;
                lens[k] = r->pend[i].ch[c].len;
            }
        /* In slices, so a stop (serve shutting down) waits for a few texts, not a batch. */
        eng_status s = ENG_OK;
        for (size_t a = 0; a < n && s == ENG_OK; a += EMBED_SLICE) {
            if (r->stop && *r->stop) {
                s = eng_fail(err, ENG_ERR_CANCELLED, "indexing stopped");
                break;
            }
            size_t m = n - a < EMBED_SLICE ? n - a : EMBED_SLICE;
            s = ix->emb.embed(ix->emb.user, texts + a, lens + a, m, r->vecs + a * dim, err);
        }
        free(texts), free(lens);
        if (s != ENG_OK)
            return s;
    }
    if (sqlite3_exec(ix->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return sql_fail(r, err, "begin");
    size_t k = 0;
    for (size_t i = 0; i < r->n_pend; i++) {
        pend_file *p = &r->pend[i];
        if (p->text) {
            for (int64_t c = 0; c < p->n_ch; c++, k++) {
                sqlite3_stmt *s = r->ins_chunk;
                sqlite3_reset(s);
                sqlite3_bind_text(s, 1, p->hash, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 2, c);
                sqlite3_bind_int(s, 3, p->ch[c].start_line);
                sqlite3_bind_int(s, 4, p->ch[c].end_line);
                sqlite3_bind_text(s, 5, p->text + p->ch[c].off, (int)p->ch[c].len, SQLITE_STATIC);
                sqlite3_bind_blob(s, 6, r->vecs + k * dim, (int)(dim * sizeof(float)),
                                  SQLITE_STATIC);
                if (sqlite3_step(s) != SQLITE_DONE)
                    goto fail;
            }
            sqlite3_reset(r->ins_content);
            sqlite3_bind_text(r->ins_content, 1, p->hash, -1, SQLITE_STATIC);
            sqlite3_bind_int64(r->ins_content, 2, p->n_ch);
            if (sqlite3_step(r->ins_content) != SQLITE_DONE)
                goto fail;
        }
        sqlite3_reset(r->up_file);
        sqlite3_bind_int64(r->up_file, 1, r->repo_id);
        sqlite3_bind_text(r->up_file, 2, p->path, -1, SQLITE_STATIC);
        sqlite3_bind_text(r->up_file, 3, p->hash, -1, SQLITE_STATIC);
        if (sqlite3_step(r->up_file) != SQLITE_DONE)
            goto fail;
    }
    if (n > 0) {
        int64_t v = idx_meta_int(ix->wdb, "chunk_version", 0);
        if (idx_meta_set_int(ix->wdb, "chunk_version", v + 1) != SQLITE_OK)
            goto fail;
    }
    if (sqlite3_exec(ix->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    r->st->chunks_embedded += (int64_t)n;
    r->pr.embeddings_done += (int64_t)n;
    pend_clear(r);
    return ENG_OK;
fail:;
    eng_status s = sql_fail(r, err, "storing chunks");
    sqlite3_exec(ix->wdb, "ROLLBACK", NULL, NULL, NULL);
    return s;
}

static bool stored(sqlite3_stmt *s, const char *hash)
{
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, hash, -1, SQLITE_STATIC);
    return sqlite3_step(s) == SQLITE_ROW;
}

static char *read_file(const char *path, size_t *len, bool *huge)
{
    *huge = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return NULL;
    }
    if (sb.st_size > IDX_MAX_FILE_BYTES) {
        close(fd);
        *huge = true;
        return NULL;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)sb.st_size) {
        ssize_t k = read(fd, buf + got, (size_t)sb.st_size - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    if (buf)
        buf[got] = 0;
    *len = got;
    return buf;
}

/* One file: unchanged (nothing to do), a stored content (a file row), or new (chunked). */
static eng_status visit(run *r, const char *root, const char *rel, bool *keep, eng_err *err)
{
    char abs[8192];
    snprintf(abs, sizeof abs, "%s/%s", root, rel);
    size_t len = 0;
    bool huge;
    char *text = read_file(abs, &len, &huge);
    *keep = false;
    if (!text) {
        if (huge)
            r->st->skipped_huge++;
        return ENG_OK; /* gone since the listing, or unreadable: not indexed */
    }
    switch (idx_content_skip(text, len)) {
    case 'b': r->st->skipped_binary++; free(text); return ENG_OK;
    case 'g': r->st->skipped_generated++; free(text); return ENG_OK;
    case 'h': r->st->skipped_huge++; free(text); return ENG_OK;
    default: break;
    }
    *keep = true;
    git_oid oid;
    pend_file p = {.path = rel};
    git_odb_hash(&oid, text, len, GIT_OBJECT_BLOB);
    git_oid_tostr(p.hash, sizeof p.hash, &oid);
    sqlite3_reset(r->sel_file);
    sqlite3_bind_int64(r->sel_file, 1, r->repo_id);
    sqlite3_bind_text(r->sel_file, 2, rel, -1, SQLITE_STATIC);
    bool same = sqlite3_step(r->sel_file) == SQLITE_ROW &&
                strcmp((const char *)sqlite3_column_text(r->sel_file, 0), p.hash) == 0;
    sqlite3_reset(r->sel_file);
    if (same) {
        free(text);
        return ENG_OK;
    }
    bool known = stored(r->has_content, p.hash);
    for (size_t i = 0; !known && i < r->n_pend; i++)
        known = r->pend[i].text && strcmp(r->pend[i].hash, p.hash) == 0;
    if (known) {
        free(text);
    } else {
        p.text = text;
        p.n_ch = idx_chunk_text(rel, text, len, &p.ch);
        if (p.n_ch < 0) {
            free(text);
            return eng_fail(err, ENG_ERR_NOMEM, "out of memory chunking %s", rel);
        }
        r->st->files_embedded++;
    }
    if (r->n_pend == r->cap_pend) {
        size_t cap = r->cap_pend ? r->cap_pend * 2 : 64;
        pend_file *v = realloc(r->pend, cap * sizeof *v);
        if (!v) {
            free(p.text), free(p.ch);
            return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        }
        r->pend = v, r->cap_pend = cap;
    }
    r->pend[r->n_pend++] = p;
    r->pend_chunks += p.n_ch;
    r->pr.chunks_done += p.n_ch;
    if (r->pend_chunks >= BATCH_CHUNKS || r->n_pend >= BATCH_FILES)
        return flush(r, err);
    return ENG_OK;
}

/* Drops the repository's files the walk did not keep, and contents no file uses. */
static eng_status finish(run *r, const idx_walk *w, const bool *kept, const char *git_url,
                         eng_err *err)
{
    sqlite3 *db = r->ix->wdb;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return sql_fail(r, err, "begin");
    sqlite3_stmt *sel = NULL, *del = NULL, *upd = NULL;
    if (sqlite3_prepare_v2(db, "SELECT path FROM files WHERE repo_id = ?", -1, &sel, NULL) ||
        sqlite3_prepare_v2(db, "DELETE FROM files WHERE repo_id = ? AND path = ?", -1, &del, NULL) ||
        sqlite3_prepare_v2(db, "UPDATE repos SET commit_id = ?, indexed_at = ? WHERE id = ?", -1,
                           &upd, NULL))
        goto fail;
    sqlite3_bind_int64(sel, 1, r->repo_id);
    char **gone = NULL;
    size_t n_gone = 0;
    while (sqlite3_step(sel) == SQLITE_ROW) {
        const char *path = (const char *)sqlite3_column_text(sel, 0);
        size_t lo = 0, hi = w->n;
        while (lo < hi) { /* w->paths is sorted */
            size_t mid = (lo + hi) / 2;
            int c = strcmp(w->paths[mid], path);
            if (c == 0) {
                lo = mid;
                break;
            }
            if (c < 0) lo = mid + 1;
            else hi = mid;
        }
        if (lo < w->n && strcmp(w->paths[lo], path) == 0 && kept[lo])
            continue;
        char **v = realloc(gone, (n_gone + 1) * sizeof *v);
        if (!v || !(v[n_gone] = strdup(path))) {
            free(v ? v : gone);
            goto fail;
        }
        gone = v, n_gone++;
    }
    for (size_t i = 0; i < n_gone; i++) {
        sqlite3_reset(del);
        sqlite3_bind_int64(del, 1, r->repo_id);
        sqlite3_bind_text(del, 2, gone[i], -1, SQLITE_STATIC);
        sqlite3_step(del);
        free(gone[i]);
    }
    free(gone);
    r->st->files_deleted = (int64_t)n_gone;
    if (sqlite3_exec(db, "DELETE FROM chunks WHERE hash NOT IN (SELECT hash FROM files)", NULL,
                     NULL, NULL) != SQLITE_OK)
        goto fail;
    int removed = sqlite3_changes(db);
    if (sqlite3_exec(db, "DELETE FROM contents WHERE hash NOT IN (SELECT hash FROM files)", NULL,
                     NULL, NULL) != SQLITE_OK)
        goto fail;
    if (removed > 0 && idx_meta_set_int(db, "chunk_version",
                                        idx_meta_int(db, "chunk_version", 0) + 1) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(upd, 1, r->st->commit, -1, SQLITE_STATIC);
    sqlite3_bind_int64(upd, 2, (int64_t)time(NULL));
    sqlite3_bind_int64(upd, 3, r->repo_id);
    if (sqlite3_step(upd) != SQLITE_DONE || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_finalize(sel), sqlite3_finalize(del), sqlite3_finalize(upd);
    (void)git_url;
    return ENG_OK;
fail:;
    eng_status s = sql_fail(r, err, "removing deleted files");
    sqlite3_finalize(sel), sqlite3_finalize(del), sqlite3_finalize(upd);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return s;
}

static eng_status repo_row(run *r, const char *git_url, const char *root, eng_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->ix->wdb,
                           "INSERT INTO repos(git_url, root) VALUES (?, ?) ON CONFLICT(git_url) "
                           "DO UPDATE SET root = excluded.root RETURNING id", -1, &st, NULL))
        return sql_fail(r, err, "repository");
    sqlite3_bind_text(st, 1, git_url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, root, -1, SQLITE_STATIC);
    bool ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok)
        r->repo_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return ok ? ENG_OK : sql_fail(r, err, "repository");
}

static void repo_chunks(run *r)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->ix->wdb,
                           "SELECT count(*) FROM chunks WHERE hash IN "
                           "(SELECT hash FROM files WHERE repo_id = ?)", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, r->repo_id);
        if (sqlite3_step(st) == SQLITE_ROW)
            r->st->chunks_total = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
}

static eng_status prepare(run *r, eng_err *err)
{
    sqlite3 *db = r->ix->wdb;
    if (sqlite3_prepare_v2(db, "SELECT hash FROM files WHERE repo_id = ? AND path = ?", -1,
                           &r->sel_file, NULL) ||
        sqlite3_prepare_v2(db, "SELECT 1 FROM contents WHERE hash = ?", -1, &r->has_content, NULL) ||
        sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO files(repo_id, path, hash) VALUES (?, ?, ?)",
                           -1, &r->up_file, NULL) ||
        sqlite3_prepare_v2(db, "INSERT INTO chunks(hash, seq, start_line, end_line, body, vec) "
                               "VALUES (?, ?, ?, ?, ?, ?)", -1, &r->ins_chunk, NULL) ||
        sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO contents(hash, n_chunks) VALUES (?, ?)", -1,
                           &r->ins_content, NULL))
        return sql_fail(r, err, "prepare");
    return ENG_OK;
}

eng_status idx_index_repo(idx_index *ix, const char *path, const char *git_url,
                          idx_progress_fn progress, void *progress_user,
                          const volatile bool *stop, idx_stats *st, eng_err *err)
{
    idx_stats local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    run r = {.ix = ix, .st = st, .progress = progress, .progress_user = progress_user,
             .stop = stop};
    clock_gettime(CLOCK_MONOTONIC, &r.t0);
    idx_walk w;
    eng_status s = idx_walk_run(path, &w, err);
    if (s != ENG_OK)
        return s;
    if (!git_url || !*git_url)
        git_url = w.root;
    snprintf(st->commit, sizeof st->commit, "%s", w.commit);
    st->git = w.git;
    st->skipped_vendored = w.skipped_vendored;
    st->skipped_generated = w.skipped_generated;
    st->skipped_binary = w.skipped_binary;
    st->files_seen = (int64_t)w.n + w.skipped_vendored + w.skipped_generated + w.skipped_binary;
    r.pr.files_total = (int64_t)w.n;
    bool *kept = calloc(w.n ? w.n : 1, sizeof *kept);
    if (!kept) {
        idx_walk_clear(&w);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_lock(&ix->run_mu);
    git_libgit2_init();
    if ((s = repo_row(&r, git_url, w.root, err)) != ENG_OK || (s = prepare(&r, err)) != ENG_OK)
        goto done;
    for (size_t i = 0; i < w.n; i++) {
        if (stop && *stop) {
            s = eng_fail(err, ENG_ERR_CANCELLED, "indexing %s stopped", path);
            break;
        }
        if ((s = visit(&r, w.root, w.paths[i], &kept[i], err)) != ENG_OK)
            break;
        st->files_indexed += kept[i];
        r.pr.files_done = (int64_t)i + 1;
        report(&r, false);
    }
    if (s == ENG_OK)
        s = flush(&r, err);
    if (s == ENG_OK)
        s = finish(&r, &w, kept, git_url, err);
    repo_chunks(&r);
    /* Whatever was committed becomes searchable, also after a failure or a stop. */
    eng_err verr;
    eng_status vs = idx_vectors_sync(ix, &verr);
    if (s == ENG_OK && vs != ENG_OK) {
        s = vs;
        if (err)
            *err = verr;
    }
done:
    pend_clear(&r);
    free(r.pend);
    free(r.vecs);
    sqlite3_finalize(r.sel_file), sqlite3_finalize(r.has_content), sqlite3_finalize(r.up_file);
    sqlite3_finalize(r.ins_chunk), sqlite3_finalize(r.ins_content);
    git_libgit2_shutdown();
    pthread_mutex_unlock(&ix->run_mu);
    st->seconds = since(&r.t0);
    r.pr.done = true;
    report(&r, true);
    free(kept);
    idx_walk_clear(&w);
    return s;
}
