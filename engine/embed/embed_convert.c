/* embed_convert.c — `serval convert`: a Hugging Face BERT folder (model.safetensors,
 * config.json, vocab.txt or tokenizer.json, optional 1_Pooling/config.json and
 * tokenizer_config.json) to a GGUF with llama.cpp's `bert` names, so llama.cpp and Serval
 * load the same file. Every input is checked; the output is written to a temporary file and
 * renamed (gguf_writer_write), so a failed conversion leaves nothing at the output path. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "embed_impl.h"
#include "gguf_write.h"
#include "quant.h"
#include "serval_embed.h"

/* A file read whole (NUL-terminated). */
static eng_status read_file(const char *dir, const char *name, bool required, char **out,
                            size_t *len, eng_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return required ? eng_fail(err, ENG_ERR_IO, "%s: cannot open (is '%s' a Hugging Face "
                                   "model folder?)", path, dir)
                        : ENG_OK;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || n > (1L << 30)) {
        fclose(f);
        return eng_fail(err, ENG_ERR_FORMAT, "%s: unreadable or larger than 1 GiB", path);
    }
    char *b = malloc((size_t)n + 1);
    if (!b) {
        fclose(f);
        return eng_fail(err, ENG_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(b);
        return eng_fail(err, ENG_ERR_IO, "%s: short read", path);
    }
    b[n] = 0;
    *out = b;
    *len = (size_t)n;
    return ENG_OK;
}

static eng_status read_json(const char *dir, const char *name, bool required, ej_val *v,
                            bool *present, eng_err *err)
{
    char *text;
    size_t len;
    memset(v, 0, sizeof *v);
    *present = false;
    eng_status st = read_file(dir, name, required, &text, &len, err);
    if (st != ENG_OK || !text)
        return st;
    st = ej_parse(text, len, name, v, err);
    free(text);
    if (st == ENG_OK && v->type != EJ_OBJ) {
        ej_free(v);
        return eng_fail(err, ENG_ERR_FORMAT, "%s: not a JSON object", name);
    }
    *present = st == ENG_OK;
    return st;
}

static eng_status cfg_int(const ej_val *cfg, const char *key, int64_t lo, int64_t hi,
                          int64_t dflt, int64_t *out, eng_err *err)
{
    const ej_val *v = ej_get(cfg, key);
    if (!v) {
        if (dflt < 0)
            return eng_fail(err, ENG_ERR_FORMAT, "config.json: '%s' is missing", key);
        *out = dflt;
        return ENG_OK;
    }
    if (v->type != EJ_NUM || v->num != (double)(int64_t)v->num || v->num < (double)lo ||
        v->num > (double)hi)
        return eng_fail(err, ENG_ERR_FORMAT, "config.json: '%s' must be an integer in [%lld, "
                        "%lld]", key, (long long)lo, (long long)hi);
    *out = (int64_t)v->num;
    return ENG_OK;
}

/* ---- safetensors --------------------------------------------------------------------------- */

typedef struct st_file {
    void *map;
    size_t size;
    const uint8_t *data; /* start of the tensor data */
    size_t data_len;
    ej_val header;
} st_file;

typedef struct st_tensor {
    const char *name;
    int dtype; /* 0 F32, 1 F16, 2 BF16 */
    int64_t ne[2]; /* ne[0] the contiguous dim; ne[1] = 1 for vectors */
    int n_dims;
    const uint8_t *data;
} st_tensor;

static eng_status st_open(const char *dir, st_file *f, eng_err *err)
{
    char path[4096];
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return eng_fail(err, ENG_ERR_IO, "%s: cannot open (only single-file safetensors "
                        "models are supported)", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8) {
        close(fd);
        return eng_fail(err, ENG_ERR_FORMAT, "%s: too short for safetensors", path);
    }
    f->size = (size_t)sb.st_size;
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return eng_fail(err, ENG_ERR_IO, "%s: mmap failed", path);
    }
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > f->size - 8 || hlen > (100u << 20))
        return eng_fail(err, ENG_ERR_FORMAT, "%s: header length %llu past the end of the file",
                        path, (unsigned long long)hlen);
    eng_status st = ej_parse((const char *)f->map + 8, hlen, "model.safetensors header",
                             &f->header, err);
    if (st != ENG_OK)
        return st;
    if (f->header.type != EJ_OBJ)
        return eng_fail(err, ENG_ERR_FORMAT, "model.safetensors: header is not an object");
    f->data = (const uint8_t *)f->map + 8 + hlen;
    f->data_len = f->size - 8 - hlen;
    return ENG_OK;
}

