/* fts_tok.c — the code-aware tokenizer behind the FTS5 table ("serval_code", registered through
 * the fts5_tokenizer C API): identifiers stay whole (parse_config_file, parseConfigFile) and their
 * camelCase / snake_case parts are added at the same position, so "config" finds both. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "idx_impl.h"

#define TOK_MAX 64

static bool tok_byte(unsigned char c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

/* Emits the parts of w[0..n): runs split at '_', at lower->Upper, at Upper+Upper+lower
 * ("HTTPServer" -> "http", "server") and between letters and digits. */
static void emit_parts(const char *w, size_t n, char *low, idx_token_cb cb, void *user)
{
    size_t count = 0, a = 0;
    size_t starts[TOK_MAX], ends[TOK_MAX];
    for (size_t i = 0; i <= n; i++) {
        bool brk = i == n || w[i] == '_';
        if (!brk && i > a) {
            unsigned char p = (unsigned char)w[i - 1], c = (unsigned char)w[i];
            bool next_lower = i + 1 < n && islower((unsigned char)w[i + 1]);
            if ((islower(p) && isupper(c)) || (isupper(p) && isupper(c) && next_lower) ||
                (isalpha(p) && isdigit(c)) || (isdigit(p) && isalpha(c))) {
                starts[count] = a, ends[count] = i, count++;
                a = i;
                continue;
            }
        }
        if (brk) {
            if (i > a)
                starts[count] = a, ends[count] = i, count++;
            a = i + 1;
        }
    }
    if (count < 2)
        return;
    for (size_t k = 0; k < count; k++)
        cb(user, low + starts[k], ends[k] - starts[k], true);
}

void idx_tokens(const char *text, size_t len, bool parts, idx_token_cb cb, void *user)
{
    char low[TOK_MAX];
    size_t i = 0;
    while (i < len) {
        while (i < len && !tok_byte((unsigned char)text[i]))
            i++;
        size_t a = i;
        while (i < len && tok_byte((unsigned char)text[i]))
            i++;
        size_t n = i - a;
        if (n == 0)
            continue;
        if (n > TOK_MAX)
            n = TOK_MAX;
        for (size_t k = 0; k < n; k++)
            low[k] = (char)tolower((unsigned char)text[a + k]);
        cb(user, low, n, false);
        if (parts)
            emit_parts(text + a, n, low, cb, user);
    }
}

/* ---- the FTS5 side ---------------------------------------------------------------------- */

typedef struct tok_state {
    void *ctx;
    int (*xToken)(void *, int, const char *, int, int, int);
    const char *text;
    int rc;
    int start, end; /* the current whole token's byte range */
} tok_state;

typedef struct code_tokenizer {
    int unused;
} code_tokenizer;

static int tok_create(void *ctx, const char **azArg, int nArg, Fts5Tokenizer **out)
{
    (void)ctx, (void)azArg, (void)nArg;
    code_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    *out = (Fts5Tokenizer *)t;
    return SQLITE_OK;
}

static void tok_delete(Fts5Tokenizer *t)
{
    free(t);
}

static void fts_cb(void *user, const char *tok, size_t len, bool part)
{
    tok_state *s = user;
    if (s->rc != SQLITE_OK)
        return;
    if (!part) {
        /* tok points into a lower-cased copy; find the original's offsets by scanning on. */
        while (s->text[s->end] && !tok_byte((unsigned char)s->text[s->end]))
            s->end++;
        s->start = s->end;
        while (tok_byte((unsigned char)s->text[s->end]))
            s->end++;
    }
    s->rc = s->xToken(s->ctx, part ? FTS5_TOKEN_COLOCATED : 0, tok, (int)len, s->start, s->end);
}

static int tok_tokenize(Fts5Tokenizer *t, void *ctx, int flags, const char *text, int n,
                        int (*xToken)(void *, int, const char *, int, int, int))
{
    (void)t;
    /* fts_cb scans the original for offsets: work on a NUL-terminated copy. */
    char *copy = malloc((size_t)n + 1);
    if (!copy)
        return SQLITE_NOMEM;
    memcpy(copy, text, (size_t)n);
    copy[n] = 0;
    tok_state s = {ctx, xToken, copy, SQLITE_OK, 0, 0};
    bool doc = (flags & FTS5_TOKENIZE_DOCUMENT) != 0;
    idx_tokens(copy, (size_t)n, doc, fts_cb, &s);
    free(copy);
    return s.rc;
}

/* serval_bm25(chunks_fts, idf): Okapi BM25 (k1 = 1.2, b = 0.75, FTS5's bm25() constants) of the
 * row, with the query's per-phrase IDF given by the caller as a BLOB of floats, one per phrase;
 * negated so that ORDER BY ascending ranks best first. FTS5's own bm25() counts each phrase's
 * documents for its IDF with a second pass over every posting list; the search already knows
 * the document frequencies (search.c keeps them cached). */
#define BM25_K1 1.2
#define BM25_B 0.75
#define BM25_MAX_PHRASES 64

static void bm25_fn(const Fts5ExtensionApi *api, Fts5Context *ctx, sqlite3_context *out, int n_val,
                    sqlite3_value **val)
{
    int n_phrase = api->xPhraseCount(ctx), n_inst = 0, len = 0;
    const float *idf = n_val == 1 ? sqlite3_value_blob(val[0]) : NULL;
    int n_idf = idf ? sqlite3_value_bytes(val[0]) / (int)sizeof(float) : 0;
    int tf[BM25_MAX_PHRASES] = {0};
    sqlite3_int64 total = 0, rows = 0;
    int rc = api->xInstCount(ctx, &n_inst);
    for (int i = 0; rc == SQLITE_OK && i < n_inst; i++) {
        int phrase, col, off;
        rc = api->xInst(ctx, i, &phrase, &col, &off);
        if (rc == SQLITE_OK && phrase >= 0 && phrase < BM25_MAX_PHRASES)
            tf[phrase]++;
    }
    if (rc == SQLITE_OK)
        rc = api->xColumnSize(ctx, 0, &len);
    if (rc == SQLITE_OK)
        rc = api->xColumnTotalSize(ctx, 0, &total);
    if (rc == SQLITE_OK)
        rc = api->xRowCount(ctx, &rows);
    if (rc != SQLITE_OK) {
        sqlite3_result_error_code(out, rc);
        return;
    }
    double avg = rows > 0 && total > 0 ? (double)total / (double)rows : 1.0;
    double norm = BM25_K1 * (1.0 - BM25_B + BM25_B * (double)len / avg), score = 0;
    for (int p = 0; p < n_phrase && p < BM25_MAX_PHRASES; p++)
        if (tf[p])
            score += (p < n_idf ? idf[p] : 1.0) * tf[p] * (BM25_K1 + 1.0) / (tf[p] + norm);
    sqlite3_result_double(out, -score);
}

int idx_fts_register(sqlite3 *db)
{
    fts5_api *api = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    rc = sqlite3_finalize(st);
    if (rc != SQLITE_OK || !api)
        return rc != SQLITE_OK ? rc : SQLITE_ERROR;
    static fts5_tokenizer tk = {tok_create, tok_delete, tok_tokenize};
    rc = api->xCreateTokenizer(api, "serval_code", NULL, &tk, NULL);
    if (rc == SQLITE_OK)
        rc = api->xCreateFunction(api, "serval_bm25", NULL, bm25_fn, NULL);
    return rc;
}
