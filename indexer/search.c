/* search.c — hybrid retrieval: BM25 over the FTS5 table and inner product over the FAISS
 * vectors, each list filtered (repository, the current file's overlapping chunks) and fused by
 * reciprocal rank (k = 60). A hit needs to rank in one list, not both (Tabby #4524). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idx_impl.h"

#define RRF_K 60.0
#define LIST_DEPTH 50      /* candidates kept per list after filtering */
#define QUERY_TERMS 48     /* distinct query tokens sent to FTS5 at most */

/* How the two lists are weighed (measured on bench/index_dataset.py's labelled set, see
 * bench/RESULTS.md). Plain RRF with k = 60 ranks any chunk found by both lists above the top
 * hit of either alone, so the weaker list decides: on natural-language questions BM25 (the
 * words of a question are not the code's) pulled the hybrid below the vectors alone, and on
 * code the English embedding model's deep ranks pulled it below BM25. A prose query weighs
 * BM25 at PROSE_BM25_WEIGHT; a code query counts only the vectors' top CODE_VECTOR_DEPTH. Both
 * lists still count: a hit needs to rank in one, not both (Tabby #4524). */
#define PROSE_BM25_WEIGHT 0.3f
#define CODE_VECTOR_DEPTH 10

/* Whether a query is code rather than prose: several lines (a completion's prefix), or one
 * line dense in the punctuation prose rarely has. */
static bool query_is_code(const char *text, size_t len)
{
    size_t punct = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n' && i + 1 < len)
            return true;
        punct += strchr("()[]{}=;<>_", text[i]) != NULL && text[i] != 0;
    }
    return len > 0 && punct * 100 >= len * 8;
}

/* ---- definitions of the names at the cursor -------------------------------------------- */

/* A completion prefix ends where code is being written: `conn = open_connection(` wants the
 * chunk that defines open_connection, which neither list ranks reliably (BM25 and the vectors
 * both like the many chunks that merely call it). For a code query the names called on its
 * last line are looked up: the chunks that hold such a name (when it is rare enough:
 * DEF_POSTINGS chunks at most) and the candidates of both lists are checked for a line that
 * defines it, and the definers of each name form a third list, ranked by what the two lists
 * think of them, weighed DEF_WEIGHT (times 1, 1/2, 1/3 for the last, second-last and
 * third-last call of the line) in the same reciprocal-rank sum: at 4, the best definer of the
 * last call ranks above any chunk both lists put first (2/61). A name still being typed (no
 * `(` yet) is not looked up: it is often the prefix of another name, whose definitions would
 * push the right chunk out (measured: bench/RESULTS.md, fourth session). A query without calls,
 * or calls of names nobody defines, is ranked by the two lists as before. */
#define FOCUS_NAMES 3
#define DEF_POSTINGS 256
#define DEF_WEIGHT 4.0f

typedef struct focus {
    char name[FOCUS_NAMES][65]; /* as written (definitions are matched case-sensitively) */
    char low[FOCUS_NAMES][65];  /* lower-cased: the FTS5 token */
    size_t n;
} focus;

static bool ident_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c >= 0x80;
}

/* The names called on the query's last non-blank line (`name(`), rightmost first; FOCUS_NAMES
 * at most, each of 3 to 64 bytes, no repeats. */
static void focus_names(const char *text, size_t len, focus *f)
{
    f->n = 0;
    size_t b = len;
    while (b > 0 && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\n' ||
                     text[b - 1] == '\r'))
        b--;
    size_t a = b;
    while (a > 0 && text[a - 1] != '\n')
        a--;
    for (size_t i = b; i > a && f->n < FOCUS_NAMES;) {
        size_t e = i;
        while (e > a && !ident_byte((unsigned char)text[e - 1]))
            e--;
        size_t s = e;
        while (s > a && ident_byte((unsigned char)text[s - 1]))
            s--;
        if (s == e)
            break;
        i = s;
        size_t k = e;
        while (k < b && (text[k] == ' ' || text[k] == '\t'))
            k++;
        size_t n = e - s;
        if (k >= b || text[k] != '(' || n < 3 || n > 64 || (text[s] >= '0' && text[s] <= '9'))
            continue;
        bool dup = false;
        for (size_t j = 0; j < f->n; j++)
            dup |= strlen(f->name[j]) == n && memcmp(f->name[j], text + s, n) == 0;
        if (dup)
            continue;
        for (size_t j = 0; j < n; j++) {
            char ch = text[s + j];
            f->name[f->n][j] = ch;
            f->low[f->n][j] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        f->name[f->n][n] = f->low[f->n][n] = 0;
        f->n++;
    }
}