static void st_close(st_file *f)
{
    if (f->map)
        munmap(f->map, f->size);
    ej_free(&f->header);
}

/* The tensor HF calls `name` (also tried with a "bert." prefix, and gamma/beta for
 * weight/bias, as older checkpoints name them). */
static eng_status st_find(const st_file *f, const char *name, st_tensor *t, eng_err *err)
{
    char alt[256];
    const ej_val *v = ej_get(&f->header, name);
    if (!v) {
        snprintf(alt, sizeof alt, "bert.%s", name);
        v = ej_get(&f->header, alt);
    }
    size_t nl = strlen(name);
    if (!v && nl > 7 && strcmp(name + nl - 7, ".weight") == 0) {
        snprintf(alt, sizeof alt, "%.*s.gamma", (int)(nl - 7), name);
        v = ej_get(&f->header, alt);
    }
    if (!v && nl > 5 && strcmp(name + nl - 5, ".bias") == 0) {
        snprintf(alt, sizeof alt, "%.*s.beta", (int)(nl - 5), name);
        v = ej_get(&f->header, alt);
    }
    if (!v)
        return eng_fail(err, ENG_ERR_FORMAT, "model.safetensors: tensor '%s' is missing", name);
    const ej_val *dt = ej_get(v, "dtype"), *sh = ej_get(v, "shape"),
                 *of = ej_get(v, "data_offsets");
    if (!dt || dt->type != EJ_STR || !sh || sh->type != EJ_ARR || !of || of->type != EJ_ARR ||
        of->n != 2 || sh->n < 1 || sh->n > 2)
        return eng_fail(err, ENG_ERR_FORMAT, "model.safetensors: tensor '%s' has a malformed "
                        "entry (dtype, 1-2 dim shape, data_offsets)", name);
    size_t esz;
    if (strcmp(dt->str, "F32") == 0)
        t->dtype = 0, esz = 4;
    else if (strcmp(dt->str, "F16") == 0)
        t->dtype = 1, esz = 2;
    else if (strcmp(dt->str, "BF16") == 0)
        t->dtype = 2, esz = 2;
    else
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "model.safetensors: tensor '%s' is %s (F32, "
                        "F16 or BF16 only)", name, dt->str);
    t->n_dims = (int)sh->n;
    t->ne[1] = 1;
    for (size_t i = 0; i < sh->n; i++) {
        const ej_val *d = &sh->items[sh->n - 1 - i];
        if (d->type != EJ_NUM || d->num < 1 || d->num > 1e9)
            return eng_fail(err, ENG_ERR_FORMAT, "model.safetensors: tensor '%s' has a bad "
                            "shape", name);
        t->ne[i] = (int64_t)d->num;
    }
    double o0 = of->items[0].num, o1 = of->items[1].num;
    double want = (double)t->ne[0] * (double)t->ne[1] * (double)esz;
    if (of->items[0].type != EJ_NUM || of->items[1].type != EJ_NUM || o0 < 0 || o1 < o0 ||
        o1 > (double)f->data_len || o1 - o0 != want)
        return eng_fail(err, ENG_ERR_FORMAT, "model.safetensors: tensor '%s': data_offsets "
                        "[%.0f, %.0f] do not hold its %.0f bytes inside the file", name, o0, o1,
                        want);
    t->data = f->data + (size_t)o0;
    t->name = name;
    return ENG_OK;
}

/* ---- writing -------------------------------------------------------------------------------- */

/* Converted tensors are kept (owned) until the file is written. */
typedef struct conv {
    gguf_writer *w;
    void **bufs;
    size_t n_bufs, cap_bufs;
    bool f32;
} conv;

static void widen(const st_tensor *t, int64_t i, float *out)
{
    const uint8_t *p = t->data;
    uint16_t h;
    switch (t->dtype) {
    case 0: memcpy(out, p + 4 * i, 4); break;
    case 1: memcpy(&h, p + 2 * i, 2); *out = quant_f16_to_f32(h); break;
    default: memcpy(&h, p + 2 * i, 2); *out = quant_bf16_to_f32(h); break;
    }
}

