/* prompt_impl.h — private pieces shared by the prompt builder's files: the builder's body, the
 * writer that fills a prompt_result, text helpers, the languages table and chat detection. */
#ifndef SERVAL_PROMPT_IMPL_H
#define SERVAL_PROMPT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "prompt.h"
#include "status.h"

#define PROMPT_MAX_STOPS 64 /* stop strings in one prompt_result */

struct prompt_builder {
    const eng_model *model;
    const tok_vocab *vocab;
    prompt_fim_kind fim;
    int32_t fim_pre, fim_suf, fim_mid;
    bool fim_spaced;            /* CodeLlama's infill tokens carry the template's spaces
                                   ("▁<PRE>", "▁<SUF>", "▁<MID>") */
    prompt_chat_kind chat;
    char chat_error[512];       /* why chat is PROMPT_CHAT_NONE */
    char *default_system;       /* the template's default system prompt (ChatML, DeepSeek), used
                                   when the conversation has no system message; or NULL */
    char *stops[32];            /* pieces of the special tokens that end any completion */
    size_t n_stops;
};

/* ---- prompt_chat.c ---------------------------------------------------------------------- */

/* Sets b->chat (and b->default_system, or b->chat_error) from the model's chat template. */
void prompt_chat_detect(prompt_builder *b);

/* ---- prompt_lang.c ---------------------------------------------------------------------- */

/* NULL-terminated top-level keywords of a language, or NULL when it is unknown. */
const char *const *prompt_language_keywords(const char *language);

/* ---- prompt_text.c ---------------------------------------------------------------------- */

/* Copies s with every "\r\n" turned into "\n"; sets *had_crlf when there was one. Returns a
 * malloc'd NUL-terminated string (*out_len set), owned by the caller; NULL on OOM. */
char *prompt_crlf_to_lf(const char *s, size_t n, size_t *out_len, bool *had_crlf);

/* A growable NUL-terminated string. Start from {0}; after an allocation failure `oom` is set
 * and further appends do nothing. buf is owned by the struct's user (free it). */
typedef struct prompt_str {
    char *buf;
    size_t len, cap;
    bool oom;
} prompt_str;

void prompt_str_put(prompt_str *t, const char *s, size_t n);

/* ---- prompt_out.c ----------------------------------------------------------------------- */

/* Appends tokens and their text to r (borrowed). Allocation failures set `oom` and are
 * reported once the prompt is complete. */
typedef struct prompt_out {
    const tok_vocab *v;
    prompt_result *r;
    size_t tok_cap, text_cap;
    bool oom;
} prompt_out;

/* Makes room for `more` tokens in p->r->tokens; false (and p->oom) when out of memory. */
bool prompt_out_reserve_tokens(prompt_out *p, size_t more);
void prompt_out_text(prompt_out *p, const char *s, size_t n);
/* A special token: its id, and its piece as text. */
void prompt_out_special(prompt_out *p, int32_t id);
/* A special token shown as `text` (CodeLlama's ▁<SUF> is " <SUF>" in the template's text). */
void prompt_out_special_as(prompt_out *p, int32_t id, const char *text);
/* The BOS token when the model adds one. */
void prompt_out_bos(prompt_out *p);
/* User text: tokenized without parsing special tokens, and as text. */
eng_status prompt_out_plain(prompt_out *p, const char *s, size_t n, eng_err *err);
/* prompt_out_plain of t's text as one piece (BPE sees it joined), then frees and empties t;
 * ENG_ERR_NOMEM when t ran out of memory. */
eng_status prompt_out_str(prompt_out *p, prompt_str *t, eng_err *err);
/* prompt_out_str for text that continues the prompt: no SentencePiece space before it
 * (tok_encode_continued). */
eng_status prompt_out_str_continued(prompt_out *p, prompt_str *t, eng_err *err);

/* Encodes n bytes of user text (special tokens are never parsed) into a fresh array *ids
 * (malloc'd, owned by the caller), *n_ids set. */
eng_status prompt_encode(const tok_vocab *v, const char *s, size_t n, int32_t **ids,
                         size_t *n_ids, eng_err *err);

/* Appends the stop string a+b (b may be NULL) to r->stops, which has room for
 * PROMPT_MAX_STOPS; sets *oom when out of memory. Stops past the limit are dropped. */
void prompt_stop_add(prompt_result *r, const char *a, const char *b, bool *oom);

#endif
