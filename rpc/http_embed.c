/* http_embed.c — the embedding routes: OpenAI's POST /v1/embeddings (input as a string, an
 * array of strings, a token array or an array of token arrays; encoding_format float or
 * base64; usage) and llama.cpp-server's POST /embeddings ({"content": ...} answered as
 * [{"index", "embedding": [[...]]}], what Tabby's `llama.cpp/embedding` backend reads) and
 * its older POST /embedding ({"embedding": [...]}, Tabby's before_b4356 setting). All run on
 * the server's embedder (serval_embed.h); without one they answer 501. */
#include <stdlib.h>
#include <string.h>

#include "http_impl.h"
#include "serval_embed.h"

/* What one request asks for: texts, or token arrays (OpenAI only). Arrays point into the
 * request's JSON (strings) or are owned here (token arrays). */
typedef struct embed_inputs {
    int32_t n;
    const char **texts;
    size_t *lens;
    int32_t **toks;  /* NULL for text inputs; else n owned arrays */
    int32_t *n_tok;
} embed_inputs;

static void inputs_free(embed_inputs *in)
{
    for (int32_t i = 0; in->toks && i < in->n; i++)
        free(in->toks[i]);
    free(in->texts), free(in->lens), free(in->toks), free(in->n_tok);
    memset(in, 0, sizeof *in);
}

/* A JSON array of integers as token ids; false (with msg) when it is not one. */
static bool token_array(json_t *a, int32_t **out, int32_t *n, char *msg, size_t cap,
                        const char *where)
{
    size_t k = json_array_size(a);
    if (k == 0) {
        snprintf(msg, cap, "%s is an empty token array", where);
        return false;
    }
    int32_t *v = malloc(sizeof(int32_t) * k);
    if (!v) {
        snprintf(msg, cap, "out of memory");
        return false;
    }
    for (size_t i = 0; i < k; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            json_integer_value(x) > INT32_MAX) {
            snprintf(msg, cap, "%s[%zu] is not a token id (a non-negative integer)", where, i);
            free(v);
            return false;
        }
        v[i] = (int32_t)json_integer_value(x);
    }
    *out = v;
    *n = (int32_t)k;
    return true;
}

/* Reads `input` (OpenAI) or `content` (llama.cpp): a string or an array of strings; OpenAI
 * also takes a token array or an array of them. false with msg for anything else. */
static bool parse_inputs(json_t *v, bool tokens_ok, embed_inputs *in, char *msg, size_t cap,
                         const char *param)
{
    memset(in, 0, sizeof *in);
    if (json_is_string(v)) {
        in->n = 1;
        in->texts = malloc(sizeof *in->texts);
        in->lens = malloc(sizeof *in->lens);
        if (!in->texts || !in->lens)
            goto nomem;
        in->texts[0] = json_string_value(v);
        in->lens[0] = json_string_length(v);
        return true;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        snprintf(msg, cap, "%s must be a string or a non-empty array of strings%s", param,
                 tokens_ok ? " (or of token ids, or of token-id arrays)" : "");
        return false;
    }
    size_t n = json_array_size(v);
    if (n > INT32_MAX) {
        snprintf(msg, cap, "%s: too many inputs", param);
        return false;
    }
    in->n = (int32_t)n;
    json_t *first = json_array_get(v, 0);
    if (tokens_ok && json_is_integer(first)) { /* one token array */
        in->n = 1;
        in->toks = calloc(1, sizeof *in->toks);
        in->n_tok = calloc(1, sizeof *in->n_tok);
        if (!in->toks || !in->n_tok)
            goto nomem;
        if (!token_array(v, &in->toks[0], &in->n_tok[0], msg, cap, param))
            goto fail;
        return true;
    }
    if (tokens_ok && json_is_array(first)) { /* token arrays */
        in->toks = calloc(n, sizeof *in->toks);
        in->n_tok = calloc(n, sizeof *in->n_tok);
        if (!in->toks || !in->n_tok)
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            char where[64];
            snprintf(where, sizeof where, "%s[%zu]", param, i);
            json_t *a = json_array_get(v, i);
            if (!json_is_array(a)) {
                snprintf(msg, cap, "%s is not a token array (inputs must all be of one kind)",
                         where);
                goto fail;
            }
            if (!token_array(a, &in->toks[i], &in->n_tok[i], msg, cap, where))
                goto fail;
        }
        return true;
    }
    in->texts = calloc(n, sizeof *in->texts);
    in->lens = calloc(n, sizeof *in->lens);
    if (!in->texts || !in->lens)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s)) {
            snprintf(msg, cap, "%s[%zu] is not a string (inputs must all be of one kind)",
                     param, i);
            goto fail;
        }
        in->texts[i] = json_string_value(s);
        in->lens[i] = json_string_length(s);
    }
    return true;
