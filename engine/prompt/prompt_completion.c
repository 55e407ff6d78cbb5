/* prompt_completion.c — code-completion prompts: prefix and suffix clipped to token budgets,
 * snippets injected as comments within a character budget, the model's FIM template, and the
 * language's stop words; also raw prompts, which skip the template. */
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"
#include "utf8.h"

#define DEFAULT_SNIPPET_BUDGET PROMPT_DEFAULT_SNIPPET_BUDGET
#define DEFAULT_MAX_PREFIX 1024
#define DEFAULT_MAX_SUFFIX 512

/* ---- token budgets ---------------------------------------------------------------------- */

/* Bytes the first n_tok tokens of ids decode to. */
static size_t pieces_len(const tok_vocab *v, const int32_t *ids, size_t n_tok)
{
    size_t total = 0, len;
    for (size_t i = 0; i < n_tok; i++)
        if (tok_piece(v, ids[i], &len))
            total += len;
    return total;
}

/* Keeps at most max tokens of s: the last ones (keep_end) cut to start at a line, or the
 * first ones cut to end at a line. Returns the kept byte range [*from, *to). */
static eng_status clip_tokens(const tok_vocab *v, const char *s, size_t n, int32_t max,
                              bool keep_end, size_t *from, size_t *to, bool *clipped,
                              eng_err *err)
{
    *from = 0, *to = n, *clipped = false;
    for (int round = 0; round < 6; round++) {
        int32_t *ids;
        size_t k;
        eng_status st = prompt_encode(v, s + *from, *to - *from, &ids, &k, err);
        if (st != ENG_OK)
            return st;
        if (k <= (size_t)max) {
            free(ids);
            return ENG_OK;
        }
        *clipped = true;
        /* A piece may decode to more bytes than the text it was matched in (a user-defined or
         * control token reached through merges is its raw text), so the pieces only estimate
         * where to cut: past the end, the text is cut in proportion to max / k instead, and
         * the cut always stays inside [from, to]. */
        const size_t have = *to - *from;
        if (keep_end) {
            size_t drop = pieces_len(v, ids, k - (size_t)max);
            if (drop >= have)
                drop = have - (size_t)((double)have * (double)max / (double)k);
            size_t cut = *from + (drop > 0 ? drop : 1);
            if (cut > *to)
                cut = *to;
            const char *nl = memchr(s + cut, '\n', *to - cut);
            /* Start at a whole line unless that loses more than half of what is left. */
            if (nl && (size_t)(nl + 1 - s) - cut < (*to - cut) / 2)
                cut = (size_t)(nl + 1 - s);
            while (cut < *to && ((unsigned char)s[cut] & 0xC0) == 0x80)
                cut++;
            *from = cut;
        } else {
            size_t keep = pieces_len(v, ids, (size_t)max);
            if (keep >= have)
                keep = (size_t)((double)have * (double)max / (double)k);
            size_t cut = *from + (keep < have ? keep : have - 1);
            size_t c = cut;
            while (c > *from && s[c - 1] != '\n')
                c--;
            if (c > *from + (cut - *from) / 2)
                cut = c;
            while (cut > *from && ((unsigned char)s[cut] & 0xC0) == 0x80)
                cut--;
            *to = cut;
        }
        free(ids);
    }
    return ENG_OK;
}

/* ---- snippets and stop words ---------------------------------------------------------- */

/* One commented line: "<comment> <line>\n", or "<comment>\n" for an empty line. */
static void st_line(prompt_str *t, const char *comment, const char *s, size_t n)
{
    if (n && s[n - 1] == '\r')
        n--;
    prompt_str_put(t, comment, strlen(comment));
    if (n) {
        prompt_str_put(t, " ", 1);
        prompt_str_put(t, s, n);
    }
    prompt_str_put(t, "\n", 1);
}

static void st_snippet(prompt_str *t, const char *comment, const prompt_snippet *sn, bool first)
{
    if (!first)
        st_line(t, comment, "", 0);
    if (sn->filepath) {
        prompt_str_put(t, comment, strlen(comment));
        prompt_str_put(t, " Path: ", 7);
        prompt_str_put(t, sn->filepath, strlen(sn->filepath));
        prompt_str_put(t, "\n", 1);
    }
    const char *p = sn->body, *end = sn->body + strlen(sn->body);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        st_line(t, comment, p, n);
        p += n + (nl ? 1 : 0);
    }
}

/* Canonical order within a list: by path (none first), then body. */
static int snippet_cmp(const void *pa, const void *pb)
{
    const prompt_snippet *a = *(const prompt_snippet *const *)pa;
    const prompt_snippet *b = *(const prompt_snippet *const *)pb;
    int c = strcmp(a->filepath ? a->filepath : "", b->filepath ? b->filepath : "");
    return c ? c : strcmp(a->body, b->body);
}

