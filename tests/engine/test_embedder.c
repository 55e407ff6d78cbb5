/* test_embedder.c — the embedding model: WordPiece ids against HF tokenizers, embeddings of the
 * converted all-MiniLM-L6-v2 against a float64 numpy reference on the safetensors and against
 * llama.cpp on the same GGUF (tests/fixtures/embed/, tools/gen_embed_fixtures.py), batching,
 * truncation, concurrency, and what `serval convert` and the loader refuse. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch.h"
#include "serval_embed.h"
#include "testutil.h"
#include "tu_json.h"

/* The converted default embedding model: $SERVAL_EMBED_MODEL, else what tools/setup.sh
 * writes. Missing is a failure (CI's setup provides it), not a skip. */
static char *embed_model_path(void)
{
    const char *env = getenv("SERVAL_EMBED_MODEL");
    char *p = env && *env ? strdup(env) : tu_source_path("models/all-MiniLM-L6-v2.f16.gguf");
    struct stat st;
    if (stat(p, &st) != 0)
        cr_assert_fail("embedding model %s is missing: run tools/setup.sh (or set "
                       "SERVAL_EMBED_MODEL)", p);
    return p;
}

static eng_embedder *open_embedder(int32_t max_batch)
{
    char *p = embed_model_path();
    eng_embedder_config cfg = eng_embedder_config_defaults();
    cfg.n_threads = 2;
    cfg.max_batch = max_batch;
    eng_embedder *e = NULL;
    eng_err err;
    eng_status st = eng_embedder_create(p, &cfg, &e, &err);
    cr_assert_eq(st, ENG_OK, "eng_embedder_create(%s): %s", p, err.msg);
    free(p);
    return e;
}

static tu_json *fixture(const char *name)
{
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/embed/%s", name);
    char *path = tu_source_path(rel);
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text, "cannot read %s", path);
    tu_json *j = tu_json_parse(text, len);
    cr_assert_not_null(j, "%s is not valid JSON", path);
    free(text);
    free(path);
    return j;
}

static double cosine(const float *a, const tu_json *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    cr_assert_eq((int)b->n, n, "reference has %zu values, the model %d", b->n, n);
    for (int i = 0; i < n; i++) {
        double y = b->items[i]->num;
        ab += a[i] * y, aa += (double)a[i] * a[i], bb += y * y;
    }
    return ab / sqrt(aa * bb);
}

Test(embed, wordpiece_ids_equal_hf_tokenizers_on_code_prose_unicode_and_long_texts)
{
    eng_embedder *e = open_embedder(8);
    tu_json *j = fixture("tokens.json");
    const tu_json *cases = tu_json_get(j, "cases");
    cr_assert(cases && cases->n >= 30);
    for (size_t c = 0; c < cases->n; c++) {
        const tu_json *text = tu_json_get(cases->items[c], "text");
        const tu_json *ids = tu_json_get(cases->items[c], "ids");
        int32_t *got = NULL, n = 0;
        eng_err err;
        cr_assert_eq(eng_embedder_tokenize(e, text->str, text->str_len, &got, &n, &err), ENG_OK,
                     "%s", err.msg);
        cr_assert_eq((size_t)n, ids->n, "case %zu (%.40s): %d ids, HF has %zu", c, text->str, n,
                     ids->n);
        for (int32_t i = 0; i < n; i++)
            cr_assert_eq(got[i], (int32_t)ids->items[i]->num,
                         "case %zu (%.40s): id %d is %d, HF has %d", c, text->str, i, got[i],
                         (int32_t)ids->items[i]->num);
        free(got);
    }
    tu_json_free(j);
    eng_embedder_free(e);
}

/* Every text of the corpus in one call (so in shared batches of 8): each within cosine 0.9999
 * of the float64 reference on the safetensors and of llama.cpp's embedding of the same GGUF
 * (of llama.cpp's own ids, where its tokenizer differs from HF's). */
