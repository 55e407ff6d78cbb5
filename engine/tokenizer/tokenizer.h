/* tokenizer.h — tokenizers built from a GGUF's tokenizer.ggml.* metadata: byte-level BPE
 * ("gpt2") and SentencePiece BPE ("llama"). */
#ifndef SERVAL_TOKENIZER_H
#define SERVAL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef struct tok_vocab tok_vocab;

/* Builds the vocabulary, merges or scores, and special tokens from `f`'s metadata. Copies what
 * it needs: the result does not reference the gguf_file. Unsupported tokenizer.ggml.model or
 * .pre values return ENG_ERR_UNSUPPORTED with a message naming them; metadata that cannot be
 * right (a SentencePiece vocabulary without scores or without a token for some byte, a
 * count that does not match the tokens, an id out of range) ENG_ERR_FORMAT naming the key. */
eng_status tok_vocab_from_gguf(const gguf_file *f, tok_vocab **out, eng_err *err);
void tok_vocab_free(tok_vocab *v);

int32_t tok_n_vocab(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v);  /* -1 when the model has none */
int32_t tok_eos(const tok_vocab *v);
/* tokenizer.ggml.eot_token_id, else the lowest id among llama.cpp's end-of-turn texts
 * ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", ...); -1 when none. */
int32_t tok_eot(const tok_vocab *v);
int32_t tok_unk(const tok_vocab *v); /* tokenizer.ggml.unknown_token_id, or -1 */
int32_t tok_pad(const tok_vocab *v); /* tokenizer.ggml.padding_token_id, or -1 */
bool tok_add_bos(const tok_vocab *v); /* tokenizer.ggml.add_bos_token */
/* Whether encoding puts a space before the text at its start and after each special token
 * (SentencePiece's add_space_prefix, tokenizer.ggml.add_space_prefix, default true; never for
 * byte-level BPE). */
bool tok_add_space_prefix(const tok_vocab *v);
/* Infill tokens: tokenizer.ggml.fim_{pre,suf,mid,pad,rep,sep}_token_id (CodeLlama's
 * converter writes the older prefix/suffix/middle_token_id, read too), else the lowest id among
 * the texts llama.cpp recognises ("<|fim_prefix|>", "<fim_prefix>", "<｜fim▁begin｜>",
 * "▁<PRE>", ...); -1 when the vocabulary has none. */
int32_t tok_fim_pre(const tok_vocab *v);
int32_t tok_fim_suf(const tok_vocab *v);
int32_t tok_fim_mid(const tok_vocab *v);
int32_t tok_fim_pad(const tok_vocab *v);
int32_t tok_fim_rep(const tok_vocab *v);
int32_t tok_fim_sep(const tok_vocab *v);
/* The token every prompt starts with: BOS when the vocabulary asks for it (add_bos_token) and
 * has one, else -1. The one place that decides; eng_model_tokenize and the prompt builder
 * call it. */
int32_t tok_prompt_bos(const tok_vocab *v);
/* End-of-generation: EOS, EOT, <|im_end|>, <|endoftext|>, <file_sep> style tokens. */
bool tok_is_eog(const tok_vocab *v, int32_t id);
/* Control/special token (never produced by BPE of ordinary text). */
bool tok_is_special(const tok_vocab *v, int32_t id);
/* Id of a token whose text is exactly `text` (e.g. "<fim_prefix>"), or -1. */
int32_t tok_find(const tok_vocab *v, const char *text);

/* Encodes `len` bytes of `text` (any bytes). Byte-level BPE: invalid UTF-8 is kept byte-exact
 * (each byte that is not part of a valid sequence is its own unit, where llama.cpp would see
 * U+FFFD), and a byte the vocabulary has no token for is dropped, as llama.cpp drops it
 * (SmolLM2 has none for 21 bytes, 0xFF among them; see tok_byte_encodable). SentencePiece:
 * llama.cpp's rules exactly, on the bytes as they are (a space before the text at the start and
 * after each special token when tok_add_space_prefix, spaces as U+2581, characters no piece
 * covers as <0xXX> byte tokens). When `parse_special` is true, special tokens written
 * literally in the text ("<|im_start|>") are matched first and become their ids; otherwise
 * they are tokenized as plain text (user-defined tokens are matched either way, as in
 * llama.cpp). Does not add BOS. Writes up to `cap` ids to `ids` and sets *n_out to the number
 * the full encoding needs (never more than tok_encode_bound); returns ENG_ERR_INVALID if that
 * exceeds cap (call again with more room). Thread-safe: the vocab is read-only; scratch is
 * allocated per call. */
eng_status tok_encode(const tok_vocab *v, const char *text, size_t len, bool parse_special,
                      int32_t *ids, size_t cap, size_t *n_out);

/* tok_encode for text that continues what precedes it: no SentencePiece space before its
 * start (special tokens inside it still get theirs). CodeLlama's infill suffix is encoded so
 * (Meta's encode_infilling). Byte-level BPE: the same as tok_encode. */
