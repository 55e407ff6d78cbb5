/* http_search.c — POST /v1beta/search: hybrid code search over the indexed repositories
 * (indexer/serval_index.h), JSON in and out (the shape is documented in rpc/README.md). */
#include <string.h>
#include <time.h>

#include "http_impl.h"
#include "log.h"
#include "rpc_request.h"
#include "serval_index.h"

static const struct {
    const char *name;
    idx_mode mode;
} modes[] = {{"hybrid", IDX_MODE_HYBRID}, {"bm25", IDX_MODE_BM25}, {"vector", IDX_MODE_VECTOR}};

enum MHD_Result http_route_search(http_req *r, json_t *req)
{
    json_t *q = json_object_get(req, "query");
    if (!json_is_string(q))
        return http_reply_error(r, 422, "invalid_request_error",
                                q ? "query must be a string" : "query is required");
    json_t *k = json_object_get(req, "top_k");
    if (k && !json_is_null(k) && !(json_is_integer(k) && json_integer_value(k) >= 1 &&
                                   json_integer_value(k) <= 100))
        return http_reply_error(r, 422, "invalid_request_error",
                                "top_k must be an integer in [1, 100]");
    json_t *url = json_object_get(req, "git_url");
    if (url && !json_is_null(url) && !json_is_string(url))
        return http_reply_error(r, 422, "invalid_request_error", "git_url must be a string");
    json_t *fp = json_object_get(req, "filepath");
    if (fp && !json_is_null(fp) && !json_is_string(fp))
        return http_reply_error(r, 422, "invalid_request_error", "filepath must be a string");
    json_t *m = json_object_get(req, "mode");
    idx_mode mode = IDX_MODE_HYBRID;
    if (m && !json_is_null(m)) {
        size_t i = 0, n = sizeof modes / sizeof modes[0];
        while (i < n && !(json_is_string(m) && strcmp(json_string_value(m), modes[i].name) == 0))
            i++;
        if (i == n)
            return http_reply_error(r, 422, "invalid_request_error",
                                    "mode must be \"hybrid\", \"bm25\" or \"vector\"");
        mode = modes[i].mode;
    }
    json_t *ms = json_object_get(req, "min_similarity");
    if (ms && !json_is_null(ms) && !json_is_number(ms))
        return http_reply_error(r, 422, "invalid_request_error", "min_similarity must be a number");
    idx_query iq = {
        .text = json_string_value(q), .len = json_string_length(q),
        .top_k = json_is_integer(k) ? (size_t)json_integer_value(k) : 10,
        .git_url = json_is_string(url) ? json_string_value(url) : NULL, .mode = mode,
        .exclude_path = json_is_string(fp) ? json_string_value(fp) : NULL,
        .min_similarity = json_is_number(ms) ? (float)json_number_value(ms) : 0.0f};
    if (iq.len == 0) /* idx_search would refuse it too; strlen() would then be asked */
        return http_reply_error(r, 422, "invalid_request_error", "query is empty");
    /* Checked after the body, so a bad request says what is wrong with it either way. */
    idx_index *ix = r->s->cfg.index;
    if (!ix)
        return http_reply_error(r, 501, "not_implemented",
                                "this server indexes no repository (start it with --repo PATH)");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    idx_hit *hits;
    size_t n;
    eng_err err = {{0}};
    eng_status st = idx_search(ix, &iq, &hits, &n, &err);
    if (st != ENG_OK)
        return st == ENG_ERR_INVALID
                   ? http_reply_error(r, 422, "invalid_request_error", "%s", err.msg)
                   : http_reply_eng_error(r, st, err.msg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:i,s:i,s:s,s:f,s:f,s:i,s:i}", "filepath", hits[i].filepath,
                           "git_url", hits[i].git_url, "start_line", hits[i].start_line,
                           "end_line", hits[i].end_line, "body", hits[i].body, "score",
                           (double)hits[i].score, "similarity", (double)hits[i].similarity,
                           "bm25_rank", hits[i].bm25_rank, "vector_rank", hits[i].vector_rank));
    idx_hits_free(hits, n);
    double ms_took = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
    return http_reply_json(r, 200, json_pack("{s:o,s:f}", "hits", arr, "took_ms", ms_took));
}

size_t http_retrieve_snippets(http_server *s, prompt_completion_input *in, prompt_snippet *rec,
                              const char *filepath, const char *git_url, idx_hit **got)
{
    *got = NULL;
    if (!s->cfg.index || s->cfg.no_retrieval || !git_url || !*git_url)
        return 0;
    const char *bodies[3 * RPC_MAX_SNIPPETS];
    size_t nb = 0;
    const prompt_snippet *lists[3] = {in->declarations, in->changed, in->recent};
    size_t counts[3] = {in->n_declarations, in->n_changed, in->n_recent};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l] && nb < 3 * RPC_MAX_SNIPPETS; i++)
            bodies[nb++] = lists[l][i].body;
    idx_retrieve_input ri = {
        .git_url = git_url, .filepath = filepath, .prefix = in->prefix,
        .prefix_len = in->prefix_len, .suffix = in->suffix, .suffix_len = in->suffix_len,
        .client_bodies = bodies, .n_client = nb,
        .budget = in->snippet_budget ? in->snippet_budget : PROMPT_DEFAULT_SNIPPET_BUDGET};
    idx_hit *h;
    size_t n;
    eng_err err = {{0}};
    if (idx_retrieve(s->cfg.index, &ri, &h, &n, &err) != ENG_OK) {
        rpc_log(RPC_LOG_WARN, "retrieval for %s skipped: %s", git_url, err.msg);
        return 0;
    }
    if (rec != in->recent) { /* the client's recent snippets first, then the retrieved */
        for (size_t i = 0; i < in->n_recent; i++)
            rec[i] = in->recent[i];
        in->recent = rec;
    }
    for (size_t i = 0; i < n; i++)
        rec[in->n_recent + i] = (prompt_snippet){h[i].filepath, h[i].body};
    in->n_recent += n;
    *got = h;
    return n;
}
