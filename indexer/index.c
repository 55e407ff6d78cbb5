/* index.c — opening an index (the SQLite schema, the embedding model's stamp) and keeping the
 * FAISS vector index in step with the vectors SQLite stores (loaded when it matches, rebuilt and
 * written by temp file + rename when it does not). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idx_impl.h"

static const char *const schema =
    /* WAL + synchronous=NORMAL: a commit is atomic and survives the process being killed; only
     * a power loss can take back the last commits (never leaving a half one). */
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);"
    "CREATE TABLE IF NOT EXISTS repos(id INTEGER PRIMARY KEY, git_url TEXT UNIQUE NOT NULL,"
    "  root TEXT, commit_id TEXT, indexed_at INTEGER);"
    "CREATE TABLE IF NOT EXISTS files(repo_id INTEGER NOT NULL, path TEXT NOT NULL,"
    "  hash TEXT NOT NULL, PRIMARY KEY(repo_id, path));"
    "CREATE INDEX IF NOT EXISTS files_hash ON files(hash);"
    /* a content (by git blob hash) is present with all its chunks, or absent */
    "CREATE TABLE IF NOT EXISTS contents(hash TEXT PRIMARY KEY, n_chunks INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY, hash TEXT NOT NULL,"
    "  seq INTEGER NOT NULL, start_line INTEGER NOT NULL, end_line INTEGER NOT NULL,"
    "  body TEXT NOT NULL, vec BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(hash);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(body, content='chunks',"
    "  content_rowid='id', tokenize='serval_code');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');"
    "CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN"
    "  INSERT INTO chunks_fts(rowid, body) VALUES (new.id, new.body); END;"
    "CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN"
    "  INSERT INTO chunks_fts(chunks_fts, rowid, body) VALUES ('delete', old.id, old.body); END;";

int64_t idx_meta_int(sqlite3 *db, const char *key, int64_t dflt)
{
    sqlite3_stmt *st;
    int64_t v = dflt;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) != SQLITE_OK)
        return dflt;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int idx_meta_set_int(sqlite3 *db, const char *key, int64_t v)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", -1,
                                &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static eng_status open_db(const char *path, sqlite3 **db, eng_err *err)
{
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        eng_status s = eng_fail(err, ENG_ERR_IO, "%s: %s", path, sqlite3_errmsg(*db));
        sqlite3_close(*db);
        *db = NULL;
        return s;
    }
    sqlite3_busy_timeout(*db, 10000);
    /* Searches read chunks at random: mapped pages spare a read() per page. */
    sqlite3_exec(*db, "PRAGMA mmap_size=1073741824", NULL, NULL, NULL);
    if (idx_fts_register(*db) != SQLITE_OK) {
        sqlite3_close(*db);
        *db = NULL;
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "%s: SQLite without FTS5", path);
    }
    return ENG_OK;
}

/* An index built with another embedding model is emptied (its vectors would not compare). */
static eng_status check_model(idx_index *ix, eng_err *err)
{
    sqlite3_stmt *st;
    char stored[160] = "";
    if (sqlite3_prepare_v2(ix->wdb, "SELECT value FROM meta WHERE key = 'model'", -1, &st, NULL) !=
        SQLITE_OK)
        return eng_fail(err, ENG_ERR_FORMAT, "%s: not an index: %s", ix->dir, sqlite3_errmsg(ix->wdb));
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(stored, sizeof stored, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (strcmp(stored, ix->model_key) == 0)
        return ENG_OK;
    char *sql = sqlite3_mprintf("BEGIN IMMEDIATE; DELETE FROM files; DELETE FROM contents;"
                                "DELETE FROM chunks; INSERT OR REPLACE INTO meta VALUES('model', %Q);"
                                "INSERT OR REPLACE INTO meta VALUES('chunk_version',"
                                " coalesce((SELECT value FROM meta WHERE key='chunk_version'),0)+1);"
                                "COMMIT;", ix->model_key);
    char *msg = NULL;
    int rc = sql ? sqlite3_exec(ix->wdb, sql, NULL, NULL, &msg) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        sqlite3_exec(ix->wdb, "ROLLBACK", NULL, NULL, NULL);
        eng_status s = eng_fail(err, ENG_ERR_IO, "%s: %s", ix->dir, msg ? msg : "out of memory");
        sqlite3_free(msg);
        return s;
    }
    return ENG_OK;
}