/* Adds HF tensor `hf` as GGUF `gg` with shape [ne1, ne0] (ne1 = 1: a vector, kept F32; a
 * matrix in F16 unless f32 or force_f32). */
static eng_status add(conv *c, const st_file *f, const char *hf, const char *gg, int64_t ne0,
                      int64_t ne1, bool force_f32, eng_err *err)
{
    st_tensor t = {0};
    eng_status st = st_find(f, hf, &t, err);
    if (st != ENG_OK)
        return st;
    if (t.ne[0] != ne0 || t.ne[1] != ne1)
        return eng_fail(err, ENG_ERR_FORMAT, "model.safetensors: tensor '%s' has shape [%lld, "
                        "%lld], config.json implies [%lld, %lld]", hf, (long long)t.ne[1],
                        (long long)t.ne[0], (long long)ne1, (long long)ne0);
    bool out_f32 = c->f32 || force_f32 || ne1 == 1;
    size_t n = (size_t)(ne0 * ne1), bytes = n * (out_f32 ? 4 : 2);
    void *buf = malloc(bytes);
    if (c->n_bufs == c->cap_bufs) {
        size_t nc = c->cap_bufs ? c->cap_bufs * 2 : 64;
        void **nb = realloc(c->bufs, nc * sizeof *nb);
        if (!nb) {
            free(buf);
            return eng_fail(err, ENG_ERR_NOMEM, "convert: out of memory");
        }
        c->bufs = nb;
        c->cap_bufs = nc;
    }
    if (!buf)
        return eng_fail(err, ENG_ERR_NOMEM, "convert: out of memory for '%s'", hf);
    c->bufs[c->n_bufs++] = buf;
    for (size_t i = 0; i < n; i++) {
        float x;
        widen(&t, (int64_t)i, &x);
        if (out_f32)
            ((float *)buf)[i] = x;
        else
            ((uint16_t *)buf)[i] = quant_f32_to_f16(x);
    }
    int64_t ne[2] = {ne0, ne1};
    return gguf_writer_add_tensor(c->w, gg, out_f32 ? GGUF_DTYPE_F32 : GGUF_DTYPE_F16,
                                  ne1 == 1 ? 1 : 2, ne, buf, bytes);
}

/* The vocabulary: vocab.txt (one token per line, the id is the line number), else
 * tokenizer.json's model.vocab. *toks owned (each string and the array). */
static eng_status load_vocab(const char *dir, const ej_val *tj, char ***toks, int64_t *n,
                             eng_err *err)
{
    char *text;
    size_t len;
    *toks = NULL;
    *n = 0;
    eng_status st = read_file(dir, "vocab.txt", false, &text, &len, err);
    if (st != ENG_OK)
        return st;
    if (text) {
        int64_t lines = 0;
        for (size_t i = 0; i < len; i++)
            lines += text[i] == '\n';
        if (len > 0 && text[len - 1] != '\n')
            lines++;
        char **t = calloc((size_t)lines + 1, sizeof *t);
        if (!t) {
            free(text);
            return eng_fail(err, ENG_ERR_NOMEM, "convert: out of memory");
        }
        int64_t k = 0;
        for (size_t s = 0; s < len && k < lines;) {
            size_t e = s;
            while (e < len && text[e] != '\n')
                e++;
            size_t l = e - s;
            if (l > 0 && text[s + l - 1] == '\r')
                l--;
            t[k] = strndup(text + s, l);
            if (!t[k] || l == 0) {
                for (int64_t q = 0; q <= k; q++)
                    free(t[q]);
                free(t), free(text);
                return eng_fail(err, l == 0 ? ENG_ERR_FORMAT : ENG_ERR_NOMEM,
                                "vocab.txt: line %lld is empty", (long long)k + 1);
            }
            k++;
            s = e + 1;
        }
        free(text);
        *toks = t;
        *n = k;
        return ENG_OK;
    }
    const ej_val *model = ej_get(tj, "model"), *vocab = ej_get(model, "vocab");
    if (!vocab || vocab->type != EJ_OBJ || vocab->n == 0)
        return eng_fail(err, ENG_ERR_FORMAT, "%s has neither vocab.txt nor a tokenizer.json "
                        "with model.vocab", dir);
    char **t = calloc(vocab->n, sizeof *t);
    if (!t)
        return eng_fail(err, ENG_ERR_NOMEM, "convert: out of memory");
    for (size_t i = 0; i < vocab->n; i++) {
        const ej_val *id = &vocab->items[i];
        if (id->type != EJ_NUM || id->num < 0 || id->num >= (double)vocab->n ||
            t[(size_t)id->num]) {
            for (size_t q = 0; q < vocab->n; q++)
                free(t[q]);
            free(t);
            return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.json: model.vocab ids are not 0 .. "
                            "%zu, each once ('%s')", vocab->n - 1, vocab->keys[i]);
        }
        t[(size_t)id->num] = strdup(vocab->keys[i]);
    }
    *toks = t;
    *n = (int64_t)vocab->n;
    return ENG_OK;
}

