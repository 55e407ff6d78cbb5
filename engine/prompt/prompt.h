/* prompt.h — the prompt builder: code-completion prompts (the model's fill-in-the-middle
 * template, snippets as comments, token budgets, per-language stop words, CRLF) and chat
 * prompts rendered from the model's chat template. No JSON here: front ends fill the structs. */
#ifndef SERVAL_PROMPT_H
#define SERVAL_PROMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serval_engine.h" /* eng_model */
#include "status.h"

typedef enum prompt_fim_kind {
    PROMPT_FIM_NONE = 0,   /* no FIM tokens: the prefix alone */
    PROMPT_FIM_STARCODER,  /* <fim_prefix>P<fim_suffix>S<fim_middle> (StarCoder, SmolLM) */
    PROMPT_FIM_QWEN,       /* <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|> (Qwen2.5-Coder) */
    PROMPT_FIM_CODELLAMA,  /* <PRE> P <SUF>S <MID> */
    PROMPT_FIM_DEEPSEEK    /* <｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜> */
} prompt_fim_kind;

/* The chat formats Serval renders, each recognised in the GGUF's tokenizer.chat_template by
 * the markers of the real template and rendered as that template renders (Jinja with
 * Transformers' settings; tests/fixtures/chat/ holds the expected texts). */
typedef enum prompt_chat_kind {
    PROMPT_CHAT_NONE = 0,  /* no template, or one Serval cannot render */
    PROMPT_CHAT_CHATML,    /* <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen2.5-Coder) */
    PROMPT_CHAT_LLAMA3,    /* <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> */
    PROMPT_CHAT_LLAMA2,    /* <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST] answer </s>
                              (Llama-2-chat, CodeLlama-Instruct) */
    PROMPT_CHAT_DEEPSEEK   /* <bos>sys### Instruction:\nuser\n### Response:\nanswer\n<|EOT|>\n
                              (DeepSeek-Coder-Instruct) */
} prompt_chat_kind;

/* Per-model state: the FIM template and chat format detected from the vocabulary and
 * metadata. Immutable after creation, so one builder serves every thread. */
typedef struct prompt_builder prompt_builder;

/* Inspects `m` (borrowed: it must outlive the builder). Never fails on an unusual model: a
 * model without FIM tokens gets PROMPT_FIM_NONE, one without a renderable chat template
 * PROMPT_CHAT_NONE (prompt_build_chat then explains why). *out is owned by the caller. */
eng_status prompt_builder_create(const eng_model *m, prompt_builder **out, eng_err *err);
void prompt_builder_free(prompt_builder *b);

prompt_fim_kind prompt_builder_fim(const prompt_builder *b);
prompt_chat_kind prompt_builder_chat(const prompt_builder *b);
/* "starcoder", "qwen", "codellama", "deepseek", "none" / "chatml", "llama3", "llama2",
 * "deepseek", "none". */
const char *prompt_fim_name(prompt_fim_kind k);
const char *prompt_chat_name(prompt_chat_kind k);

/* ---- code completion -------------------------------------------------------------------- */

/* Snippet characters a completion prompt takes when the request does not say (Tabby's 768). */
#define PROMPT_DEFAULT_SNIPPET_BUDGET 768

typedef struct prompt_snippet {
    const char *filepath; /* may be NULL */
    const char *body;
} prompt_snippet;

typedef struct prompt_completion_input {
    const char *language;  /* editor language id ("python", "typescriptreact", ...); NULL: unknown */
    const char *prefix;    /* text before the cursor (required) */
    size_t prefix_len;
    const char *suffix;    /* text after the cursor; NULL or empty: "\n" */
    size_t suffix_len;
    /* Snippets in priority order; within a list, injection stops at the first that does not
     * fit the character budget. */
    const prompt_snippet *declarations;
    size_t n_declarations;
    const prompt_snippet *changed;   /* relevant_snippets_from_changed_files */
    size_t n_changed;
    const prompt_snippet *recent;    /* relevant_snippets_from_recently_opened_files */
    size_t n_recent;
    size_t snippet_budget;           /* characters (bytes) of snippet text; 0: 768 */
    int32_t max_prefix_tokens;       /* 0: 1024 */
    int32_t max_suffix_tokens;       /* 0: 512 */
} prompt_completion_input;

/* A built prompt. Every pointer is owned by the struct: free with prompt_result_clear. */
typedef struct prompt_result {
    int32_t *tokens;       /* the prompt as token ids (special tokens as their ids, user text
                              never parsed for special tokens), BOS first when the model adds it */
    size_t n_tokens;
    char *text;            /* the same prompt as text (for debug output), NUL-terminated */
    size_t text_len;
    char **stops;          /* stop strings for the engine */
    size_t n_stops;
    size_t n_snippets;     /* how many snippets were injected (first of declarations, changed,
                              recent, in that order) */
    bool crlf;             /* the input used CRLF: convert the output's "\n" back to "\r\n" */
    bool prefix_clipped;
    bool suffix_clipped;
} prompt_result;

void prompt_result_clear(prompt_result *r);

/* Builds a completion prompt. ENG_ERR_INVALID when the prefix is missing or not valid UTF-8
 * (a message says which). On failure *out is left cleared. */
eng_status prompt_build_completion(const prompt_builder *b, const prompt_completion_input *in,
                                   prompt_result *out, eng_err *err);

/* Builds a raw prompt (no template): the text tokenized without special tokens parsed when
 * parse_special is false. Stops: the language's completion stop words when `language` is
 * non-NULL, none otherwise. */
eng_status prompt_build_raw(const prompt_builder *b, const char *text, size_t len,
                            bool parse_special, const char *language, prompt_result *out,
                            eng_err *err);

/* Line comment of a language ("#", "//", "--", ...) or NULL when it has none or is unknown. */
const char *prompt_language_comment(const char *language);
/* Whether the languages table knows `language` (editor ids and common aliases). */
bool prompt_language_known(const char *language);
/* NULL-terminated words that begin a top-level item at column 0 (definitions, imports), or
 * NULL when the language is unknown (the indexer's chunker cuts before them). */
const char *const *prompt_language_keywords(const char *language);

/* Converts "\n" to "\r\n" in len bytes of text (a "\n" already preceded by "\r" is kept).
 * Returns a malloc'd NUL-terminated string (*out_len set), owned by the caller; NULL on OOM. */
char *prompt_lf_to_crlf(const char *text, size_t len, size_t *out_len);

/* ---- chat ------------------------------------------------------------------------------- */

typedef struct prompt_chat_message {
    const char *role;      /* "system", "user", "assistant" (others are passed through) */
    const char *content;
} prompt_chat_message;

/* Renders messages with the model's chat template plus the assistant generation prompt.
 * ENG_ERR_UNSUPPORTED when the model has no chat template or one Serval cannot render (the
 * message names the template's family markers it looked for); ENG_ERR_INVALID for no
 * messages, a missing role/content or invalid UTF-8. */
eng_status prompt_build_chat(const prompt_builder *b, const prompt_chat_message *msgs, size_t n,
                             prompt_result *out, eng_err *err);

#endif
