/* prompt.c — the prompt builder: detects a model's fill-in-the-middle template and the
 * special tokens that end any completion, and names FIM and chat kinds. Completion prompts are
 * built in prompt_completion.c, chat prompts in prompt_chat.c. */
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"

/* ---- detection -------------------------------------------------------------------------- */

static int32_t meta_id(const eng_model *m, const char *key)
{
    uint32_t id;
    if (gguf_kv_find(m->gguf, key) < 0 || gguf_get_u32(m->gguf, key, &id, NULL) != ENG_OK ||
        id >= (uint32_t)tok_n_vocab(m->vocab))
        return -1;
    return (int32_t)id;
}

static bool piece_is(const tok_vocab *v, int32_t id, const char *a, const char *b)
{
    size_t n;
    const char *p = tok_piece(v, id, &n);
    return p && ((n == strlen(a) && !memcmp(p, a, n)) || (b && n == strlen(b) && !memcmp(p, b, n)));
}

static void detect_fim(prompt_builder *b)
{
    static const struct {
        prompt_fim_kind kind;
        const char *pre, *suf, *mid, *alt_pre, *alt_suf, *alt_mid;
    } fams[] = {
        {PROMPT_FIM_STARCODER, "<fim_prefix>", "<fim_suffix>", "<fim_middle>", NULL, NULL, NULL},
        {PROMPT_FIM_QWEN, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", NULL, NULL, NULL},
        {PROMPT_FIM_DEEPSEEK, "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
         "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>",
         "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", NULL, NULL, NULL},
        {PROMPT_FIM_CODELLAMA, "<PRE>", "<SUF>", "<MID>", "\xE2\x96\x81<PRE>",
         "\xE2\x96\x81<SUF>", "\xE2\x96\x81<MID>"},
    };
    const tok_vocab *v = b->vocab;
    /* Ids named in the metadata win; the family is then read off the prefix token's text. */
    int32_t mp = meta_id(b->model, "tokenizer.ggml.fim_pre_token_id");
    int32_t ms = meta_id(b->model, "tokenizer.ggml.fim_suf_token_id");
    int32_t mm = meta_id(b->model, "tokenizer.ggml.fim_mid_token_id");
    if (mp < 0) {
        mp = meta_id(b->model, "tokenizer.ggml.prefix_token_id");
        ms = meta_id(b->model, "tokenizer.ggml.suffix_token_id");
        mm = meta_id(b->model, "tokenizer.ggml.middle_token_id");
    }
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        int32_t p, s, m;
        if (mp >= 0 && ms >= 0 && mm >= 0) {
            if (!piece_is(v, mp, fams[i].pre, fams[i].alt_pre))
                continue;
            p = mp, s = ms, m = mm;
        } else {
            p = tok_find(v, fams[i].pre), s = tok_find(v, fams[i].suf), m = tok_find(v, fams[i].mid);
            if (fams[i].alt_pre && (p < 0 || s < 0 || m < 0)) {
                p = tok_find(v, fams[i].alt_pre), s = tok_find(v, fams[i].alt_suf);
                m = tok_find(v, fams[i].alt_mid);
            }
            if (p < 0 || s < 0 || m < 0)
                continue;
        }
        b->fim = fams[i].kind;
        b->fim_pre = p, b->fim_suf = s, b->fim_mid = m;
        return;
    }
    b->fim = PROMPT_FIM_NONE;
    b->fim_pre = b->fim_suf = b->fim_mid = -1;
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
 * vocabulary loader finds them), then the ids the metadata names (EOS, EOT, FIM pad / repo /
 * file separator). The engine also stops on end-of-generation ids (tok_is_eog); these make the
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
    static const char *const keys[] = {"tokenizer.ggml.fim_pad_token_id",
                                       "tokenizer.ggml.fim_rep_token_id",
                                       "tokenizer.ggml.fim_sep_token_id", NULL};
    for (size_t i = 0; keys[i]; i++)
        add_stop_id(b, meta_id(b->model, keys[i]));
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