/* mkdir -p (the folders the index lives in, mode 0700 like serve's data dir). */
static int mkdir_p(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

eng_status idx_open(const char *dir, const idx_embedder *emb, idx_index **out, eng_err *err)
{
    *out = NULL;
    if (!dir || !*dir)
        return eng_fail(err, ENG_ERR_INVALID, "the index needs a data directory");
    if (!emb || !emb->embed || emb->dim <= 0 || emb->dim > 65536)
        return eng_fail(err, ENG_ERR_INVALID, "the index needs an embedding model (a function "
                                              "and a vector length in 1..65536)");
    if (mkdir_p(dir) != 0)
        return eng_fail(err, ENG_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    idx_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->dir = strdup(dir))) {
        free(ix);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    ix->emb = *emb;
    snprintf(ix->model_key, sizeof ix->model_key, "%s/%d", emb->model ? emb->model : "?",
             (int)emb->dim);
    pthread_mutex_init(&ix->run_mu, NULL);
    pthread_mutex_init(&ix->read_mu, NULL);
    pthread_rwlock_init(&ix->vec_lock, NULL);
    char path[4096];
    snprintf(path, sizeof path, "%s/index.db", dir);
    eng_status s = open_db(path, &ix->wdb, err);
    if (s != ENG_OK)
        goto fail;
    char *msg = NULL;
    if (sqlite3_exec(ix->wdb, schema, NULL, NULL, &msg) != SQLITE_OK) {
        s = eng_fail(err, ENG_ERR_FORMAT, "%s: not an index: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        goto fail;
    }
    if ((s = check_model(ix, err)) != ENG_OK || (s = open_db(path, &ix->rdb, err)) != ENG_OK)
        goto fail;
    pthread_mutex_lock(&ix->run_mu);
    s = idx_vectors_sync(ix, err);
    pthread_mutex_unlock(&ix->run_mu);
    if (s != ENG_OK)
        goto fail;
    *out = ix;
    return ENG_OK;
fail:
    idx_close(ix);
    return s;
}

void idx_close(idx_index *ix)
{
    if (!ix)
        return;
    for (int i = 0; i < IDX_N_READ_STMTS; i++)
        sqlite3_finalize(ix->rst[i]);
    sqlite3_close(ix->wdb);
    sqlite3_close(ix->rdb);
    idx_faiss_free(ix->vec);
    idx_search_state_free(ix->dfc);
    pthread_mutex_destroy(&ix->run_mu);
    pthread_mutex_destroy(&ix->read_mu);
    pthread_rwlock_destroy(&ix->vec_lock);
    free(ix->dir);
    free(ix);
}

/* Every vector SQLite holds, with its chunk id. */
static eng_status load_vectors(idx_index *ix, float **x, int64_t **ids, int64_t *n, eng_err *err)
{
    *x = NULL, *ids = NULL, *n = 0;
    sqlite3_stmt *st;
    int64_t count = 0;
    if (sqlite3_prepare_v2(ix->wdb, "SELECT count(*) FROM chunks", -1, &st, NULL) != SQLITE_OK)
        return eng_fail(err, ENG_ERR_IO, "%s: %s", ix->dir, sqlite3_errmsg(ix->wdb));
    if (sqlite3_step(st) == SQLITE_ROW)
        count = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    size_t dim = (size_t)ix->emb.dim;
    *x = malloc((size_t)(count ? count : 1) * dim * sizeof **x);
    *ids = malloc((size_t)(count ? count : 1) * sizeof **ids);
    if (!*x || !*ids)
        goto oom;
    if (sqlite3_prepare_v2(ix->wdb, "SELECT id, vec FROM chunks", -1, &st, NULL) != SQLITE_OK)
        return eng_fail(err, ENG_ERR_IO, "%s: %s", ix->dir, sqlite3_errmsg(ix->wdb));
    while (sqlite3_step(st) == SQLITE_ROW && *n < count) {
        if ((size_t)sqlite3_column_bytes(st, 1) != dim * sizeof(float))
            continue; /* cannot happen: a vector is written with its chunk */
        (*ids)[*n] = sqlite3_column_int64(st, 0);
        memcpy(*x + (size_t)*n * dim, sqlite3_column_blob(st, 1), dim * sizeof(float));
        (*n)++;
    }
    sqlite3_finalize(st);
    return ENG_OK;
oom:
    free(*x), free(*ids);
    *x = NULL, *ids = NULL;
    return eng_fail(err, ENG_ERR_NOMEM, "out of memory loading %" PRId64 " vectors", count);
}

static int64_t chunk_count(sqlite3 *db)
{
    sqlite3_stmt *st;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM chunks", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* Removes vectors-*.faiss files other than keep (stale versions, temp files of a killed run). */
static void remove_stale(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "vectors-", 8) != 0 || strcmp(de->d_name, keep) == 0)
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
}

static void swap_in(idx_index *ix, idx_faiss *f)
{
    pthread_rwlock_wrlock(&ix->vec_lock);
    idx_faiss *old = ix->vec;
    ix->vec = f;
    pthread_rwlock_unlock(&ix->vec_lock);
    idx_faiss_free(old);
}

eng_status idx_vectors_sync(idx_index *ix, eng_err *err)
{
    int64_t version = idx_meta_int(ix->wdb, "chunk_version", 0);
    int64_t count = chunk_count(ix->wdb);
    char name[64], path[4096], tmp[4200], msg[400];
    snprintf(name, sizeof name, "vectors-%" PRId64 ".faiss", version);
    snprintf(path, sizeof path, "%s/%s", ix->dir, name);
    pthread_rwlock_rdlock(&ix->vec_lock);
    bool current = ix->vec && idx_faiss_ntotal(ix->vec) == count &&
                   access(path, F_OK) == 0;
    pthread_rwlock_unlock(&ix->vec_lock);
    if (current)
        return ENG_OK;
    idx_faiss *f = access(path, F_OK) == 0 ? idx_faiss_read(path, msg, sizeof msg) : NULL;
    if (f && (idx_faiss_ntotal(f) != count || idx_faiss_dim(f) != ix->emb.dim)) {
        idx_faiss_free(f); /* a file from another state: rebuilt below */
        f = NULL;
    }
    if (!f) {
        float *x;
        int64_t *ids, n;
        eng_status s = load_vectors(ix, &x, &ids, &n, err);
        if (s != ENG_OK)
            return s;
        f = idx_faiss_build(ix->emb.dim, x, ids, n, n > IDX_EXACT_MAX_VECTORS, msg, sizeof msg);
        free(x), free(ids);
        if (!f)
            return eng_fail(err, ENG_ERR_NOMEM, "%s", msg);
        snprintf(tmp, sizeof tmp, "%s/vectors-tmp-%d.faiss", ix->dir, (int)getpid());
        if (idx_faiss_write(f, tmp, msg, sizeof msg) != 0 || rename(tmp, path) != 0) {
            /* Searching still works from memory; the next open rebuilds. */
            fprintf(stderr, "serval index: cannot write %s: %s\n", path, msg);
            unlink(tmp);
        }
    }
    remove_stale(ix->dir, name);
    swap_in(ix, f);
    return ENG_OK;
}

bool idx_has_repo(idx_index *ix, const char *git_url)
{
    if (!git_url || !*git_url)
        return false;
    sqlite3_stmt *st;
    bool yes = false;
    pthread_mutex_lock(&ix->read_mu);
    if (sqlite3_prepare_v2(ix->rdb,
                           "SELECT 1 FROM repos r JOIN files f ON f.repo_id = r.id "
                           "WHERE r.git_url = ? LIMIT 1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, git_url, -1, SQLITE_STATIC);
        yes = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&ix->read_mu);
    return yes;
}

size_t idx_repos_get(idx_index *ix, idx_repo_info *out, size_t cap)
{
    size_t n = 0;
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&ix->read_mu);
    if (sqlite3_prepare_v2(ix->rdb,
                           "SELECT git_url, root, commit_id, indexed_at, (SELECT count(*) FROM "
                           "files WHERE files.repo_id = repos.id) FROM repos ORDER BY git_url",
                           -1, &st, NULL) == SQLITE_OK) {
        for (; sqlite3_step(st) == SQLITE_ROW; n++) {
            if (n >= cap)
                continue;
            idx_repo_info *r = &out[n];
            const char *u = (const char *)sqlite3_column_text(st, 0);
            const char *root = (const char *)sqlite3_column_text(st, 1);
            const char *c = (const char *)sqlite3_column_text(st, 2);
            snprintf(r->git_url, sizeof r->git_url, "%s", u ? u : "");
            snprintf(r->root, sizeof r->root, "%s", root ? root : "");
            snprintf(r->commit, sizeof r->commit, "%s", c ? c : "");
            r->indexed_at = sqlite3_column_int64(st, 3);
            r->files = sqlite3_column_int64(st, 4);
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ix->read_mu);
    return n;
}

void idx_totals_get(idx_index *ix, idx_totals *t)
{
    memset(t, 0, sizeof *t);
    static const char *const q[3] = {"SELECT count(*) FROM repos", "SELECT count(*) FROM files",
                                     "SELECT count(*) FROM chunks"};
    int64_t *dst[3] = {&t->repos, &t->files, &t->chunks};
    pthread_mutex_lock(&ix->read_mu);
    for (int i = 0; i < 3; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(ix->rdb, q[i], -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            *dst[i] = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&ix->read_mu);
    pthread_rwlock_rdlock(&ix->vec_lock);
    t->vectors_in_faiss = idx_faiss_ntotal(ix->vec);
    t->approximate = idx_faiss_approx(ix->vec);
    pthread_rwlock_unlock(&ix->vec_lock);
}