static int64_t find_tok(char **toks, int64_t n, const char *s)
{
    for (int64_t i = 0; i < n; i++)
        if (strcmp(toks[i], s) == 0)
            return i;
    return -1;
}

static eng_status write_tokenizer(conv *c, const char *dir, char **toks, int64_t n_vocab,
                                  const ej_val *tj, const ej_val *tcfg, int64_t n_types,
                                  eng_err *err)
{
    /* Control tokens: tokenizer.json's special added tokens, else the five BERT names. */
    int32_t *types = malloc(sizeof(int32_t) * (size_t)n_vocab);
    gguf_str *strs = malloc(sizeof(gguf_str) * (size_t)n_vocab);
    char **phantom = calloc((size_t)n_vocab, sizeof *phantom);
    eng_status st = ENG_OK;
    if (!types || !strs || !phantom) {
        st = eng_fail(err, ENG_ERR_NOMEM, "convert: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n_vocab; i++)
        types[i] = 1; /* normal */
    const ej_val *added = ej_get(tj, "added_tokens");
    bool any_added = false;
    for (size_t i = 0; added && added->type == EJ_ARR && i < added->n; i++) {
        const ej_val *id = ej_get(&added->items[i], "id"),
                     *sp = ej_get(&added->items[i], "special");
        if (id && id->type == EJ_NUM && id->num >= 0 && id->num < (double)n_vocab && sp &&
            sp->type == EJ_BOOL && sp->b) {
            types[(int64_t)id->num] = 3; /* control */
            any_added = true;
        }
    }
    static const char *const names[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    if (!any_added)
        for (size_t k = 0; k < 5; k++) {
            int64_t id = find_tok(toks, n_vocab, names[k]);
            if (id >= 0)
                types[id] = 3;
        }
    /* llama.cpp's phantom space: "##x" -> "x", a control token as is, else U+2581 + text. */
    for (int64_t i = 0; i < n_vocab; i++) {
        const char *t = toks[i];
        if (types[i] == 3)
            phantom[i] = strdup(t);
        else if (strncmp(t, "##", 2) == 0 && t[2])
            phantom[i] = strdup(t + 2);
        else if ((phantom[i] = malloc(strlen(t) + 4)) != NULL)
            memcpy(phantom[i], "\xE2\x96\x81", 3), strcpy(phantom[i] + 3, t);
        if (!phantom[i]) {
            st = eng_fail(err, ENG_ERR_NOMEM, "convert: out of memory");
            goto done;
        }
        strs[i] = (gguf_str){phantom[i], strlen(phantom[i])};
    }
    int64_t cls = find_tok(toks, n_vocab, "[CLS]"), sep = find_tok(toks, n_vocab, "[SEP]"),
            unk = find_tok(toks, n_vocab, "[UNK]"), pad = find_tok(toks, n_vocab, "[PAD]"),
            mask = find_tok(toks, n_vocab, "[MASK]");
    if (cls < 0 || sep < 0 || unk < 0) {
        st = eng_fail(err, ENG_ERR_FORMAT, "%s: the vocabulary lacks [CLS], [SEP] or [UNK]", dir);
        goto done;
    }
    /* Lowercasing: tokenizer.json's BertNormalizer, else tokenizer_config.json's
     * do_lower_case, else true (uncased BERT, the common case). */
    bool lower = true, strip_set = false, strip = true;
    const ej_val *norm = ej_get(tj, "normalizer"), *lc = ej_get(norm, "lowercase"),
                 *sa = ej_get(norm, "strip_accents"), *ntype = ej_get(norm, "type");
    if (ntype && (ntype->type != EJ_STR || strcmp(ntype->str, "BertNormalizer") != 0)) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "tokenizer.json: normalizer '%s' is not "
                      "supported (BertNormalizer only)", ntype->type == EJ_STR ? ntype->str : "?");
        goto done;
    }
    const ej_val *mt = ej_get(ej_get(tj, "model"), "type");
    if (mt && (mt->type != EJ_STR || strcmp(mt->str, "WordPiece") != 0)) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "tokenizer.json: model type '%s' is not "
                      "WordPiece", mt->type == EJ_STR ? mt->str : "?");
        goto done;
    }
    if (lc && lc->type == EJ_BOOL)
        lower = lc->b;
    else if (ej_get(tcfg, "do_lower_case") && ej_get(tcfg, "do_lower_case")->type == EJ_BOOL)
        lower = ej_get(tcfg, "do_lower_case")->b;
    if (sa && sa->type == EJ_BOOL)
        strip_set = true, strip = sa->b;
    if (strip_set && strip && !lower) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "tokenizer.json: strip_accents without "
                      "lowercase is not supported");
        goto done;
    }
    gguf_writer *w = c->w;
    if ((st = gguf_writer_set_str(w, "tokenizer.ggml.model", "bert", 4)) != ENG_OK ||
        (st = gguf_writer_set_str(w, "tokenizer.ggml.pre", "default", 7)) != ENG_OK ||
        (st = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, (uint64_t)n_vocab)) !=
            ENG_OK ||
        (st = gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types,
                                  (uint64_t)n_vocab)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.token_type_count", (uint32_t)n_types)) !=
            ENG_OK ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.cls_token_id", (uint32_t)cls)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)cls)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", (uint32_t)sep)) !=
            ENG_OK ||
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk)) !=
            ENG_OK ||
        (st = gguf_writer_set_bool(w, "tokenizer.ggml.normalizer.lowercase", lower)) != ENG_OK)
        goto done;
    if (strip_set &&
        (st = gguf_writer_set_bool(w, "tokenizer.ggml.normalizer.strip_accents", strip)) != ENG_OK)
        goto done;
    if (pad >= 0 &&
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad)) != ENG_OK)
        goto done;
    if (mask >= 0 &&
        (st = gguf_writer_set_u32(w, "tokenizer.ggml.mask_token_id", (uint32_t)mask)) != ENG_OK)
        goto done;
