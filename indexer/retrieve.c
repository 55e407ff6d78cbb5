/* retrieve.c — the one rule for snippets a completion request gets from the index (both front
 * ends call it): the query is the prefix's last lines, the current file's overlapping chunks are
 * left out, only hits similar enough to the query are kept, none repeats a client's snippet,
 * and together they fit the snippet budget left after the client's own. */
#include <stdlib.h>
#include <string.h>

#include "idx_impl.h"

/* The prompt shows about this much of the prefix and suffix: chunks sharing lines with it
 * would repeat the file to the model. */
#define SHOWN_PREFIX 8192
#define SHOWN_SUFFIX 4096

/* The query: the prefix's last lines (the code being written), at most ~1 KiB. */
static size_t query_start(const char *prefix, size_t len)
{
    size_t a = len, lines = 0;
    while (a > 0 && lines < IDX_RETRIEVE_QUERY_LINES && len - a < 1024) {
        a--;
        if (prefix[a] == '\n' && a + 1 < len)
            lines++;
    }
    if (a > 0 && prefix[a] == '\n')
        a++;
    return a;
}

static bool repeats(const char *body, const char *const *client, size_t n_client)
{
    for (size_t i = 0; i < n_client; i++)
        if (client[i] && (strstr(client[i], body) || strstr(body, client[i])))
            return true;
    return false;
}

eng_status idx_retrieve(idx_index *ix, const idx_retrieve_input *in, idx_hit **hits, size_t *n,
                        eng_err *err)
{
    *hits = NULL, *n = 0;
    if (!ix || !in->git_url || !*in->git_url || !in->prefix || in->prefix_len == 0 ||
        !idx_has_repo(ix, in->git_url))
        return ENG_OK;
    size_t budget = in->budget, used = 0;
    for (size_t i = 0; i < in->n_client; i++)
        used += in->client_bodies[i] ? strlen(in->client_bodies[i]) : 0;
    if (used >= budget)
        return ENG_OK;
    size_t qa = query_start(in->prefix, in->prefix_len);
    if (qa >= in->prefix_len)
        return ENG_OK;
    size_t pa = in->prefix_len > SHOWN_PREFIX ? in->prefix_len - SHOWN_PREFIX : 0;
    size_t sl = in->suffix ? (in->suffix_len < SHOWN_SUFFIX ? in->suffix_len : SHOWN_SUFFIX) : 0;
    char *shown = malloc(in->prefix_len - pa + sl + 2);
    if (!shown)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    memcpy(shown, in->prefix + pa, in->prefix_len - pa);
    memcpy(shown + in->prefix_len - pa, in->suffix ? in->suffix : "", sl);
    shown[in->prefix_len - pa + sl] = 0;
    idx_query q = {.text = in->prefix + qa, .len = in->prefix_len - qa,
                   .top_k = IDX_RETRIEVE_TOP_K, .git_url = in->git_url,
                   .exclude_path = in->filepath, .exclude_text = shown,
                   .min_similarity = in->min_similarity > 0 ? in->min_similarity
                                                            : IDX_RETRIEVE_MIN_SIMILARITY};
    idx_hit *h;
    size_t nh;
    eng_status s = idx_search(ix, &q, &h, &nh, err);
    free(shown);
    if (s != ENG_OK)
        return s;
    size_t kept = 0;
    for (size_t i = 0; i < nh; i++) {
        size_t blen = strlen(h[i].body);
        if (used + blen > budget || repeats(h[i].body, in->client_bodies, in->n_client)) {
            free(h[i].git_url), free(h[i].filepath), free(h[i].body);
            continue;
        }
        used += blen;
        h[kept++] = h[i];
    }
    if (kept == 0) {
        free(h);
        h = NULL;
    }
    *hits = h, *n = kept;
    return ENG_OK;
}
