/* prompt.c — the prompt builder: detects a model's fill-in-the-middle template and the
 * special tokens that end any completion, and names FIM and chat kinds. Completion prompts are
 * built in prompt_completion.c, chat prompts in prompt_chat.c. */
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"

/* ---- detection -------------------------------------------------------------------------- */

/* Whether token id's vocabulary text is a or b (b may be NULL). */
static bool text_is(const tok_vocab *v, int32_t id, const char *a, const char *b)
{
    size_t n;
    const char *p = tok_text(v, id, &n);
    return p && ((n == strlen(a) && !memcmp(p, a, n)) || (b && n == strlen(b) && !memcmp(p, b, n)));
}

/* The FIM tokens are the tokenizer's (tokenizer.ggml.fim_*_token_id or the older
 * prefix/suffix/middle keys when present, else the texts llama.cpp recognises); the family,
 * and so the template around them, is read off the prefix token's text. */
static void detect_fim(prompt_builder *b)
{
    static const struct {
        prompt_fim_kind kind;
        const char *pre, *spaced_pre;
    } fams[] = {
        {PROMPT_FIM_STARCODER, "<fim_prefix>", NULL},
        {PROMPT_FIM_QWEN, "<|fim_prefix|>", NULL},
        {PROMPT_FIM_DEEPSEEK, "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", NULL},
        {PROMPT_FIM_CODELLAMA, "<PRE>", "\xE2\x96\x81<PRE>"},
    };
    const tok_vocab *v = b->vocab;
    int32_t p = tok_fim_pre(v), s = tok_fim_suf(v), m = tok_fim_mid(v);
    b->fim = PROMPT_FIM_NONE;
    b->fim_pre = b->fim_suf = b->fim_mid = -1;
    if (p < 0 || s < 0 || m < 0)
        return;
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        if (!text_is(v, p, fams[i].pre, fams[i].spaced_pre))
            continue;
        b->fim = fams[i].kind;
        b->fim_pre = p, b->fim_suf = s, b->fim_mid = m;
        b->fim_spaced = fams[i].spaced_pre && text_is(v, p, fams[i].spaced_pre, NULL);
        return;
    }
}

/* A stop string for token id: what the engine sees when the model emits it (its piece), once.
 * Short lower-case tags ("</s>", "<s>", "<eos>") are left to the engine's end-of-generation
 * check by id: as text they occur in ordinary code (HTML). */
static void add_stop_id(prompt_builder *b, int32_t id)
{
    size_t n;
    const char *piece = id >= 0 ? tok_piece(b->vocab, id, &n) : NULL;
    if (!piece || n == 0 || n > 64 || !tok_is_special(b->vocab, id) ||
        b->n_stops == sizeof b->stops / sizeof b->stops[0])
        return;
    bool tag = n <= 5 && piece[0] == '<' && piece[n - 1] == '>';
    for (size_t i = 1; tag && i + 1 < n; i++)
        tag = (piece[i] >= 'a' && piece[i] <= 'z') || piece[i] == '/';
    if (tag)
        return;
    for (size_t i = 0; i < b->n_stops; i++)
        if (strlen(b->stops[i]) == n && !memcmp(b->stops[i], piece, n))
            return;
    char *s = strndup(piece, n);
    if (s)
        b->stops[b->n_stops++] = s;
}

/* The special tokens that end any completion or answer: every family's end-of-text,
 * end-of-turn and FIM/repository markers that the vocabulary has (by text, as llama.cpp's
 * vocabulary loader finds them), then the tokenizer's EOS, EOT and FIM pad / repo / file
 * separator ids. The engine also stops on end-of-generation ids (tok_is_eog); these make the
 * same tokens stop strings for the output text. */
static void detect_stops(prompt_builder *b)
{
    static const char *const texts[] = {
        /* StarCoder, StarCoder2, SmolLM */
        "<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>",
        "<file_sep>", "<reponame>",
        /* Qwen2.5-Coder */
        "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|file_sep|>",
        "<|repo_name|>", "<|im_end|>", "<|im_start|>",
        /* Llama-3 */
        "<|eot_id|>",
        /* DeepSeek-Coder */
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<|EOT|>",
        "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",
        /* CodeLlama */
        "\xE2\x96\x81<EOT>", "<EOT>", NULL};
    for (size_t i = 0; texts[i]; i++)
        add_stop_id(b, tok_find(b->vocab, texts[i]));
    add_stop_id(b, tok_eos(b->vocab));
    add_stop_id(b, tok_eot(b->vocab));
    add_stop_id(b, tok_fim_pad(b->vocab));
    add_stop_id(b, tok_fim_rep(b->vocab));
    add_stop_id(b, tok_fim_sep(b->vocab));
}

eng_status prompt_builder_create(const eng_model *m, prompt_builder **out, eng_err *err)
{
    *out = NULL;
    if (!m || !m->vocab || !m->gguf)
        return eng_fail(err, ENG_ERR_INVALID, "prompt builder: no model");
    prompt_builder *b = calloc(1, sizeof *b);
    if (!b)
        return eng_fail(err, ENG_ERR_NOMEM, "prompt builder: out of memory");
    b->model = m;
    b->vocab = m->vocab;
    detect_fim(b);
    prompt_chat_detect(b);
    detect_stops(b);
    *out = b;
    return ENG_OK;
}

void prompt_builder_free(prompt_builder *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_stops; i++)
        free(b->stops[i]);
    free(b->default_system);
    free(b);
}

prompt_fim_kind prompt_builder_fim(const prompt_builder *b) { return b->fim; }
prompt_chat_kind prompt_builder_chat(const prompt_builder *b) { return b->chat; }

const char *prompt_fim_name(prompt_fim_kind k)
{
    switch (k) {
    case PROMPT_FIM_STARCODER: return "starcoder";
    case PROMPT_FIM_QWEN: return "qwen";
    case PROMPT_FIM_CODELLAMA: return "codellama";
    case PROMPT_FIM_DEEPSEEK: return "deepseek";
    default: return "none";
    }
}

const char *prompt_chat_name(prompt_chat_kind k)
{
    switch (k) {
    case PROMPT_CHAT_CHATML: return "chatml";
    case PROMPT_CHAT_LLAMA3: return "llama3";
    case PROMPT_CHAT_LLAMA2: return "llama2";
    case PROMPT_CHAT_DEEPSEEK: return "deepseek";
    default: return "none";
    }
}