/* Renders the snippets that fit the budget as comments; *n_used says how many. They are chosen
 * in the order the client ranked them (declarations, then changed files, then recent files,
 * each list until one does not fit), and rendered list by list in a canonical order (path,
 * then body): the same snippets then give the same prompt head whatever their rank, so the
 * prefix cache serves them to the next keystroke and to other developers of the repository
 * (bench/RESULTS.md, "prompt section order"). */
static void render_snippets(const prompt_completion_input *in, const char *comment,
                            prompt_str *t, size_t *n_used)
{
    const prompt_snippet *lists[3] = {in->declarations, in->changed, in->recent};
    size_t counts[3] = {in->n_declarations, in->n_changed, in->n_recent};
    size_t budget = in->snippet_budget ? in->snippet_budget : DEFAULT_SNIPPET_BUDGET;
    size_t used = 0;
    *n_used = 0;
    if (!comment)
        return;
    for (int l = 0; l < 3; l++) {
        const prompt_snippet **pick = counts[l] ? malloc(counts[l] * sizeof *pick) : NULL;
        size_t n_pick = 0;
        for (size_t i = 0; i < counts[l]; i++) {
            const prompt_snippet *sn = &lists[l][i];
            if (!sn->body || !*sn->body || !eng_utf8_valid(sn->body, strlen(sn->body), NULL) ||
                (sn->filepath && !eng_utf8_valid(sn->filepath, strlen(sn->filepath), NULL)))
                continue;
            size_t n = strlen(sn->body);
            if (used + n > budget)
                break;
            used += n;
            if (pick) {
                pick[n_pick++] = sn;
            } else { /* out of memory: the client's order */
                st_snippet(t, comment, sn, *n_used == 0);
                (*n_used)++;
            }
        }
        if (n_pick > 1)
            qsort(pick, n_pick, sizeof *pick, snippet_cmp);
        for (size_t i = 0; i < n_pick; i++) {
            st_snippet(t, comment, pick[i], *n_used == 0);
            (*n_used)++;
        }
        free(pick);
    }
}

static void add_completion_stops(const prompt_builder *b, const char *language,
                                 prompt_result *r, bool *oom)
{
    r->stops = calloc(PROMPT_MAX_STOPS, sizeof *r->stops);
    if (!r->stops) {
        *oom = true;
        return;
    }
    const char *const *kw = prompt_language_keywords(language);
    if (!kw) {
        /* Unknown language: single-line completion. */
        prompt_stop_add(r, "\n", NULL, oom);
    } else {
        prompt_stop_add(r, "\n\n", NULL, oom);
        const char *comment = prompt_language_comment(language);
        if (comment)
            prompt_stop_add(r, "\n", comment, oom);
        for (size_t i = 0; kw[i]; i++)
            prompt_stop_add(r, "\n", kw[i], oom);
    }
    for (size_t i = 0; i < b->n_stops; i++)
        prompt_stop_add(r, b->stops[i], NULL, oom);
}

/* ---- building -------------------------------------------------------------------------- */

/* BOS, then the FIM template around the prefix (with the snippets before it) and the suffix;
 * with PROMPT_FIM_NONE the snippets and prefix alone. CodeLlama's template is Tabby's text
 * "<PRE> {prefix} <SUF>{suffix} <MID>"; with its real tokens ▁<PRE>, ▁<SUF>, ▁<MID> the
 * spaces before <SUF> and <MID> are those tokens' ▁, and the one after <PRE> is the prefix's
 * own first space (SentencePiece's dummy prefix), so in tokens it is Meta's
 * infilling_prompt_tokens: ▁<PRE>, encode(" " + prefix), ▁<SUF>, the suffix encoded with no
 * leading space (encode_infilling), ▁<MID>. (llama.cpp's /infill gives the suffix a leading
 * space too; the model was not trained so.) */
static eng_status put_fim(const prompt_builder *b, prompt_out *p, const prompt_str *snips,
                          const char *prefix, size_t prefix_len, const char *suffix,
                          size_t suffix_len, eng_err *err)
{
    eng_status st;
    bool cl = b->fim == PROMPT_FIM_CODELLAMA, spaced = cl && b->fim_spaced;
    prompt_out_bos(p);
    if (cl)
        prompt_out_special_as(p, b->fim_pre, "<PRE>");
    else if (b->fim != PROMPT_FIM_NONE)
        prompt_out_special(p, b->fim_pre);
    /* Snippets, prefix (and CodeLlama's spaces) form one text so the tokenizer sees them
     * joined. */
    prompt_str head = {0};
    if (cl)
        prompt_str_put(&head, " ", 1);
    if (snips->len)
        prompt_str_put(&head, snips->buf, snips->len);
    prompt_str_put(&head, prefix, prefix_len);
    if (cl && !spaced)
        prompt_str_put(&head, " ", 1);
    if (b->fim == PROMPT_FIM_NONE)
        return prompt_out_str(p, &head, err);
    if ((st = cl ? prompt_out_str_continued(p, &head, err) : prompt_out_str(p, &head, err)) !=
        ENG_OK)
        return st;
    if (cl)
        prompt_out_special_as(p, b->fim_suf, spaced ? " <SUF>" : "<SUF>");
    else
        prompt_out_special(p, b->fim_suf);
    prompt_str tail = {0};
    prompt_str_put(&tail, suffix, suffix_len);
    if (cl && !spaced)
        prompt_str_put(&tail, " ", 1);
    if ((st = cl ? prompt_out_str_continued(p, &tail, err) : prompt_out_str(p, &tail, err)) !=
        ENG_OK)
        return st;
    if (cl)
        prompt_out_special_as(p, b->fim_mid, spaced ? " <MID>" : "<MID>");
    else
        prompt_out_special(p, b->fim_mid);
    return ENG_OK;
}

