/* tokenizer_encode.c — tok_encode: special-token splitting as llama.cpp's
 * tokenizer_st_partition, then per raw fragment either SentencePiece (tokenizer_spm.c) or, per
 * word of the pre-tokenizer's split, byte-level BPE merging by rank (a heap of candidate pairs
 * per word, as llm_tokenizer_bpe_session). */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"

typedef struct sym {
    int32_t id; /* token of the bytes [start, start + n), or -1 */
    uint32_t start, n;
    int32_t prev, next;
} sym;

typedef struct bigram {
    int32_t rank, left, right, merged;
    uint32_t size; /* bytes the pair covered when queued: stale once either side grew */
} bigram;

/* Per-call scratch (nothing here is shared between calls). */
typedef struct enc_state {
    const tok_vocab *v;
    tok_out out;
    tok_split_buf split;
    tok_spm_buf spm;
    uint32_t *word_len;
    sym *syms;
    bigram *heap;
    size_t heap_n;
    char *mapped; /* a word in mapped form (ignore_merges lookups) */
    size_t word_cap;
} enc_state;

static void emit(enc_state *e, int32_t id) { tok_out_push(&e->out, id); }

static bool bigram_less(const bigram *a, const bigram *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(enc_state *e, bigram g)
{
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_less(&g, &e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = g;
}

static bigram heap_pop(enc_state *e)
{
    bigram top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && bigram_less(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!bigram_less(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

static void try_bigram(enc_state *e, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    const sym *l = &e->syms[left], *r = &e->syms[right];
    if (l->id < 0 || r->id < 0)
        return; /* every merge joins two tokens */
    const merge_slot *m = tok_merge_find(e->v, l->id, r->id);
    if (!m)
        return;
    bigram g = {m->rank, left, right, m->merged, l->n + r->n};
    heap_push(e, g);
}

/* A symbol that is not a token: llama.cpp looks each byte of its mapped text up on its own
 * and drops the ones that are not tokens either. */
static void emit_fallback(enc_state *e, const uint8_t *w, const sym *s)
{
    const tok_vocab *v = e->v;
    for (uint32_t i = s->start; i < s->start + s->n; i++)
        for (uint8_t k = 0; k < v->byte_map_len[w[i]]; k++) {
            int32_t id = v->single_id[(uint8_t)v->byte_map[w[i]][k]];
            if (id >= 0)
                emit(e, id);
        }
}

/* BPE over one pre-tokenized word: merge the best-ranked adjacent pair (leftmost on ties)
 * until none is left, as llm_tokenizer_bpe_session does. */
static void bpe_word(enc_state *e, const uint8_t *w, uint32_t n)
{
    const tok_vocab *v = e->v;
    if (v->pre.ignore_merges) {
        size_t m = 0;
        for (uint32_t i = 0; i < n; i++) {
            memcpy(e->mapped + m, v->byte_map[w[i]], v->byte_map_len[w[i]]);
            m += v->byte_map_len[w[i]];
        }
        int32_t id = tok_vocab_lookup(v, e->mapped, m);
        if (id >= 0) {
            emit(e, id);
            return;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        e->syms[i] = (sym){v->byte_id[w[i]], i, 1, (int32_t)i - 1,
                           i + 1 < n ? (int32_t)i + 1 : -1};
    }
    e->heap_n = 0;
    for (uint32_t i = 1; i < n; i++)
        try_bigram(e, (int32_t)i - 1, (int32_t)i);
    while (e->heap_n > 0) {
        bigram g = heap_pop(e);
        sym *l = &e->syms[g.left], *r = &e->syms[g.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != g.size)
            continue;
        l->n += r->n;
        l->id = g.merged;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            e->syms[r->next].prev = g.left;
        try_bigram(e, l->prev, g.left);
        try_bigram(e, g.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = e->syms[i].next) {
        const sym *s = &e->syms[i];
        if (s->id >= 0)
            emit(e, s->id);
        else
            emit_fallback(e, w, s);
    }
}

static eng_status encode_text(enc_state *e, const uint8_t *t, size_t len)
{
    if (len == 0)
        return ENG_OK;
    size_t n_words = tok_pre_split(e->v->pre.kind, t, len, &e->split, e->word_len);
    uint32_t longest = 0;
    for (size_t i = 0; i < n_words; i++)
        longest = e->word_len[i] > longest ? e->word_len[i] : longest;
    if (longest > e->word_cap) {
        size_t cap = longest;
        sym *s = realloc(e->syms, cap * sizeof *s);
        if (s)
            e->syms = s;
        bigram *h = realloc(e->heap, 3 * cap * sizeof *h);
        if (h)
            e->heap = h;
        char *m = realloc(e->mapped, 2 * cap);
        if (m)
            e->mapped = m;
        if (!s || !h || !m)
            return ENG_ERR_NOMEM;
        e->word_cap = cap;
    }
    size_t o = 0;
    for (size_t i = 0; i < n_words; i++) {
        bpe_word(e, t + o, e->word_len[i]);
        o += e->word_len[i];
    }
    return ENG_OK;
}

/* A piece of the input: raw text [off, off + len), or a special token when id >= 0. */
typedef struct frag {
    size_t off, len;
    int32_t id;
} frag;

typedef struct frag_list {
    frag *f;
    size_t n, cap;
} frag_list;

static bool frag_push(frag_list *l, size_t off, size_t len, int32_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        frag *g = realloc(l->f, cap * sizeof *g);
        if (!g)
            return false;
        l->f = g;
        l->cap = cap;
    }
    l->f[l->n++] = (frag){off, len, id};
    return true;
}

/* llama.cpp's tokenizer_st_partition: for each special token, longest first, every occurrence
 * in every remaining raw fragment becomes that token. User-defined tokens are split out even
 * without parse_special; control and unknown ones only with it. */
static eng_status split_specials(const tok_vocab *v, const char *text, size_t len,
                                 bool parse_special, frag_list *cur, frag_list *next)
{
    cur->n = 0;
    if (len > 0 && !frag_push(cur, 0, len, -1))
        return ENG_ERR_NOMEM;
    for (int32_t k = 0; k < v->n_specials; k++) {
        const int32_t id = v->specials[k];
        if (!parse_special && (v->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)))
            continue;
        size_t tl;
        const char *tt = tok_vocab_str(v, id, &tl);
        bool any = false;
        for (size_t i = 0; i < cur->n && !any; i++)
            any = cur->f[i].id < 0 && memmem(text + cur->f[i].off, cur->f[i].len, tt, tl);
        if (!any)
            continue;
        next->n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            frag fr = cur->f[i];
            if (fr.id >= 0) {
                if (!frag_push(next, fr.off, fr.len, fr.id))
                    return ENG_ERR_NOMEM;
                continue;
            }
            size_t off = fr.off, end = fr.off + fr.len;
            const char *hit;
            while (off < end && (hit = memmem(text + off, end - off, tt, tl)) != NULL) {
                size_t at = (size_t)(hit - text);
                if ((at > off && !frag_push(next, off, at - off, -1)) ||
                    !frag_push(next, at, tl, id))
                    return ENG_ERR_NOMEM;
                off = at + tl;
            }
            if (off < end && !frag_push(next, off, end - off, -1))
                return ENG_ERR_NOMEM;
        }
        frag_list t = *cur;
        *cur = *next;
        *next = t;
    }
    return ENG_OK;
}

size_t tok_encode_bound(const tok_vocab *v, size_t len)
{
    if (v->type == TOK_TYPE_BPE)
        return len;
    /* A raw fragment of m bytes escapes to at most 3m + 3 (spaces and the prefix), each escaped
     * byte at most one token; a special fragment is one token for at least one byte; raw
     * fragments are at most one more than special ones. So at most 4 * len + 3. */
    return len > (SIZE_MAX - 3) / 4 ? SIZE_MAX : 4 * len + 3;
}

/* tok_encode; `at_start`: the text starts a sequence (SentencePiece's leading space). */
static eng_status encode(const tok_vocab *v, const char *text, size_t len, bool parse_special,
                         bool at_start, int32_t *ids, size_t cap, size_t *n_out)
{
    if (!v || !n_out || (!text && len > 0) || (!ids && cap > 0))
        return ENG_ERR_INVALID;
    *n_out = 0;
    if (len >= UINT32_MAX / 4)
        return ENG_ERR_TOO_LONG;
    enc_state e = {.v = v, .out = {ids, cap, 0}};
    frag_list cur = {0}, next = {0};
    eng_status st = ENG_ERR_NOMEM;
    if (v->type == TOK_TYPE_BPE) {
        const size_t m = len + 1;
        e.split.unit_off = malloc(m * sizeof(uint32_t));
        e.split.unit_cpt = malloc(m * sizeof(uint32_t));
        e.split.unit_cls = malloc(m);
        e.split.seg_a = malloc(m * sizeof(uint32_t));
        e.split.seg_b = malloc(m * sizeof(uint32_t));
        e.word_len = malloc(m * sizeof(uint32_t));
        if (!e.split.unit_off || !e.split.unit_cpt || !e.split.unit_cls || !e.split.seg_a ||
            !e.split.seg_b || !e.word_len)
            goto done;
    }
    if ((st = split_specials(v, text, len, parse_special, &cur, &next)) != ENG_OK)
        goto done;
    /* SentencePiece puts a space before the text at the start and after every special token
     * (llama.cpp's is_prev_special, true before the first fragment). */
    bool prev_special = at_start;
    for (size_t i = 0; i < cur.n; i++) {
        const frag *f = &cur.f[i];
        if (f->id >= 0) {
            emit(&e, f->id);
            prev_special = true;
            continue;
        }
        if (v->type == TOK_TYPE_SPM)
            st = tok_spm_encode(v, text + f->off, f->len, v->add_space_prefix && prev_special,
                                &e.spm, &e.out);
        else
            st = encode_text(&e, (const uint8_t *)text + f->off, f->len);
        if (st != ENG_OK)
            goto done;
        prev_special = false;
    }
    st = ENG_OK;
    *n_out = e.out.n;
    if (e.out.n > cap)
        st = ENG_ERR_INVALID;
done:
    free(e.split.unit_off);
    free(e.split.unit_cpt);
    free(e.split.unit_cls);
    free(e.split.seg_a);
    free(e.split.seg_b);
    free(e.word_len);
    free(e.syms);
    free(e.heap);
    free(e.mapped);
    tok_spm_buf_free(&e.spm);
    free(cur.f);
    free(next.f);
    return st;
}

eng_status tok_encode(const tok_vocab *v, const char *text, size_t len, bool parse_special,
                      int32_t *ids, size_t cap, size_t *n_out)
{
    return encode(v, text, len, parse_special, true, ids, cap, n_out);
}

eng_status tok_encode_continued(const tok_vocab *v, const char *text, size_t len,
                                bool parse_special, int32_t *ids, size_t cap, size_t *n_out)
{
    return encode(v, text, len, parse_special, false, ids, cap, n_out);
}
