/* tokenizer_impl.h — private to the tokenizer: the pre-tokenizers (tokenizer_pre.c) that split
 * text into words before byte-level BPE, as llama.cpp's unicode_regex_split does. */
#ifndef SERVAL_TOKENIZER_IMPL_H
#define SERVAL_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The pre-tokenizer regex chains Serval implements (llama.cpp's LLAMA_VOCAB_PRE_TYPE_*). */
typedef enum tok_pre_kind {
    TOK_PRE_DEFAULT,   /* no/`default` pre: P-runs, GPT-2, \p{N}+, [0-9]{3} */
    TOK_PRE_GPT2,      /* the GPT-2 regex alone */
    TOK_PRE_STARCODER, /* \p{N} then GPT-2 (starcoder, smollm, refact, ...) */
    TOK_PRE_LLAMA3,    /* llama3 regex, digits in runs of up to 3 */
    TOK_PRE_QWEN2      /* llama3 regex with single digits (qwen2, stablelm2, ...) */
} tok_pre_kind;

typedef struct tok_pre_info {
    tok_pre_kind kind;
    bool ignore_merges; /* a word that is itself a token is emitted whole (llama3) */
    bool add_bos;       /* llama.cpp's default when tokenizer.ggml.add_bos_token is absent */
} tok_pre_info;

/* Looks up a tokenizer.ggml.pre value (len bytes, not NUL-terminated). false when unknown. */
bool tok_pre_lookup(const char *name, size_t len, tok_pre_info *out);

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