Test(embed, embeddings_match_the_safetensors_reference_and_llama_cpp)
{
    eng_embedder *e = open_embedder(8);
    const int d = eng_embedder_dim(e);
    cr_assert_eq(d, 384);
    tu_json *j = fixture("embeddings.json");
    const tu_json *cases = tu_json_get(j, "cases");
    const int n = (int)cases->n;
    const char **texts = calloc((size_t)n, sizeof *texts);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    float *out = malloc(sizeof(float) * (size_t)n * (size_t)d);
    int32_t *ntok = calloc((size_t)n, sizeof *ntok);
    bool *trunc = calloc((size_t)n, sizeof *trunc);
    for (int c = 0; c < n; c++) {
        const tu_json *t = tu_json_get(cases->items[c], "text");
        texts[c] = t->str;
        lens[c] = t->str_len;
    }
    eng_err err;
    cr_assert_eq(eng_embed(e, texts, lens, n, out, ntok, trunc, &err), ENG_OK, "%s", err.msg);
    int n_llama = 0, n_trunc = 0;
    for (int c = 0; c < n; c++) {
        double cr = cosine(out + (size_t)c * (size_t)d, tu_json_get(cases->items[c], "ref"), d);
        cr_expect_geq(cr, 0.9999, "case %d (%.40s): cosine %.6f to the reference", c, texts[c],
                      cr);
        n_trunc += trunc[c];
        if (trunc[c])
            cr_expect_eq(ntok[c], eng_embedder_max_tokens(e));
        const tu_json *lids = tu_json_get(cases->items[c], "llama_ids");
        if (!lids)
            continue;
        int32_t m = (int32_t)lids->n;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)m);
        for (int32_t i = 0; i < m; i++)
            ids[i] = (int32_t)lids->items[i]->num;
        float v[384];
        const int32_t *const tp[1] = {ids};
        cr_assert_eq(eng_embed_tokens(e, tp, &m, 1, v, NULL, NULL, &err), ENG_OK, "%s", err.msg);
        double cl = cosine(v, tu_json_get(cases->items[c], "llama"), d);
        cr_expect_geq(cl, 0.9999, "case %d (%.40s): cosine %.6f to llama.cpp", c, texts[c], cl);
        free(ids);
        n_llama++;
    }
    cr_expect_geq(n_llama, 28, "llama.cpp compared on %d texts only", n_llama);
    cr_expect_geq(n_trunc, 2, "the corpus's long texts were not truncated (%d)", n_trunc);
    free(texts), free(lens), free(out), free(ntok), free(trunc);
    tu_json_free(j);
    eng_embedder_free(e);
}

Test(embed, a_texts_embedding_does_not_depend_on_its_batch)
{
    eng_embedder *e = open_embedder(32);
    const int d = eng_embedder_dim(e);
    const char *texts[] = {"short", "a much longer text about sorting algorithms in C and Rust",
                           "int main(void) { return 0; }"};
    size_t lens[3];
    for (int i = 0; i < 3; i++)
        lens[i] = strlen(texts[i]);
    float all[3 * 384], one[384];
    eng_err err;
    cr_assert_eq(eng_embed(e, texts, lens, 3, all, NULL, NULL, &err), ENG_OK, "%s", err.msg);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(eng_embed(e, texts + i, lens + i, 1, one, NULL, NULL, &err), ENG_OK);
        cr_expect_eq(memcmp(one, all + i * d, sizeof one), 0, "text %d differs alone", i);
    }
    /* And vectors are unit length, with similar texts closer than unrelated ones. */
    double n2 = 0;
    for (int k = 0; k < d; k++)
        n2 += (double)one[k] * one[k];
    cr_expect(fabs(n2 - 1.0) < 1e-5, "squared norm %.7f", n2);
    eng_embedder_free(e);
}