done:
    if (st != ENG_OK && err && !err->msg[0])
        eng_fail(err, st, "convert: cannot write the tokenizer metadata");
    for (int64_t i = 0; phantom && i < n_vocab; i++)
        free(phantom[i]);
    free(phantom), free(strs), free(types);
    return st;
}

static eng_status write_tensors(conv *c, const st_file *sf, int64_t d, int64_t ff,
                                int64_t n_layer, int64_t n_vocab, int64_t n_pos, int64_t n_types,
                                eng_err *err)
{
    eng_status st;
    if ((st = add(c, sf, "embeddings.word_embeddings.weight", "token_embd.weight", d, n_vocab,
                  false, err)) != ENG_OK ||
        (st = add(c, sf, "embeddings.position_embeddings.weight", "position_embd.weight", d,
                  n_pos, false, err)) != ENG_OK ||
        (st = add(c, sf, "embeddings.token_type_embeddings.weight", "token_types.weight", d,
                  n_types, true, err)) != ENG_OK ||
        (st = add(c, sf, "embeddings.LayerNorm.weight", "token_embd_norm.weight", d, 1, true,
                  err)) != ENG_OK ||
        (st = add(c, sf, "embeddings.LayerNorm.bias", "token_embd_norm.bias", d, 1, true, err)) !=
            ENG_OK)
        return st;
    static const struct {
        const char *hf, *gg;
        int shape; /* 0 [d,d], 1 [d], 2 [ff,d], 3 [ff], 4 [d,ff] */
    } L[] = {
        {"attention.self.query.weight", "attn_q.weight", 0},
        {"attention.self.query.bias", "attn_q.bias", 1},
        {"attention.self.key.weight", "attn_k.weight", 0},
        {"attention.self.key.bias", "attn_k.bias", 1},
        {"attention.self.value.weight", "attn_v.weight", 0},
        {"attention.self.value.bias", "attn_v.bias", 1},
        {"attention.output.dense.weight", "attn_output.weight", 0},
        {"attention.output.dense.bias", "attn_output.bias", 1},
        {"attention.output.LayerNorm.weight", "attn_output_norm.weight", 1},
        {"attention.output.LayerNorm.bias", "attn_output_norm.bias", 1},
        {"intermediate.dense.weight", "ffn_up.weight", 2},
        {"intermediate.dense.bias", "ffn_up.bias", 3},
        {"output.dense.weight", "ffn_down.weight", 4},
        {"output.dense.bias", "ffn_down.bias", 1},
        {"output.LayerNorm.weight", "layer_output_norm.weight", 1},
        {"output.LayerNorm.bias", "layer_output_norm.bias", 1},
    };
    for (int64_t il = 0; il < n_layer; il++)
        for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
            char hf[160], gg[96];
            snprintf(hf, sizeof hf, "encoder.layer.%lld.%s", (long long)il, L[k].hf);
            snprintf(gg, sizeof gg, "blk.%lld.%s", (long long)il, L[k].gg);
            const int64_t ne0[] = {d, d, d, ff, ff}, ne1[] = {d, 1, ff, 1, d};
            if ((st = add(c, sf, hf, gg, ne0[L[k].shape], ne1[L[k].shape], false, err)) !=
                ENG_OK)
                return st;
        }
    return ENG_OK;
}