/* Words that, before a name, make the line use it rather than define it. */
static bool use_word(const char *w, size_t n)
{
    static const char *const words[] = {
        "return", "if", "elif", "else", "while", "for", "in", "not", "and", "or", "is",
        "await", "yield", "raise", "throw", "new", "case", "assert", "del", "print", "import",
        "from", "goto", "sizeof", "typeof", "delete", "echo", "do", "with", "lambda", "except",
        "when", "go", "defer", "as", "global", "nonlocal", "instanceof", "then", "until", NULL};
    for (size_t i = 0; words[i]; i++)
        if (strlen(words[i]) == n && memcmp(words[i], w, n) == 0)
            return true;
    return false;
}

/* Whether the line [ls, le) of a chunk, holding name at [at, at + n), defines it: the name is
 * preceded on its line only by declaration words (def, class, fn, func, static int *, pub
 * async, #define, Type::) and followed by what starts a definition's body or signature ( ( < :
 * { = [ ; or the line's end ). With nothing before it, a C-style definition whose return type
 * is on the previous line (at column 0, followed by `(`), or a top-level assignment. */
static bool line_defines(const char *body, const char *ls, const char *le, const char *at,
                         size_t n)
{
    const char *p = ls;
    while (p < at && (*p == ' ' || *p == '\t'))
        p++;
    const char *q = at + n;
    while (q < le && (*q == ' ' || *q == '\t'))
        q++;
    char next = q < le ? *q : '\n';
    if (next == ':' && q + 1 < le && q[1] == ':')
        return false; /* Type::member: the type is used, not defined */
    if (next == '=' && q + 1 < le && q[1] == '=')
        return false;
    if (!strchr("(<:{=[;\n\r", next))
        return false;
    if (p == at) { /* nothing before the name */
        if (at != ls)
            return false;
        if (next == '=')
            return true; /* a top-level assignment */
        if (next != '(' || ls == body)
            return false;
        const char *pe = ls - 1, *ps = pe; /* the previous line: a return type at column 0 */
        while (ps > body && ps[-1] != '\n')
            ps--;
        while (pe > ps && (pe[-1] == ' ' || pe[-1] == '\t' || pe[-1] == '\r'))
            pe--;
        const char *t = le;
        while (t > at && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\r'))
            t--;
        return pe > ps && ident_byte((unsigned char)*ps) && !strchr(";,)}{", pe[-1]) &&
               t[-1] != ';';
    }
    bool func = (size_t)(at - p) > 5 && memcmp(p, "func ", 5) == 0; /* Go: func (r T) Name */
    if (*p == '#')
        p++;
    while (p < at) {
        if (ident_byte((unsigned char)*p)) {
            const char *w = p;
            while (p < at && ident_byte((unsigned char)*p))
                p++;
            if (use_word(w, (size_t)(p - w)))
                return false;
            continue;
        }
        if (*p == ':' && p + 1 < at && p[1] == ':') {
            p += 2;
            continue;
        }
        if (!strchr(" \t*&<>", *p) && !(func && strchr("()", *p)))
            return false;
        p++;
    }
    return true;
}

/* Whether body has a line that defines name (see line_defines). */
static bool defines(const char *body, const char *name)
{
    size_t n = strlen(name);
    for (const char *at = strstr(body, name); at; at = strstr(at + 1, name)) {
        if ((at > body && ident_byte((unsigned char)at[-1])) || ident_byte((unsigned char)at[n]))
            continue;
        const char *ls = at, *le = at + n;
        while (ls > body && ls[-1] != '\n')
            ls--;
        while (*le && *le != '\n')
            le++;
        if (line_defines(body, ls, le, at, n))
            return true;
    }
    return false;
}

typedef struct cand {
    int64_t id;
    int32_t bm25_rank, vec_rank;
    float score, sim;
    char *git_url, *path, *body;
    int32_t start, end;
    uint8_t defines; /* bit i: defines focus name i */
} cand;

typedef struct cand_set {
    cand *v;
    size_t n, cap;
} cand_set;

/* ---- the FTS5 query --------------------------------------------------------------------- */

typedef struct term_set {
    char terms[QUERY_TERMS][65];
    size_t n;
} term_set;

static void add_term(void *user, const char *tok, size_t len, bool part)
{
    (void)part;
    term_set *t = user;
    if (len < 2 || t->n == QUERY_TERMS)
        return;
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->terms[i]) == len && memcmp(t->terms[i], tok, len) == 0)
            return;
    memcpy(t->terms[t->n], tok, len);
    t->terms[t->n++][len] = 0;
}