nomem:
    snprintf(msg, cap, "out of memory");
fail:
    inputs_free(in);
    return false;
}

/* Runs the inputs; out (n x dim) and n_tokens owned by the caller on ENG_OK. */
static eng_status run_inputs(eng_embedder *e, const embed_inputs *in, float **out,
                             int32_t **n_tokens, eng_err *err)
{
    const int32_t d = eng_embedder_dim(e);
    *out = malloc(sizeof(float) * (size_t)in->n * (size_t)d);
    *n_tokens = malloc(sizeof(int32_t) * (size_t)in->n);
    if (!*out || !*n_tokens) {
        free(*out), free(*n_tokens);
        *out = NULL, *n_tokens = NULL;
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    eng_status st = in->toks ? eng_embed_tokens(e, (const int32_t *const *)in->toks, in->n_tok,
                                                in->n, *out, *n_tokens, NULL, err)
                             : eng_embed(e, in->texts, in->lens, in->n, *out, *n_tokens, NULL,
                                         err);
    if (st != ENG_OK) {
        free(*out), free(*n_tokens);
        *out = NULL, *n_tokens = NULL;
    }
    return st;
}

static json_t *float_array(const float *v, int32_t d)
{
    json_t *a = json_array();
    for (int32_t i = 0; a && i < d; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

/* Standard base64 of n bytes (what OpenAI's encoding_format "base64" carries: the
 * little-endian float32 bytes). malloc'd, NUL-terminated. */
static char *base64(const unsigned char *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * ((n + 2) / 3) + 1), *q = o;
    if (!o)
        return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *q++ = tab[v >> 18], *q++ = tab[(v >> 12) & 63], *q++ = tab[(v >> 6) & 63];
        *q++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *q++ = tab[v >> 18], *q++ = tab[(v >> 12) & 63];
        *q++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *q++ = '=';
    }
    *q = 0;
    return o;
}

static enum MHD_Result no_embedder(http_req *r, bool openai)
{
    (void)openai;
    return http_reply_error(r, 501, "not_implemented",
                            "embeddings are not available: this server runs without an "
                            "embedding model (start it with --embedding-model PATH)");
}

enum MHD_Result http_route_openai_embeddings(http_req *r, json_t *req)
{
    eng_embedder *e = r->s->cfg.embedder;
    if (!e)
        return no_embedder(r, true);
    json_t *fmt = json_object_get(req, "encoding_format");
    bool b64 = false;
    if (fmt && !json_is_null(fmt)) {
        const char *f = json_is_string(fmt) ? json_string_value(fmt) : "";
        if (strcmp(f, "base64") == 0)
            b64 = true;
        else if (strcmp(f, "float") != 0)
            return http_reply_invalid(r, true, "encoding_format",
                                      "encoding_format must be \"float\" or \"base64\"");
    }
    json_t *dims = json_object_get(req, "dimensions");
    if (dims && !json_is_null(dims) &&
        (!json_is_integer(dims) || json_integer_value(dims) != eng_embedder_dim(e)))
        return http_reply_invalid(r, true, "dimensions",
                                  "dimensions: %s gives %d-dimensional vectors only",
                                  eng_embedder_model_name(e), eng_embedder_dim(e));
    json_t *model = json_object_get(req, "model");
    if (model && !json_is_null(model) && !json_is_string(model))
        return http_reply_invalid(r, true, "model", "model must be a string");
    char msg[256];
    embed_inputs in;
    if (!parse_inputs(json_object_get(req, "input"), true, &in, msg, sizeof msg, "input"))
        return http_reply_invalid(r, true, "input", "%s", msg);
    float *out;
    int32_t *ntok;
    eng_err err = {{0}};
    eng_status st = run_inputs(e, &in, &out, &ntok, &err);
    int32_t n = in.n;
    inputs_free(&in);
    if (st == ENG_ERR_INVALID)
        return http_reply_invalid(r, true, "input", "%s", err.msg);
    if (st != ENG_OK)
        return http_reply_eng_error(r, st, err.msg);
    const int32_t d = eng_embedder_dim(e);
    json_t *data = json_array();
    long long total = 0;
    for (int32_t i = 0; i < n; i++) {
        json_t *emb;
        if (b64) {
            char *s = base64((const unsigned char *)(out + (size_t)i * (size_t)d),
                             sizeof(float) * (size_t)d);
            emb = s ? json_string(s) : NULL;
            free(s);
        } else {
            emb = float_array(out + (size_t)i * (size_t)d, d);
        }
        json_array_append_new(data, json_pack("{s:s,s:i,s:o*}", "object", "embedding", "index",
                                              i, "embedding", emb));
        total += ntok[i];
    }
    free(out), free(ntok);
    return http_reply_json(r, 200, json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list",
                                             "data", data, "model", eng_embedder_model_name(e),
                                             "usage", "prompt_tokens", total, "total_tokens",
                                             total));
}

