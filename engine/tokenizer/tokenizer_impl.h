/* tokenizer_impl.h — private to the tokenizer: the vocabulary's layout (tokenizer.c builds it,
 * tokenizer_encode.c and tokenizer_spm.c read it) and the pre-tokenizers (tokenizer_pre.c) that
 * split text into words before byte-level BPE, as llama.cpp's unicode_regex_split does. */
#ifndef SERVAL_TOKENIZER_IMPL_H
#define SERVAL_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* The pre-tokenizer regex chains Serval implements (llama.cpp's LLAMA_VOCAB_PRE_TYPE_*). */
typedef enum tok_pre_kind {
    TOK_PRE_DEFAULT,   /* no/`default` pre: P-runs, GPT-2, \p{N}+, [0-9]{3} */
    TOK_PRE_GPT2,      /* the GPT-2 regex alone */
    TOK_PRE_STARCODER, /* \p{N} then GPT-2 (starcoder, smollm, refact, ...) */
    TOK_PRE_LLAMA3,    /* llama3 regex, digits in runs of up to 3 */
    TOK_PRE_QWEN2,     /* llama3 regex with single digits (qwen2, stablelm2, ...) */
    TOK_PRE_DEEPSEEK_CODER /* [\r\n], \s?\p{L}+, \s?\p{P}+, CJK ranges, \p{N} */
} tok_pre_kind;

/* The tokenizer.ggml.model values Serval implements (llama.cpp's LLAMA_VOCAB_TYPE_*). */
typedef enum tok_type {
    TOK_TYPE_BPE, /* "gpt2": byte-level BPE by merge rank behind a pre-tokenizer */
    TOK_TYPE_SPM  /* "llama": SentencePiece BPE by piece score, spaces as U+2581, byte fallback */
} tok_type;

typedef struct tok_pre_info {
    tok_pre_kind kind;
    bool ignore_merges; /* a word that is itself a token is emitted whole (llama3) */
    bool add_bos;       /* llama.cpp's default when tokenizer.ggml.add_bos_token is absent */
} tok_pre_info;

/* Looks up a tokenizer.ggml.pre value (len bytes, not NUL-terminated). false when unknown. */
bool tok_pre_lookup(const char *name, size_t len, tok_pre_info *out);

/* Token attributes, as llama.cpp's llama_token_attr (a bit set). */
typedef enum tok_attr {
    TOK_ATTR_UNDEFINED = 0,
    TOK_ATTR_UNKNOWN = 1 << 0,
    TOK_ATTR_UNUSED = 1 << 1,
    TOK_ATTR_NORMAL = 1 << 2,
    TOK_ATTR_CONTROL = 1 << 3,
    TOK_ATTR_USER_DEFINED = 1 << 4,
    TOK_ATTR_BYTE = 1 << 5,
    TOK_ATTR_EOG = 1 << 7 /* Serval's: end of generation */
} tok_attr;

/* A slot of the open-addressing merge table; rank is -1 in an empty slot. */
typedef struct merge_slot {
    uint64_t key; /* (left id << 32) | right id */
    int32_t rank;
    int32_t merged; /* id of the concatenation, or -1 when it is not a token */
} merge_slot;

struct tok_vocab {
    tok_type type;
    int32_t n_tokens;
    char *text;        /* all token strings back to back */
    size_t *text_off;  /* [n_tokens + 1] */
    char *piece;       /* decoded bytes of every token */
    size_t *piece_off; /* [n_tokens + 1] */
    uint8_t *attr;     /* [n_tokens] TOK_ATTR_* */
    float *score;      /* [n_tokens] SentencePiece piece scores (TOK_TYPE_SPM only, else NULL) */

    int32_t *tok_slots; /* token text -> id, open addressing; -1 is an empty slot */
    size_t tok_mask;
    merge_slot *merge_slots;
    size_t merge_mask;

    /* The token of each byte: BPE, its mapped character ("Ġ" for ' '), or -1; SentencePiece,
     * "<0xXX>" (else the one-byte text), never -1 (checked at load). */
    int32_t byte_id[256];
    int32_t single_id[256]; /* id of the 1-byte string, or -1 (llama.cpp's last resort) */
    char byte_map[256][2];  /* GPT-2 byte -> unicode mapping, UTF-8 encoded */
    uint8_t byte_map_len[256];
    int16_t unmap[0x144];   /* inverse: code point -> byte, or -1 */

    int32_t *specials; /* ids tried by the special-token split, longest text first */
    int32_t n_specials;

    tok_pre_info pre;
    bool add_bos;
    bool add_space_prefix; /* SentencePiece: a space before text at the start / after a special */
    int32_t bos, eos, eot, eom, unk, pad;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
};

/* Where encoding writes ids: up to cap of them, counting all in n (the room a retry needs). */
typedef struct tok_out {
    int32_t *ids;
    size_t cap, n;
} tok_out;

static inline void tok_out_push(tok_out *o, int32_t id)
{
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* SentencePiece scratch, grown by tok_spm_encode as fragments need; owned by one encode call. */
typedef struct tok_spm_buf {
    char *text; /* the escaped fragment */
    void *syms; /* symbols, one per UTF-8 character of text */
    void *heap; /* candidate pairs */
    size_t text_cap, sym_cap, heap_cap;
} tok_spm_buf;

/* Encodes one raw fragment with llm_tokenizer_spm's rules: a leading space when prefix_space,
 * spaces to U+2581, pairs merged highest score first (leftmost on ties), pieces that are not
 * tokens as their bytes' tokens. ENG_ERR_NOMEM when scratch cannot grow. */
eng_status tok_spm_encode(const tok_vocab *v, const char *text, size_t len, bool prefix_space,
                          tok_spm_buf *buf, tok_out *out);
void tok_spm_buf_free(tok_spm_buf *buf);

/* The token string of id (not NUL-terminated); id must be in range. Owned by v. */
const char *tok_vocab_str(const tok_vocab *v, int32_t id, size_t *len);
/* Id of the token whose text is s[0, n), or -1. */
int32_t tok_vocab_lookup(const tok_vocab *v, const char *s, size_t n);
/* The merge of (left, right), or NULL when the pair does not merge. */
const merge_slot *tok_merge_find(const tok_vocab *v, int32_t left, int32_t right);

/* Scratch for splitting one fragment of n bytes: every array holds n + 1 elements.
 * Owned by the caller of tok_pre_split; one per encode call, never shared. */
typedef struct tok_split_buf {
    uint32_t *unit_off; /* byte offset where each unit (code point or invalid byte) starts */
    uint32_t *unit_cpt; /* its code point; U+FFFD for a byte that is not valid UTF-8 */
    uint8_t *unit_cls;  /* its uni_class */
    uint32_t *seg_a;    /* word lengths in units, ping-ponged between the regex passes */
    uint32_t *seg_b;
} tok_split_buf;

/* Splits text[0, len) into words. Writes each word's length in bytes to word_len (room for len
 * entries; the words are contiguous and cover the text) and returns how many there are.
 * Invalid UTF-8 bytes are units of their own, classed as U+FFFD would be, so any bytes split
 * the way llama.cpp splits the text it turns them into, and every byte stays in its word. */
size_t tok_pre_split(tok_pre_kind kind, const uint8_t *text, size_t len, tok_split_buf *buf,
                     uint32_t *word_len);

#endif