eng_status tok_encode_continued(const tok_vocab *v, const char *text, size_t len,
                                bool parse_special, int32_t *ids, size_t cap, size_t *n_out);

/* The most ids tok_encode can give for len bytes: len for byte-level BPE, 4 * len + 3 for
 * SentencePiece (its space prefixes, and spaces that become three byte tokens where U+2581 is
 * swallowed by a broken UTF-8 sequence or is no piece). */
size_t tok_encode_bound(const tok_vocab *v, size_t len);

/* Whether byte b survives encoding: its byte-level token exists. decode(encode(x)) is x with
 * the bytes for which this is false removed (given that every merge yields a token, as in
 * real vocabularies). */
bool tok_byte_encodable(const tok_vocab *v, uint8_t b);

/* The bytes a token decodes to, llama.cpp's token_to_piece(special = true): control, unknown
 * and user-defined tokens give their text, byte tokens ("<0x0A>") their byte, normal tokens
 * their text unmapped (byte-level BPE) or with U+2581 as a space (SentencePiece), unused ones
 * nothing. The pointer is owned by the vocab. Returns NULL and *len=0 for an out-of-range id. */
const char *tok_piece(const tok_vocab *v, int32_t id, size_t *len);

/* Concatenates the pieces of n ids into buf (cap bytes) and sets *len to the bytes the whole
 * text needs. ENG_ERR_INVALID when an id is out of range or the text does not fit (then only
 * the part that fits is written). */
eng_status tok_decode(const tok_vocab *v, const int32_t *ids, size_t n, char *buf, size_t cap,
                      size_t *len);

/* tok_decode, less the one space the first piece starts with when tok_add_space_prefix (what
 * SentencePiece encoding put there): llama.cpp's llama_detokenize(remove_special = false,
 * unparse_special = true) without its clean_spaces pass. decode_text(encode(x)) is x for valid
 * UTF-8 without special tokens (SentencePiece turns a U+2581 in x into a space; byte-level BPE
 * also gives back invalid UTF-8 byte for byte, where the vocabulary has every byte). */
eng_status tok_decode_text(const tok_vocab *v, const int32_t *ids, size_t n, char *buf,
                           size_t cap, size_t *len);

/* The raw vocabulary string of a token as stored in the GGUF (e.g. "Ġthe"). */
const char *tok_text(const tok_vocab *v, int32_t id, size_t *len);

/* ---- WordPiece (BERT) -------------------------------------------------------------------- */

/* A WordPiece vocabulary (tokenizer.ggml.model "bert", tokenizer_wpm.c): llama.cpp's phantom-
 * space token texts, [CLS]/[SEP]/[UNK] from tokenizer.ggml.{cls,seperator,unknown}_token_id
 * (else the tokens with those texts), lowercasing from tokenizer.ggml.normalizer.lowercase
 * (default false) and accent stripping from .strip_accents (default: as lowercase). Separate
 * from tok_vocab: encoder models are loaded by engine/embed/, never by the decoder. Copies what
 * it needs from f. ENG_ERR_UNSUPPORTED for another tokenizer model, ENG_ERR_FORMAT naming the
 * key for a malformed one. Free with tok_wpm_free (NULL does nothing). */
typedef struct tok_wpm tok_wpm;
eng_status tok_wpm_from_gguf(const gguf_file *f, tok_wpm **out, eng_err *err);
void tok_wpm_free(tok_wpm *w);
int32_t tok_wpm_n_vocab(const tok_wpm *w);
int32_t tok_wpm_cls(const tok_wpm *w);
int32_t tok_wpm_sep(const tok_wpm *w);
int32_t tok_wpm_pad(const tok_wpm *w);
int32_t tok_wpm_unk(const tok_wpm *w);
bool tok_wpm_lowercase(const tok_wpm *w);
/* Id of the token whose stored text is exactly `text`, or -1. */
int32_t tok_wpm_find(const tok_wpm *w, const char *text);
/* The stored text of a token (owned by w), NULL and *len 0 when out of range. */
const char *tok_wpm_text(const tok_wpm *w, int32_t id, size_t *len);
/* Encodes text (any bytes; invalid UTF-8 is dropped as U+FFFD is) the way HF tokenizers'
 * BertNormalizer + BertPreTokenizer + WordPiece do, without [CLS]/[SEP] around it (control
 * tokens written literally, "[SEP]", become their ids first, as HF's special added tokens
 * do; tokenizer.ggml.token_type 3 says which are control tokens): writes at most cap
 * ids (the first ones, cut inside a word if need be, as HF truncation cuts), *n_out how many
 * were written, *more (may be NULL) whether more would have followed. Stops reading the text
 * once cap is reached, so a huge text costs only what is kept. Thread-safe (read-only vocab).
 * ENG_ERR_NOMEM only. */
eng_status tok_wpm_encode(const tok_wpm *w, const char *text, size_t len, int32_t *ids,
                          size_t cap, size_t *n_out, bool *more, eng_err *err);

#endif
