/* tokenizer_spm.c — SentencePiece BPE (tokenizer.ggml.model "llama": Llama 2, CodeLlama) for one
 * raw fragment, as llama.cpp's llm_tokenizer_spm_session: symbols are UTF-8 characters, adjacent
 * pairs whose concatenation is a token merge highest score first, leftover symbols fall back to
 * byte tokens. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"

/* "▁" (U+2581), what SentencePiece writes for a space. */
#define SPM_SPACE "\xE2\x96\x81"

typedef struct spm_sym {
    uint32_t start, n; /* bytes of the escaped text; n == 0 once merged into its left neighbour */
    int32_t prev, next;
} spm_sym;

typedef struct spm_pair {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes the pair covered when queued: stale once either side grew */
} spm_pair;

typedef struct spm_state {
    const tok_vocab *v;
    const char *text;
    spm_sym *syms;
    tok_spm_buf *buf; /* owns the heap, which grows */
    size_t heap_n;
} spm_state;

/* Higher score first; on equal scores the leftmost pair (llm_bigram_spm's comparator). */
static bool pair_before(const spm_pair *a, const spm_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static bool heap_push(spm_state *s, spm_pair p)
{
    tok_spm_buf *b = s->buf;
    if (s->heap_n == b->heap_cap) {
        size_t cap = b->heap_cap ? 2 * b->heap_cap : 64;
        spm_pair *h = realloc(b->heap, cap * sizeof *h);
        if (!h)
            return false;
        b->heap = h;
        b->heap_cap = cap;
    }
    spm_pair *heap = b->heap;
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = p;
    return true;
}

static spm_pair heap_pop(spm_state *s)
{
    spm_pair *heap = s->buf->heap;
    spm_pair top = heap[0], last = heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_before(&heap[c + 1], &heap[c]))
            c++;
        if (!pair_before(&heap[c], &last))
            break;
        heap[i] = heap[c];
        i = c;
    }
    if (n > 0)
        heap[i] = last;
    return top;
}

/* Queues (left, right) when their concatenation is a token (of any type, as llama.cpp).
 * false when the queue cannot grow. */
static bool try_pair(spm_state *s, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return true;
    const spm_sym *l = &s->syms[left], *r = &s->syms[right];
    int32_t id = tok_vocab_lookup(s->v, s->text + l->start, l->n + r->n);
    if (id < 0)
        return true;
    return heap_push(s, (spm_pair){s->v->score[id], left, right, l->n + r->n});
}

/* The length llama.cpp's unicode_len_utf8 gives a character from its first byte alone: a
 * continuation byte is 1, 0xF8-0xFF are 4; the bytes that follow are not checked. */
static uint32_t utf8_len_from_lead(uint8_t b)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[b >> 4];
}

/* Grows *p (elem bytes each) to hold n; false when out of memory. */
static bool grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap)
        return true;
    size_t c = n < 64 ? 64 : n;
    void *q = realloc(*p, c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

void tok_spm_buf_free(tok_spm_buf *buf)
{
    free(buf->text);
    free(buf->syms);
    free(buf->heap);
    memset(buf, 0, sizeof *buf);
}

eng_status tok_spm_encode(const tok_vocab *v, const char *text, size_t len, bool prefix_space,
                          tok_spm_buf *buf, tok_out *out)
{
    size_t n = prefix_space ? 3 : 0;
    for (size_t i = 0; i < len; i++)
        n += text[i] == ' ' ? 3 : 1;
    if (n == 0)
        return ENG_OK;
    if (n > INT32_MAX)
        return ENG_ERR_TOO_LONG;
    if (!grow((void **)&buf->text, &buf->text_cap, n, 1))
        return ENG_ERR_NOMEM;
    /* Spaces become U+2581, after the prefix one. */
    size_t o = 0;
    if (prefix_space) {
        memcpy(buf->text, SPM_SPACE, 3);
        o = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf->text + o, SPM_SPACE, 3);
            o += 3;
        } else {
            buf->text[o++] = text[i];
        }
    }

    size_t n_chars = 0;
    for (size_t off = 0; off < n; n_chars++)
        off += utf8_len_from_lead((uint8_t)buf->text[off]);
    if (!grow(&buf->syms, &buf->sym_cap, n_chars, sizeof(spm_sym)))
        return ENG_ERR_NOMEM;
    spm_state s = {.v = v, .text = buf->text, .syms = buf->syms, .buf = buf};
    int32_t n_syms = 0;
    for (size_t off = 0; off < n; n_syms++) {
        uint32_t w = utf8_len_from_lead((uint8_t)buf->text[off]);
        if (w > n - off)
            w = (uint32_t)(n - off);
        s.syms[n_syms] = (spm_sym){(uint32_t)off, w, n_syms - 1, -1};
        if (n_syms > 0)
            s.syms[n_syms - 1].next = n_syms;
        off += w;
    }
    for (int32_t i = 1; i < n_syms; i++)
        if (!try_pair(&s, i - 1, i))
            return ENG_ERR_NOMEM;
    while (s.heap_n > 0) {
        spm_pair p = heap_pop(&s);
        spm_sym *l = &s.syms[p.left], *r = &s.syms[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s.syms[r->next].prev = p.left;
        if (!try_pair(&s, l->prev, p.left) || !try_pair(&s, p.left, l->next))
            return ENG_ERR_NOMEM;
    }

    /* A merged symbol is always a token (pairs are queued only then). A symbol that is not one
     * is a single character no piece covers, and llama.cpp's resegment cannot split it through
     * its merge map (whose keys are token texts), so it goes out byte by byte. */
    for (int32_t i = 0; i >= 0; i = s.syms[i].next) {
        const spm_sym *sym = &s.syms[i];
        int32_t id = tok_vocab_lookup(v, buf->text + sym->start, sym->n);
        if (id >= 0) {
            tok_out_push(out, id);
            continue;
        }
        for (uint32_t k = 0; k < sym->n; k++)
            tok_out_push(out, v->byte_id[(uint8_t)buf->text[sym->start + k]]);
    }
    return ENG_OK;
}