eng_status prompt_build_completion(const prompt_builder *b, const prompt_completion_input *in,
                                   prompt_result *out, eng_err *err)
{
    memset(out, 0, sizeof *out);
    if (!in->prefix)
        return eng_fail(err, ENG_ERR_INVALID, "segments.prefix is required");
    if (!eng_utf8_valid(in->prefix, in->prefix_len, NULL))
        return eng_fail(err, ENG_ERR_INVALID, "segments.prefix is not valid UTF-8");
    if (in->suffix && !eng_utf8_valid(in->suffix, in->suffix_len, NULL))
        return eng_fail(err, ENG_ERR_INVALID, "segments.suffix is not valid UTF-8");

    eng_status st = ENG_OK;
    bool crlf = false, oom = false;
    size_t plen = 0, slen = 0;
    char *prefix = prompt_crlf_to_lf(in->prefix, in->prefix_len, &plen, &crlf);
    char *suffix = in->suffix && in->suffix_len
                       ? prompt_crlf_to_lf(in->suffix, in->suffix_len, &slen, &crlf)
                       : strdup("\n");
    prompt_str snips = {0};
    prompt_out p = {.v = b->vocab, .r = out};
    if (!prefix || !suffix) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }
    if (!in->suffix || !in->suffix_len)
        slen = 1;

    size_t pf, pt, sf, stt;
    int32_t maxp = in->max_prefix_tokens > 0 ? in->max_prefix_tokens : DEFAULT_MAX_PREFIX;
    int32_t maxs = in->max_suffix_tokens > 0 ? in->max_suffix_tokens : DEFAULT_MAX_SUFFIX;
    if ((st = clip_tokens(b->vocab, prefix, plen, maxp, true, &pf, &pt, &out->prefix_clipped,
                          err)) != ENG_OK)
        goto fail;
    sf = 0, stt = slen;
    if (b->fim != PROMPT_FIM_NONE &&
        (st = clip_tokens(b->vocab, suffix, slen, maxs, false, &sf, &stt, &out->suffix_clipped,
                          err)) != ENG_OK)
        goto fail;
    if (stt == sf) /* a suffix clipped to nothing is still the template's "\n" */
        suffix[sf] = '\n', stt = sf + 1;

    render_snippets(in, prompt_language_comment(in->language), &snips, &out->n_snippets);
    if (snips.oom) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }

    if ((st = put_fim(b, &p, &snips, prefix + pf, pt - pf, suffix + sf, stt - sf, err)) != ENG_OK)
        goto fail;
    add_completion_stops(b, in->language, out, &oom);
    if (p.oom || oom) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }
    out->crlf = crlf;
    free(prefix);
    free(suffix);
    free(snips.buf);
    return ENG_OK;
fail:
    free(prefix);
    free(suffix);
    free(snips.buf);
    prompt_result_clear(out);
    return st;
}

eng_status prompt_build_raw(const prompt_builder *b, const char *text, size_t len,
                            bool parse_special, const char *language, prompt_result *out,
                            eng_err *err)
{
    memset(out, 0, sizeof *out);
    if (!text || !len)
        return eng_fail(err, ENG_ERR_INVALID, "the prompt is empty");
    if (!eng_utf8_valid(text, len, NULL))
        return eng_fail(err, ENG_ERR_INVALID, "the prompt is not valid UTF-8");
    prompt_out p = {.v = b->vocab, .r = out};
    prompt_out_bos(&p);
    size_t cap = tok_encode_bound(b->vocab, len) + 1, k;
    if (!prompt_out_reserve_tokens(&p, cap))
        goto oom;
    eng_status st = tok_encode(b->vocab, text, len, parse_special, out->tokens + out->n_tokens,
                               cap, &k);
    if (st != ENG_OK) {
        prompt_result_clear(out);
        return eng_fail(err, st, "prompt: cannot tokenize %zu bytes", len);
    }
    out->n_tokens += k;
    prompt_out_text(&p, text, len);
    bool oom = false;
    if (language)
        add_completion_stops(b, language, out, &oom);
    else
        out->stops = calloc(1, sizeof *out->stops);
    if (p.oom || oom || !out->stops)
        goto oom;
    return ENG_OK;
oom:
    prompt_result_clear(out);
    return eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
}