/* Document frequencies of query terms, cached per index: fts5vocab counts a term's documents by
 * reading its whole posting list, so a common identifier (self, return) cost milliseconds on
 * every query; those are exactly the terms every query repeats. Cleared when the database
 * changes (SQLite's data version, which the read connection sees from its next read: one
 * search may still use the counts from before a commit; they only pick and weigh terms) or
 * the table fills. Used under read_mu. */
#define DF_SLOTS 4096 /* a power of two */

struct idx_df_cache {
    unsigned int data_version;
    size_t used;
    struct {
        char term[65];
        int64_t df; /* -1: empty slot */
    } slot[DF_SLOTS];
};

void idx_search_state_free(struct idx_df_cache *dfc)
{
    free(dfc);
}

static void df_cache_clear(struct idx_df_cache *c, unsigned int version)
{
    c->data_version = version;
    c->used = 0;
    for (size_t i = 0; i < DF_SLOTS; i++)
        c->slot[i].df = -1;
}

/* The number of chunks holding term: from the cache, else from fts5vocab (and cached). */
static int64_t lookup_df(idx_index *ix, sqlite3_stmt *vocab, const char *term)
{
    struct idx_df_cache *c = ix->dfc;
    size_t h = 2166136261u;
    for (const char *p = term; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    size_t i = h & (DF_SLOTS - 1);
    if (c) {
        for (; c->slot[i].df >= 0; i = (i + 1) & (DF_SLOTS - 1))
            if (strcmp(c->slot[i].term, term) == 0)
                return c->slot[i].df;
    }
    sqlite3_reset(vocab);
    sqlite3_bind_text(vocab, 1, term, -1, SQLITE_STATIC);
    int64_t df = sqlite3_step(vocab) == SQLITE_ROW ? sqlite3_column_int64(vocab, 0) : 0;
    sqlite3_reset(vocab);
    if (c && c->used < DF_SLOTS / 2) { /* half full at most: probes stay short */
        snprintf(c->slot[i].term, sizeof c->slot[i].term, "%s", term);
        c->slot[i].df = df;
        c->used++;
    }
    return df;
}

/* "a" OR "b" OR ...: the query's rarest identifiers and parts, each as a quoted FTS5 string,
 * with each one's IDF in idf[] (in the query's order; serval_bm25 weighs by it). The last
 * tokens of the text are the most telling (the cursor's lines): they are collected first. FTS5
 * visits every chunk that holds any term, so common terms (self, return, the language's
 * keywords: near-zero BM25 weight anyway) would make it score most of the table: terms are
 * taken rarest first while their chunks add up to FTS_POSTINGS (at least FTS_MIN_TERMS, at
 * most FTS_TERMS), none that is in more than a quarter of the chunks. A small index keeps
 * every term; a large one its rare ones, so the work stays bounded. */
#define FTS_TERMS 24
#define FTS_MIN_TERMS 3
#define FTS_POSTINGS 2000
/* The terms of the query's last line weigh this many times their IDF: in a completion's prefix
 * the cursor's line says most about what comes next (code->code BM25 alone on the development
 * set: MRR@10 0.124 -> 0.270; a one-line prose query is scaled as a whole, its ranking kept). */
#define LAST_LINE_BOOST 4.0f

typedef struct term_df {
    int64_t df;
    size_t i;
} term_df;

static int cmp_df(const void *a, const void *b)
{
    const term_df *x = a, *y = b;
    return x->df != y->df ? (x->df > y->df) - (x->df < y->df) : (x->i > y->i) - (x->i < y->i);
}

static char *fts_query(idx_index *ix, const char *text, size_t len, sqlite3_stmt *vocab,
                       int64_t n_docs, float *idf, size_t *n_idf)
{
    term_set t = {.n = 0};
    size_t from = len;
    *n_idf = 0;
    /* Scan backwards in line-sized steps so the cap keeps the latest lines' tokens. */
    size_t n_last = 0; /* the terms of the last line come first */
    while (from > 0 && t.n < QUERY_TERMS) {
        size_t a = from - 1;
        while (a > 0 && text[a - 1] != '\n')
            a--;
        idx_tokens(text + a, from - a, true, add_term, &t);
        if (!n_last)
            n_last = t.n;
        from = a;
    }
    if (t.n == 0)
        return NULL;
    size_t cap = t.n * 72 + 1, off = 0, kept = 0, n_df = 0;
    int64_t postings = 0;
    char *q = malloc(cap);
    if (!q)
        return NULL;
    term_df dfs[QUERY_TERMS];
    for (size_t i = 0; i < t.n; i++) {
        int64_t df = 1;
        if (vocab && n_docs >= 64) {
            df = lookup_df(ix, vocab, t.terms[i]);
            if (df == 0 || df > n_docs / 4)
                continue;
        }
        dfs[n_df++] = (term_df){df, i};
    }
    qsort(dfs, n_df, sizeof *dfs, cmp_df);
    double n = (double)(n_docs > 0 ? n_docs : 1);
    for (size_t k = 0; k < n_df && kept < FTS_TERMS; k++) {
        if (kept >= FTS_MIN_TERMS && postings + dfs[k].df > FTS_POSTINGS)
            break;
        postings += dfs[k].df;
        double df = (double)dfs[k].df;
        idf[kept] = (float)fmax(1e-6, log((n - df + 0.5) / (df + 0.5) + 1.0));
        if (dfs[k].i < n_last)
            idf[kept] *= LAST_LINE_BOOST;
        off += (size_t)snprintf(q + off, cap - off, "%s\"%s\"", kept++ ? " OR " : "",
                                t.terms[dfs[k].i]);
    }
    *n_idf = kept;
    if (kept == 0) {
        free(q);
        return NULL;
    }
    return q;
}

/* ---- candidates ------------------------------------------------------------------------- */

/* Whether a chunk of the current file overlaps what the request shows. */
static bool excluded(const idx_query *q, const char *path, int32_t start, int32_t end,
                     const char *body)
{
    if (!q->exclude_path || !*q->exclude_path || strcmp(path, q->exclude_path) != 0)
        return false;
    if (q->exclude_end > 0 && start <= q->exclude_end && end >= q->exclude_start)
        return true;
    if (!q->exclude_text)
        return q->exclude_end <= 0; /* the current file, no window given: all of it */
    for (const char *l = body; *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        while (n > 0 && (*l == ' ' || *l == '\t'))
            l++, n--;
        if (n >= 8) {
            char line[512];
            size_t k = n < sizeof line - 1 ? n : sizeof line - 1;
            memcpy(line, l, k);
            line[k] = 0;
            if (strstr(q->exclude_text, line))
                return true;
        }
        if (!nl)
            break;
        l = nl + 1;
    }
    return false;
}

/* Looks a chunk up: its body, lines and a file holding it (in the query's repository, not
 * excluded). false when none qualifies. With qv, the cosine with the query too; with f, which
 * of its names the chunk defines (and with defs_only, false for a chunk that defines none). */
static bool resolve(sqlite3_stmt *chunk, sqlite3_stmt *files, const idx_query *q, const float *qv,
                    int32_t dim, const focus *f, bool defs_only, cand *c)
{
    sqlite3_reset(chunk);
    sqlite3_bind_int64(chunk, 1, c->id);
    if (sqlite3_step(chunk) != SQLITE_ROW)
        return false; /* removed since the vector index was built */
    const char *hash = (const char *)sqlite3_column_text(chunk, 0);
    c->start = sqlite3_column_int(chunk, 1);
    c->end = sqlite3_column_int(chunk, 2);
    const char *body = (const char *)sqlite3_column_text(chunk, 3);
    if (!body)
        body = "";
    c->defines = 0;
    for (size_t i = 0; f && i < f->n; i++)
        if (defines(body, f->name[i]))
            c->defines |= (uint8_t)(1u << i);
    if (defs_only && !c->defines) {
        sqlite3_reset(chunk);
        return false;
    }
    if (qv && sqlite3_column_bytes(chunk, 4) == (int)(dim * sizeof(float))) {
        const float *v = sqlite3_column_blob(chunk, 4);
        float dot = 0;
        for (int32_t i = 0; i < dim; i++)
            dot += v[i] * qv[i];
        c->sim = dot;
    }
    sqlite3_reset(files);
    sqlite3_bind_text(files, 1, hash, -1, SQLITE_TRANSIENT);
    bool found = false;
    while (!found && sqlite3_step(files) == SQLITE_ROW) {
        const char *url = (const char *)sqlite3_column_text(files, 0);
        const char *path = (const char *)sqlite3_column_text(files, 1);
        if (q->git_url && *q->git_url && strcmp(url, q->git_url) != 0)
            continue;
        if (excluded(q, path, c->start, c->end, body))
            continue;
        c->git_url = strdup(url);
        c->path = strdup(path);
        c->body = strdup(body);
        found = c->git_url && c->path && c->body;
    }
    sqlite3_reset(files);
    sqlite3_reset(chunk);
    return found;
}

static cand *cand_get(cand_set *s, int64_t id, bool *fresh)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].id == id) {
            *fresh = false;
            return &s->v[i];
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        cand *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return NULL;
        s->v = v, s->cap = cap;
    }
    *fresh = true;
    cand *c = &s->v[s->n++];
    memset(c, 0, sizeof *c);
    c->id = id;
    return c;
}