enum MHD_Result http_route_llama_embeddings(http_req *r, json_t *req)
{
    eng_embedder *e = r->s->cfg.embedder;
    if (!e)
        return no_embedder(r, false);
    json_t *v = json_object_get(req, "content");
    const char *param = "content";
    if (!v) {
        v = json_object_get(req, "input");
        param = "input";
    }
    char msg[256];
    embed_inputs in;
    if (!parse_inputs(v, false, &in, msg, sizeof msg, param))
        return http_reply_error(r, 422, "invalid_request_error", "%s", msg);
    float *out;
    int32_t *ntok;
    eng_err err = {{0}};
    eng_status st = run_inputs(e, &in, &out, &ntok, &err);
    int32_t n = in.n;
    inputs_free(&in);
    if (st != ENG_OK)
        return http_reply_eng_error(r, st, err.msg);
    const int32_t d = eng_embedder_dim(e);
    json_t *arr = json_array();
    for (int32_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:i,s:[o]}", "index", i, "embedding",
                                             float_array(out + (size_t)i * (size_t)d, d)));
    free(out), free(ntok);
    return http_reply_json(r, 200, arr);
}

/* llama.cpp before b4356 (Tabby's `before_b4356` llama.cpp/embedding): one text in, one
 * object {"embedding": [...]} out. */
enum MHD_Result http_route_llama_embedding_legacy(http_req *r, json_t *req)
{
    eng_embedder *e = r->s->cfg.embedder;
    if (!e)
        return no_embedder(r, false);
    json_t *v = json_object_get(req, "content");
    if (!json_is_string(v))
        return http_reply_error(r, 422, "invalid_request_error",
                                "content must be a string (one text per request here; "
                                "POST /embeddings takes several)");
    const char *text = json_string_value(v);
    size_t len = json_string_length(v);
    const int32_t d = eng_embedder_dim(e);
    float *out = malloc(sizeof(float) * (size_t)d);
    if (!out)
        return http_reply_error(r, 500, "server_error", "out of memory");
    eng_err err = {{0}};
    eng_status st = eng_embed(e, &text, &len, 1, out, NULL, NULL, &err);
    if (st != ENG_OK) {
        free(out);
        return http_reply_eng_error(r, st, err.msg);
    }
    json_t *body = json_pack("{s:o}", "embedding", float_array(out, d));
    free(out);
    return http_reply_json(r, 200, body);
}
