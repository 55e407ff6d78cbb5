/* prompt_out.c — writing a prompt_result: special tokens, tokenized user text and the same
 * prompt as text side by side, stop strings, and freeing the result. */
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"

static bool text_reserve(prompt_out *p, size_t more)
{
    prompt_result *r = p->r;
    if (r->text_len + more + 1 <= p->text_cap)
        return true;
    size_t cap = p->text_cap ? p->text_cap : 256;
    while (cap < r->text_len + more + 1)
        cap *= 2;
    char *t = realloc(r->text, cap);
    if (!t)
        return !(p->oom = true);
    r->text = t;
    p->text_cap = cap;
    return true;
}

bool prompt_out_reserve_tokens(prompt_out *p, size_t more)
{
    prompt_result *r = p->r;
    if (r->n_tokens + more <= p->tok_cap)
        return true;
    size_t cap = p->tok_cap ? p->tok_cap : 256;
    while (cap < r->n_tokens + more)
        cap *= 2;
    int32_t *t = realloc(r->tokens, cap * sizeof *t);
    if (!t)
        return !(p->oom = true);
    r->tokens = t;
    p->tok_cap = cap;
    return true;
}

void prompt_out_text(prompt_out *p, const char *s, size_t n)
{
    if (!text_reserve(p, n) || !n)
        return;
    memcpy(p->r->text + p->r->text_len, s, n);
    p->r->text_len += n;
    p->r->text[p->r->text_len] = 0;
}

void prompt_out_special_as(prompt_out *p, int32_t id, const char *text)
{
    if (!prompt_out_reserve_tokens(p, 1))
        return;
    p->r->tokens[p->r->n_tokens++] = id;
    prompt_out_text(p, text, strlen(text));
}

void prompt_out_special(prompt_out *p, int32_t id)
{
    size_t n;
    const char *s = tok_piece(p->v, id, &n);
    if (!prompt_out_reserve_tokens(p, 1))
        return;
    p->r->tokens[p->r->n_tokens++] = id;
    prompt_out_text(p, s ? s : "", s ? n : 0);
}

static eng_status encode(const tok_vocab *v, const char *s, size_t n, bool continued,
                         int32_t **ids, size_t *n_ids, eng_err *err)
{
    size_t cap = tok_encode_bound(v, n) + 1;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids)
        return eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
    eng_status st = continued ? tok_encode_continued(v, s, n, false, *ids, cap, n_ids)
                              : tok_encode(v, s, n, false, *ids, cap, n_ids);
    if (st != ENG_OK) {
        free(*ids);
        *ids = NULL;
        return eng_fail(err, st, "prompt: cannot tokenize %zu bytes", n);
    }
    return ENG_OK;
}

eng_status prompt_encode(const tok_vocab *v, const char *s, size_t n, int32_t **ids,
                         size_t *n_ids, eng_err *err)
{
    return encode(v, s, n, false, ids, n_ids, err);
}

static eng_status out_plain(prompt_out *p, const char *s, size_t n, bool continued, eng_err *err)
{
    if (!n)
        return ENG_OK;
    int32_t *ids;
    size_t k;
    eng_status st = encode(p->v, s, n, continued, &ids, &k, err);
    if (st != ENG_OK)
        return st;
    if (prompt_out_reserve_tokens(p, k)) {
        memcpy(p->r->tokens + p->r->n_tokens, ids, k * sizeof *ids);
        p->r->n_tokens += k;
    }
    free(ids);
    prompt_out_text(p, s, n);
    return ENG_OK;
}

eng_status prompt_out_plain(prompt_out *p, const char *s, size_t n, eng_err *err)
{
    return out_plain(p, s, n, false, err);
}

void prompt_stop_add(prompt_result *r, const char *a, const char *b, bool *oom)
{
    if (r->n_stops >= PROMPT_MAX_STOPS)
        return;
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *s = malloc(la + lb + 1);
    if (!s) {
        *oom = true;
        return;
    }
    memcpy(s, a, la);
    memcpy(s + la, b ? b : "", lb);
    s[la + lb] = 0;
    r->stops[r->n_stops++] = s;
}

void prompt_result_clear(prompt_result *r)
{
    if (!r)
        return;
    free(r->tokens);
    free(r->text);
    for (size_t i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->stops);
    memset(r, 0, sizeof *r);
}

void prompt_out_bos(prompt_out *p)
{
    int32_t bos = tok_prompt_bos(p->v);
    if (bos >= 0)
        prompt_out_special(p, bos);
}

static eng_status out_str(prompt_out *p, prompt_str *t, bool continued, eng_err *err)
{
    eng_status st = t->oom ? eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory")
                           : out_plain(p, t->buf, t->len, continued, err);
    free(t->buf);
    *t = (prompt_str){0};
    return st;
}

eng_status prompt_out_str(prompt_out *p, prompt_str *t, eng_err *err)
{
    return out_str(p, t, false, err);
}

eng_status prompt_out_str_continued(prompt_out *p, prompt_str *t, eng_err *err)
{
    return out_str(p, t, true, err);
}