static void cand_free(cand *c)
{
    free(c->git_url), free(c->path), free(c->body);
    c->git_url = c->path = c->body = NULL;
}

/* Adds one list's ids (best first) as ranks 1.. of the filtered list, up to depth. */
static void add_list(cand_set *s, const int64_t *ids, size_t n, bool bm25, int32_t depth,
                     sqlite3_stmt *chunk, sqlite3_stmt *files, const idx_query *q,
                     const float *qv, int32_t dim, const focus *f)
{
    int32_t rank = 0;
    for (size_t i = 0; i < n && rank < depth; i++) {
        if (ids[i] < 0)
            continue;
        bool fresh;
        cand *c = cand_get(s, ids[i], &fresh);
        if (!c)
            return;
        if (fresh && !resolve(chunk, files, q, qv, dim, f, false, c)) {
            cand_free(c);
            s->n--;
            continue;
        }
        if (!fresh && !c->path)
            continue;
        rank++;
        if (bm25)
            c->bm25_rank = rank;
        else
            c->vec_rank = rank;
    }
}

/* Adds the chunks that define a focus name and that neither list holds: the chunks holding
 * the name (FTS5, when it is in DEF_POSTINGS chunks at most), kept when one defines it. */
static void add_definers(idx_index *ix, cand_set *s, const focus *f, sqlite3_stmt *fts,
                         sqlite3_stmt *vocab, sqlite3_stmt *chunk, sqlite3_stmt *files,
                         const idx_query *q, const float *qv, int32_t dim)
{
    for (size_t i = 0; i < f->n; i++) {
        int64_t df = lookup_df(ix, vocab, f->low[i]);
        if (df <= 0 || df > DEF_POSTINGS)
            continue;
        char match[72];
        snprintf(match, sizeof match, "\"%s\"", f->low[i]);
        float idf = 1.0f;
        int64_t ids[DEF_POSTINGS];
        size_t n = 0;
        sqlite3_bind_text(fts, 1, match, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(fts, 2, &idf, (int)sizeof idf, SQLITE_TRANSIENT);
        sqlite3_bind_int64(fts, 3, DEF_POSTINGS);
        while (n < DEF_POSTINGS && sqlite3_step(fts) == SQLITE_ROW)
            ids[n++] = sqlite3_column_int64(fts, 0);
        sqlite3_reset(fts);
        for (size_t k = 0; k < n; k++) {
            bool fresh;
            cand *c = cand_get(s, ids[k], &fresh);
            if (!c)
                return;
            if (fresh && !resolve(chunk, files, q, qv, dim, f, true, c)) {
                cand_free(c);
                s->n--;
            }
        }
    }
}

/* The third list: for each focus name, its definers ranked by the two lists' fused score (then
 * cosine), each adding DEF_WEIGHT * (1 / (name's place)) / (RRF_K + rank). */
static void score_definers(cand_set *s, const focus *f)
{
    for (size_t i = 0; i < f->n; i++) {
        for (int32_t rank = 1;; rank++) {
            cand *best = NULL;
            for (size_t k = 0; k < s->n; k++) {
                cand *c = &s->v[k];
                if (!c->path || !(c->defines & (1u << i)))
                    continue;
                if (!best || c->score > best->score ||
                    (c->score == best->score && c->sim > best->sim))
                    best = c;
            }
            if (!best)
                break;
            best->defines &= (uint8_t)~(1u << i); /* ranked: out of this name's list */
            best->score += DEF_WEIGHT / (float)(i + 1) / (float)(RRF_K + rank);
        }
    }
}

static int cmp_score(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

eng_status idx_search(idx_index *ix, const idx_query *q, idx_hit **hits, size_t *n, eng_err *err)
{
    *hits = NULL, *n = 0;
    if (!q || !q->text)
        return eng_fail(err, ENG_ERR_INVALID, "a search needs a query text");
    size_t len = q->len ? q->len : strlen(q->text);
    if (len == 0)
        return eng_fail(err, ENG_ERR_INVALID, "the query is empty");
    if (len > IDX_MAX_QUERY_BYTES)
        return eng_fail(err, ENG_ERR_INVALID, "the query is %zu bytes, more than the %zu allowed",
                        len, IDX_MAX_QUERY_BYTES);
    size_t top_k = q->top_k ? q->top_k : 10;
    if (top_k > 100)
        return eng_fail(err, ENG_ERR_INVALID, "top_k must be at most 100 (got %zu)", top_k);
    int32_t dim = ix->emb.dim;
    float *qv = NULL;
    /* Deeper lists when filtering by repository: other repositories' hits are dropped. */
    size_t depth = q->git_url && *q->git_url ? 4 * LIST_DEPTH : LIST_DEPTH + LIST_DEPTH / 2;
    int64_t *vids = NULL, *bids = NULL;
    size_t n_v = 0, n_b = 0;
    eng_status s = ENG_OK;
    if (q->mode != IDX_MODE_BM25 || q->min_similarity > 0) {
        qv = malloc((size_t)dim * sizeof *qv);
        if (!qv)
            return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        const char *t = q->text;
        if ((s = ix->emb.embed(ix->emb.user, &t, &len, 1, qv, err)) != ENG_OK)
            goto done;
    }
    if (q->mode != IDX_MODE_BM25) {
        float *sims = malloc(depth * sizeof *sims);
        vids = malloc(depth * sizeof *vids);
        char msg[400];
        pthread_rwlock_rdlock(&ix->vec_lock);
        int rc = !sims || !vids ? -2
                 : ix->vec && idx_faiss_ntotal(ix->vec) > 0
                     ? idx_faiss_search(ix->vec, qv, (int64_t)depth, sims, vids, msg, sizeof msg)
                     : 1;
        pthread_rwlock_unlock(&ix->vec_lock);
        free(sims);
        if (rc == -2 || rc == -1) {
            s = rc == -2 ? eng_fail(err, ENG_ERR_NOMEM, "out of memory")
                         : eng_fail(err, ENG_ERR_IO, "%s", msg);
            goto done;
        }
        n_v = rc == 0 ? depth : 0;
    }
    pthread_mutex_lock(&ix->read_mu);
    /* Prepared once per index, used under read_mu. */
    sqlite3_stmt **st = ix->rst;
    static const char *const sql[IDX_N_READ_STMTS] = {
        "SELECT hash, start_line, end_line, body, vec FROM chunks WHERE id = ?",
        "SELECT r.git_url, f.path FROM files f JOIN repos r ON r.id = f.repo_id "
        "WHERE f.hash = ? ORDER BY f.rowid",
        "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? "
        "ORDER BY serval_bm25(chunks_fts, ?) LIMIT ?",
        "SELECT doc FROM chunks_vocab WHERE term = ?"};
    for (int i = 0; i < IDX_N_READ_STMTS; i++)
        if (!st[i] && sqlite3_prepare_v3(ix->rdb, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i],
                                         NULL) != SQLITE_OK) {
            s = eng_fail(err, ENG_ERR_IO, "%s: %s", ix->dir, sqlite3_errmsg(ix->rdb));
            goto unlock;
        }
    sqlite3_stmt *chunk = st[0], *files = st[1], *fts = st[2];
    if (q->mode != IDX_MODE_VECTOR) {
        pthread_rwlock_rdlock(&ix->vec_lock);
        int64_t n_docs = idx_faiss_ntotal(ix->vec);
        pthread_rwlock_unlock(&ix->vec_lock);
        if (!ix->dfc && (ix->dfc = malloc(sizeof *ix->dfc)) != NULL)
            df_cache_clear(ix->dfc, 0);
        unsigned int version = 0;
        if (ix->dfc && sqlite3_file_control(ix->rdb, "main", SQLITE_FCNTL_DATA_VERSION,
                                            &version) == SQLITE_OK &&
            version != ix->dfc->data_version)
            df_cache_clear(ix->dfc, version);
        float idf[FTS_TERMS];
        size_t n_idf = 0;
        char *match = fts_query(ix, q->text, len, st[3], n_docs, idf, &n_idf);
        bids = malloc(depth * sizeof *bids);
        if (match && bids) {
            sqlite3_bind_text(fts, 1, match, -1, SQLITE_TRANSIENT);
            sqlite3_bind_blob(fts, 2, idf, (int)(n_idf * sizeof *idf), SQLITE_TRANSIENT);
            sqlite3_bind_int64(fts, 3, (int64_t)depth);
            while (n_b < depth && sqlite3_step(fts) == SQLITE_ROW)
                bids[n_b++] = sqlite3_column_int64(fts, 0);
            sqlite3_reset(fts);
        }
        free(match);
    }
    cand_set cs = {0};
    bool code = query_is_code(q->text, len);
    /* One list alone is ranked as it is; the hybrid weighs them (see PROSE_BM25_WEIGHT) and,
     * for code, adds the definitions of the names at the cursor (see DEF_WEIGHT). */
    bool hybrid = q->mode == IDX_MODE_HYBRID;
    float wb = hybrid && !code ? PROSE_BM25_WEIGHT : 1.0f, wv = 1.0f;
    focus f = {.n = 0};
    if (hybrid && code)
        focus_names(q->text, len, &f);
    const focus *fp = f.n ? &f : NULL;
    add_list(&cs, bids, n_b, true, LIST_DEPTH, chunk, files, q, qv, dim, fp);
    add_list(&cs, vids, n_v, false, hybrid && code ? CODE_VECTOR_DEPTH : LIST_DEPTH, chunk, files,
             q, qv, dim, fp);
    if (fp)
        add_definers(ix, &cs, fp, fts, st[3], chunk, files, q, qv, dim);
    size_t kept = 0;
    for (size_t i = 0; i < cs.n; i++) {
        cand *c = &cs.v[i];
        c->score = (c->bm25_rank ? wb / (float)(RRF_K + c->bm25_rank) : 0.0f) +
                   (c->vec_rank ? wv / (float)(RRF_K + c->vec_rank) : 0.0f);
        /* A definition of a name at the cursor is relevant whatever its cosine. */
        bool below = q->min_similarity > 0 && c->sim < q->min_similarity && !c->defines;
        if (!c->path || (!c->bm25_rank && !c->vec_rank && !c->defines) || below) {
            cand_free(c);
            continue;
        }
        cs.v[kept++] = *c;
    }
    cs.n = kept;
    if (fp)
        score_definers(&cs, fp);
    qsort(cs.v, cs.n, sizeof *cs.v, cmp_score);
    size_t out_n = cs.n < top_k ? cs.n : top_k;
    idx_hit *h = out_n ? calloc(out_n, sizeof *h) : NULL;
    if (out_n && !h) {
        s = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        out_n = 0;
    }
    for (size_t i = 0; i < cs.n; i++) {
        cand *c = &cs.v[i];
        if (i < out_n) {
            h[i] = (idx_hit){c->git_url, c->path, c->body, c->start, c->end, c->score, c->sim,
                             c->bm25_rank, c->vec_rank};
        } else {
            cand_free(c);
        }
    }
    free(cs.v);
    *hits = h, *n = out_n;
unlock:
    pthread_mutex_unlock(&ix->read_mu);
done:
    free(qv), free(vids), free(bids);
    return s;
}

void idx_hits_free(idx_hit *hits, size_t n)
{
    for (size_t i = 0; hits && i < n; i++)
        free(hits[i].git_url), free(hits[i].filepath), free(hits[i].body);
    free(hits);
}