eng_status eng_embed_convert(const char *dir, const char *out_path, bool f32, const char *name,
                             eng_err *err)
{
    ej_val cfg = {0}, tj = {0}, tcfg = {0}, pool = {0};
    bool has_cfg, has_tj, has_tcfg, has_pool;
    st_file sf = {0};
    conv c = {0};
    char **toks = NULL;
    int64_t n_vocab = 0;
    c.f32 = f32;
    eng_status st;
    if ((st = read_json(dir, "config.json", true, &cfg, &has_cfg, err)) != ENG_OK ||
        (st = read_json(dir, "tokenizer.json", false, &tj, &has_tj, err)) != ENG_OK ||
        (st = read_json(dir, "tokenizer_config.json", false, &tcfg, &has_tcfg, err)) != ENG_OK ||
        (st = read_json(dir, "1_Pooling/config.json", false, &pool, &has_pool, err)) != ENG_OK)
        goto done;
    const ej_val *mt = ej_get(&cfg, "model_type"), *act = ej_get(&cfg, "hidden_act"),
                 *pet = ej_get(&cfg, "position_embedding_type");
    if (!mt || mt->type != EJ_STR || strcmp(mt->str, "bert") != 0) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "config.json: model_type '%s' is not 'bert' "
                      "(the only architecture serval convert handles)",
                      mt && mt->type == EJ_STR ? mt->str : "(missing)");
        goto done;
    }
    if (act && (act->type != EJ_STR || strcmp(act->str, "gelu") != 0)) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "config.json: hidden_act '%s' (only 'gelu')",
                      act->type == EJ_STR ? act->str : "?");
        goto done;
    }
    if (pet && (pet->type != EJ_STR || strcmp(pet->str, "absolute") != 0)) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "config.json: position_embedding_type '%s' "
                      "(only 'absolute')", pet->type == EJ_STR ? pet->str : "?");
        goto done;
    }
    int64_t d = 0, n_head = 1, n_layer = 0, ff = 0, n_pos = 0, n_types = 0, vocab_size = 0;
    if ((st = cfg_int(&cfg, "hidden_size", 1, 65536, -1, &d, err)) != ENG_OK ||
        (st = cfg_int(&cfg, "num_attention_heads", 1, 1024, -1, &n_head, err)) != ENG_OK ||
        (st = cfg_int(&cfg, "num_hidden_layers", 1, 256, -1, &n_layer, err)) != ENG_OK ||
        (st = cfg_int(&cfg, "intermediate_size", 1, 1 << 20, -1, &ff, err)) != ENG_OK ||
        (st = cfg_int(&cfg, "max_position_embeddings", 2, 1 << 16, -1, &n_pos, err)) != ENG_OK ||
        (st = cfg_int(&cfg, "type_vocab_size", 1, 1024, 2, &n_types, err)) != ENG_OK ||
        (st = cfg_int(&cfg, "vocab_size", 1, 1 << 24, -1, &vocab_size, err)) != ENG_OK)
        goto done;
    if (d % n_head != 0) {
        st = eng_fail(err, ENG_ERR_FORMAT, "config.json: hidden_size %lld is not a multiple of "
                      "num_attention_heads %lld", (long long)d, (long long)n_head);
        goto done;
    }
    double eps = 1e-12;
    const ej_val *ev = ej_get(&cfg, "layer_norm_eps");
    if (ev && (ev->type != EJ_NUM || !(ev->num > 0 && ev->num < 1))) {
        st = eng_fail(err, ENG_ERR_FORMAT, "config.json: layer_norm_eps must be in (0, 1)");
        goto done;
    }
    if (ev)
        eps = ev->num;
    /* Pooling as sentence-transformers says (1_Pooling/config.json); mean without it. */
    uint32_t pooling = 1;
    if (has_pool) {
        const ej_val *pc = ej_get(&pool, "pooling_mode_cls_token"),
                     *pm = ej_get(&pool, "pooling_mode_mean_tokens");
        bool is_cls = pc && pc->type == EJ_BOOL && pc->b, is_mean = pm && pm->type == EJ_BOOL && pm->b;
        if (is_cls == is_mean) {
            st = eng_fail(err, ENG_ERR_UNSUPPORTED, "1_Pooling/config.json: exactly one of "
                          "pooling_mode_mean_tokens and pooling_mode_cls_token must be true "
                          "(other poolings are not supported)");
            goto done;
        }
        pooling = is_cls ? 2 : 1;
    }
    if ((st = load_vocab(dir, &tj, &toks, &n_vocab, err)) != ENG_OK)
        goto done;
    if (n_vocab != vocab_size) {
        st = eng_fail(err, ENG_ERR_FORMAT, "the vocabulary has %lld tokens, config.json's "
                      "vocab_size says %lld", (long long)n_vocab, (long long)vocab_size);
        goto done;
    }
    if ((st = st_open(dir, &sf, err)) != ENG_OK)
        goto done;
    c.w = gguf_writer_create();
    if (!c.w) {
        st = eng_fail(err, ENG_ERR_NOMEM, "convert: out of memory");
        goto done;
    }
    const char *nm = name;
    char base[256];
    if (!nm || !*nm) {
        const char *s = strrchr(dir, '/');
        snprintf(base, sizeof base, "%s", s && s[1] ? s + 1 : dir);
        nm = base;
    }
    gguf_writer *w = c.w;
    if ((st = gguf_writer_set_str(w, "general.architecture", "bert", 4)) != ENG_OK ||
        (st = gguf_writer_set_str(w, "general.name", nm, strlen(nm))) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "general.file_type", f32 ? 0 : 1)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "bert.context_length", (uint32_t)n_pos)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "bert.embedding_length", (uint32_t)d)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "bert.feed_forward_length", (uint32_t)ff)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "bert.block_count", (uint32_t)n_layer)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "bert.attention.head_count", (uint32_t)n_head)) != ENG_OK ||
        (st = gguf_writer_set_f32(w, "bert.attention.layer_norm_epsilon", (float)eps)) !=
            ENG_OK ||
        (st = gguf_writer_set_bool(w, "bert.attention.causal", false)) != ENG_OK ||
        (st = gguf_writer_set_u32(w, "bert.pooling_type", pooling)) != ENG_OK)
        goto done;
    if ((st = write_tokenizer(&c, dir, toks, n_vocab, &tj, &tcfg, n_types, err)) != ENG_OK ||
        (st = write_tensors(&c, &sf, d, ff, n_layer, n_vocab, n_pos, n_types, err)) != ENG_OK)
        goto done;
    st = gguf_writer_write(w, out_path, err);
done:
    if (st != ENG_OK && err && !err->msg[0])
        eng_fail(err, st, "convert: failed (%s)", eng_status_str(st));
    for (int64_t i = 0; toks && i < n_vocab; i++)
        free(toks[i]);
    free(toks);
    for (size_t i = 0; i < c.n_bufs; i++)
        free(c.bufs[i]);
    free(c.bufs);
    gguf_writer_free(c.w);
    st_close(&sf);
    ej_free(&cfg), ej_free(&tj), ej_free(&tcfg), ej_free(&pool);
    return st;
}