/* The nice value of thread tid (field 19 of /proc/self/task/TID/stat). */
static long thread_nice(const char *tid)
{
    char p[300], buf[1024];
    snprintf(p, sizeof p, "/proc/self/task/%s/stat", tid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -100;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = 0;
    const char *s = strrchr(buf, ')'); /* the command may hold spaces */
    int field = 2;
    for (const char *q = s; q && *q; q++)
        if (*q == ' ' && ++field == 19)
            return strtol(q + 1, NULL, 10);
    return -100;
}

static long main_thread_nice(void)
{
    char self[32];
    snprintf(self, sizeof self, "%ld", (long)getpid());
    return thread_nice(self);
}

/* Threads of this process running `above` nice steps above the main thread (clamped at 19,
 * as the kernel clamps it). */
static int threads_niced(long above)
{
    long base = main_thread_nice();
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (de->d_name[0] != '.')
            n += thread_nice(de->d_name) == (base + above > 19 ? 19 : base + above);
    closedir(d);
    return n;
}

Test(embed, the_encoders_threads_run_niced_so_completions_go_first)
{
    if (main_thread_nice() >= 19)
        cr_skip_test("the test itself runs at nice 19: nothing can be niced further");
    cr_assert_eq(threads_niced(10), 0);
    eng_embedder *e = open_embedder(4); /* 2 threads: the worker and one pool thread */
    cr_expect_eq(threads_niced(10), 2);
    eng_embedder_free(e);
}

typedef struct conc_arg {
    eng_embedder *e;
    int id;
    float v[384];
    eng_status st;
} conc_arg;

static void *conc_main(void *p)
{
    conc_arg *a = p;
    char text[64];
    snprintf(text, sizeof text, "thread %d embeds this sentence", a->id % 2);
    const char *t[1] = {text};
    size_t l = strlen(text);
    a->st = eng_embed(a->e, t, &l, 1, a->v, NULL, NULL, NULL);
    return NULL;
}

Test(embed, concurrent_callers_share_batches_and_get_their_own_vectors)
{
    eng_embedder *e = open_embedder(4);
    enum { N = 6 };
    conc_arg a[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        a[i] = (conc_arg){.e = e, .id = i};
        pthread_create(&th[i], NULL, conc_main, &a[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(a[i].st, ENG_OK);
        cr_expect_eq(memcmp(a[i].v, a[i % 2].v, sizeof a[i].v), 0, "thread %d", i);
    }
    cr_expect_neq(memcmp(a[0].v, a[1].v, sizeof a[0].v), 0);
    eng_embedder_free(e);
}

Test(embed, bad_inputs_are_refused_with_a_message)
{
    eng_embedder *e = open_embedder(4);
    float v[384];
    eng_err err;
    const char *bad[1] = {"\xff\xfe broken"};
    size_t l = 9;
    cr_expect_eq(eng_embed(e, bad, &l, 1, v, NULL, NULL, &err), ENG_ERR_INVALID);
    cr_expect(strstr(err.msg, "UTF-8") != NULL, "%s", err.msg);
    int32_t ids[2] = {101, 999999}, m = 2;
    const int32_t *const tp[1] = {ids};
    cr_expect_eq(eng_embed_tokens(e, tp, &m, 1, v, NULL, NULL, &err), ENG_ERR_INVALID);
    cr_expect(strstr(err.msg, "999999") != NULL, "%s", err.msg);
    cr_expect_eq(eng_embed(e, bad, &l, 0, v, NULL, NULL, &err), ENG_ERR_INVALID);
    eng_embedder_free(e);
}

Test(embed, a_decoder_gguf_is_not_an_embedding_model)
{
    eng_embedder *e = NULL;
    eng_err err;
    cr_assert_eq(eng_embedder_create(tu_default_model(), NULL, &e, &err), ENG_ERR_UNSUPPORTED);
    cr_expect_null(e);
    cr_expect(strstr(err.msg, "not an embedding model") != NULL, "%s", err.msg);
    cr_assert_eq(eng_embedder_create("/nonexistent/x.gguf", NULL, &e, &err), ENG_ERR_IO);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(embed, convert_names_what_is_wrong_and_writes_nothing)
{
    char dir[] = "/tmp/serval_test_convert_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char out[600];
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    eng_err err;
    /* No config.json at all. */
    cr_expect_eq(eng_embed_convert(dir, out, false, NULL, &err), ENG_ERR_IO);
    cr_expect(strstr(err.msg, "config.json") != NULL, "%s", err.msg);
    /* Another architecture. */
    write_text(dir, "config.json", "{\"model_type\": \"gpt2\"}");
    cr_expect_eq(eng_embed_convert(dir, out, false, NULL, &err), ENG_ERR_UNSUPPORTED);
    cr_expect(strstr(err.msg, "gpt2") != NULL, "%s", err.msg);
    /* Broken JSON: the byte is named. */
    write_text(dir, "config.json", "{\"model_type\": \"bert\",");
    cr_expect_eq(eng_embed_convert(dir, out, false, NULL, &err), ENG_ERR_FORMAT);
    cr_expect(strstr(err.msg, "config.json") != NULL && strstr(err.msg, "byte") != NULL, "%s",
              err.msg);
    /* A bert config whose vocabulary disagrees with vocab_size. */
    write_text(dir, "config.json",
               "{\"model_type\": \"bert\", \"hidden_size\": 8, \"num_attention_heads\": 2, "
               "\"num_hidden_layers\": 1, \"intermediate_size\": 16, "
               "\"max_position_embeddings\": 16, \"vocab_size\": 10}");
    write_text(dir, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n");
    cr_expect_eq(eng_embed_convert(dir, out, false, NULL, &err), ENG_ERR_FORMAT);
    cr_expect(strstr(err.msg, "vocab_size") != NULL, "%s", err.msg);
    /* Right vocabulary, no weights. */
    write_text(dir, "config.json",
               "{\"model_type\": \"bert\", \"hidden_size\": 8, \"num_attention_heads\": 2, "
               "\"num_hidden_layers\": 1, \"intermediate_size\": 16, "
               "\"max_position_embeddings\": 16, \"vocab_size\": 5}");
    cr_expect_eq(eng_embed_convert(dir, out, false, NULL, &err), ENG_ERR_IO);
    cr_expect(strstr(err.msg, "model.safetensors") != NULL, "%s", err.msg);
    struct stat st;
    cr_expect_neq(stat(out, &st), 0, "a failed conversion left %s", out);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

typedef struct bulk_arg {
    eng_embedder *e;
    eng_status st;
} bulk_arg;

enum { BULK_TEXTS = 64 };

static void *bulk_main(void *arg)
{
    bulk_arg *b = arg;
    const char *texts[BULK_TEXTS];
    size_t lens[BULK_TEXTS];
    for (int i = 0; i < BULK_TEXTS; i++)
        texts[i] = "def read_config(path, defaults=None):\n    \"\"\"Reads the file at path and "
                   "returns its settings merged over defaults.\"\"\"\n    settings = dict(defaults "
                   "or {})\n    with open(path, encoding='utf-8') as f:\n        for line in f:\n"
                   "            key, _, value = line.partition('=')\n            settings[key."
                   "strip()] = value.strip()\n    return settings\n",
        lens[i] = strlen(texts[i]);
    static float out[BULK_TEXTS * 384];
    eng_err err;
    b->st = eng_embed(b->e, texts, lens, BULK_TEXTS, out, NULL, NULL, &err);
    return NULL;
}

/* A completion's query (one text) must not wait for an indexing run's backlog: queued behind a
 * bulk call, it is served next, while most of the bulk texts are still waiting. */
Test(embed, a_small_call_goes_ahead_of_a_queued_bulk_call)
{
    eng_embedder *e = open_embedder(1); /* one text per batch: the queue drains slowly */
    bulk_arg b = {.e = e};
    pthread_t th;
    pthread_create(&th, NULL, bulk_main, &b);
    for (int i = 0; i < 30000 && eng_embedder_waiting(e) < BULK_TEXTS - 16; i++)
        usleep(1000);
    int32_t before = eng_embedder_waiting(e);
    cr_assert_geq(before, BULK_TEXTS - 16, "the bulk call never queued (%d waiting)", before);
    const char *q = "read the configuration file";
    size_t ql = strlen(q);
    float v[384];
    eng_err err;
    cr_assert_eq(eng_embed(e, &q, &ql, 1, v, NULL, NULL, &err), ENG_OK, "%s", err.msg);
    int32_t after = eng_embedder_waiting(e);
    pthread_join(th, NULL);
    cr_assert_eq(b.st, ENG_OK);
    /* FIFO would have run every bulk text first (0 left); ahead of them, at most the batches
     * already running and the few taken while this call was queued are gone. */
    cr_assert_gt(after, 0, "the query waited for all %d bulk texts", before);
    eng_embedder_free(e);
}

/* bert's tensor table lives with the other families' (engine/model/arch.c), but as an encoder:
 * the completion-model loader's lookup must not offer it. */
Test(embed, bert_is_described_in_arch_c_as_an_encoder_only)
{
    const eng_arch_desc *d = eng_arch_find_encoder("bert");
    cr_assert_not_null(d);
    cr_assert(d->encoder && d->post_norm);
    cr_assert_eq(d->ffn, ENG_ARCH_FFN_GELU_ERF);
    cr_assert_eq(d->n_layer_tensors, 16, "Q, K, V, output, 2 norms, up, down with biases");
    cr_assert_null(eng_arch_find("bert"), "a decoder lookup found bert");
    cr_assert_null(eng_arch_find_encoder("llama"));
    char names[256];
    eng_arch_supported_names(names, sizeof names);
    cr_assert_null(strstr(names, "bert"), "bert offered as a completion model: %s", names);
}
