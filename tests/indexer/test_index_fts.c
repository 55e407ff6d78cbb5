/* test_index_fts.c — the FTS5 tokenizer "serval_code": identifiers stay whole and their
 * camelCase / snake_case parts are searchable too, through SQLite's real FTS5. */
#include <criterion/criterion.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "idx_impl.h"

typedef struct toks {
    char buf[1024];
} toks;

static void collect(void *user, const char *tok, size_t len, bool part)
{
    toks *t = user;
    size_t n = strlen(t->buf);
    snprintf(t->buf + n, sizeof t->buf - n, "%s%s%.*s", n ? " " : "", part ? "+" : "", (int)len, tok);
}

Test(index_fts, identifiers_stay_whole_and_emit_their_parts)
{
    toks t = {""};
    const char *s = "x = parseConfigFile(max_retry_count, HTTPServer2);";
    idx_tokens(s, strlen(s), true, collect, &t);
    cr_assert_str_eq(t.buf, "x parseconfigfile +parse +config +file max_retry_count +max +retry "
                            "+count httpserver2 +http +server +2");
    toks q = {""};
    idx_tokens(s, strlen(s), false, collect, &q);
    cr_assert_str_eq(q.buf, "x parseconfigfile max_retry_count httpserver2");
}

static int count(sqlite3 *db, const char *match)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM t WHERE t MATCH ?", -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, match, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", match, sqlite3_errmsg(db));
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

Test(index_fts, fts5_finds_whole_identifiers_and_their_parts_with_bm25)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    cr_assert_eq(idx_fts_register(db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "CREATE VIRTUAL TABLE t USING fts5(body, tokenize='serval_code');"
                              "INSERT INTO t VALUES ('def parseConfigFile(path): return load(path)');"
                              "INSERT INTO t VALUES ('max_retry_count = 3  # HTTPServer retries');"
                              "INSERT INTO t VALUES ('config = Config(); config.reload()');",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(count(db, "\"parseconfigfile\""), 1);
    cr_assert_eq(count(db, "\"parseConfigFile\""), 1, "queries are lower-cased like documents");
    cr_assert_eq(count(db, "\"config\""), 2, "a camelCase part and a whole word");
    cr_assert_eq(count(db, "\"retry\""), 1, "a snake_case part");
    cr_assert_eq(count(db, "\"http\""), 1);
    cr_assert_eq(count(db, "\"max_retry_count\""), 1);
    cr_assert_eq(count(db, "\"nothing\""), 0);
    /* BM25 ranks the document where the word is whole and repeated first. */
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT rowid FROM t WHERE t MATCH '\"config\"' ORDER BY rank", -1, &st,
                       NULL);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 3);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* serval_bm25 (fts_tok.c) takes the IDF from the search instead of recounting it: given FTS5's
 * own IDF it must give FTS5's bm25() score on every row, and a rarer term must weigh more. */
Test(index_fts, serval_bm25_equals_fts5_bm25_given_the_same_idf)
{
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    cr_assert_eq(idx_fts_register(db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "CREATE VIRTUAL TABLE t USING fts5(body, tokenize='serval_code');"
                              "INSERT INTO t VALUES ('def read_header(stream): return stream.read()');"
                              "INSERT INTO t VALUES ('header = read_header(f); header.strip(); "
                              "header.split()');"
                              "INSERT INTO t VALUES ('def write_body(stream, body): stream.write(body)');"
                              "INSERT INTO t VALUES ('class Parser: pass');"
                              "INSERT INTO t VALUES ('x = parse(header) or body');",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    /* "header" is in 3 of 5 rows, "stream" in 2: FTS5's IDF is log((N - n + 0.5) / (n + 0.5)),
     * at least 1e-6. */
    float idf[2] = {(float)fmax(1e-6, log((5 - 3 + 0.5) / (3 + 0.5))),
                    (float)log((5 - 2 + 0.5) / (2 + 0.5))};
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT rowid, bm25(t), serval_bm25(t, ?) FROM t WHERE t "
                                    "MATCH '\"header\" OR \"stream\"' ORDER BY rowid",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_blob(st, 1, idf, sizeof idf, SQLITE_STATIC);
    int rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        double theirs = sqlite3_column_double(st, 1), ours = sqlite3_column_double(st, 2);
        cr_assert(fabs(theirs - ours) <= 1e-5 * fabs(theirs) + 1e-9,
                  "row %d: bm25 %.9f, serval_bm25 %.9f", sqlite3_column_int(st, 0), theirs, ours);
    }
    sqlite3_finalize(st);
    cr_assert_eq(rows, 4, "rows holding either term");
    /* The rarer term outweighs the common one: ranked by serval_bm25, a 'stream' row is first. */
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT rowid FROM t WHERE t MATCH '\"header\" OR \"stream\"' "
                                    "ORDER BY serval_bm25(t, ?) LIMIT 1",
                                    -1, &st, NULL),
                 SQLITE_OK);
    float rare_first[2] = {0.1f, 2.0f};
    sqlite3_bind_blob(st, 1, rare_first, sizeof rare_first, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int top = sqlite3_column_int(st, 0);
    cr_assert(top == 1 || top == 3, "row %d ranked first", top);
    sqlite3_finalize(st);
    sqlite3_close(db);
}
