/* test_embed_api.c — the embedding APIs of a real `serval serve` with the default embedding
 * model (tools/setup.sh converts all-MiniLM-L6-v2): OpenAI's POST /v1/embeddings (strings,
 * token arrays, base64, usage, errors, the official Python client when installed),
 * llama.cpp's POST /embeddings (Tabby's llama.cpp/embedding backend), gRPC Embed, and what a
 * server started with --no-embeddings answers. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_test_util.h"
#include "http_test_util.h"
#include "testutil.h"

enum { DIM = 384 };

/* The embedding of data[i] in an OpenAI reply (float format). */
static void openai_vec(const tu_json *j, size_t i, float *v)
{
    const tu_json *data = tu_json_get(j, "data");
    cr_assert(data && data->n > i, "no data[%zu]", i);
    const tu_json *e = tu_json_get(data->items[i], "embedding");
    cr_assert(e && e->type == TU_JSON_ARR && e->n == DIM, "data[%zu].embedding", i);
    cr_assert_eq((size_t)tu_json_get(data->items[i], "index")->num, i);
    for (size_t k = 0; k < DIM; k++)
        v[k] = (float)e->items[k]->num;
}

static double dot(const float *a, const float *b)
{
    double s = 0;
    for (int k = 0; k < DIM; k++)
        s += (double)a[k] * b[k];
    return s;
}

Test(embed_api, openai_embeddings_of_texts_tokens_and_base64_agree, .timeout = 120)
{
    server s = server_start(NULL);
    tu_http_resp r = request(s.port, "POST", "/v1/embeddings", TOKEN,
                             "{\"model\":\"all-MiniLM-L6-v2\",\"input\":[\"hello world\","
                             "\"def add(a, b): return a + b\",\"sum two numbers\"]}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    cr_assert_str_eq(jstr(j, "object"), "list");
    cr_assert_str_eq(jstr(j, "model"), "all-MiniLM-L6-v2");
    const tu_json *usage = tu_json_get(j, "usage");
    /* [CLS] hello world [SEP] = 4, [CLS] def add ( a , b ) : return a + b [SEP] = 14,
     * [CLS] sum two numbers [SEP] = 5 (HF tokenizers' counts) */
    cr_assert_eq((int)tu_json_get(usage, "prompt_tokens")->num, 23, "%s", r.body);
    cr_assert_eq((int)tu_json_get(usage, "total_tokens")->num, 23);
    float v[3][DIM];
    for (size_t i = 0; i < 3; i++) {
        openai_vec(j, i, v[i]);
        cr_assert(fabs(dot(v[i], v[i]) - 1.0) < 1e-5, "data[%zu] is not unit length", i);
    }
    cr_assert_gt(dot(v[1], v[2]), dot(v[0], v[1]), "code and its description are closer than "
                 "code and a greeting");
    tu_json_free(j);
    tu_http_resp_free(&r);

    /* The same text as token ids ([CLS] hello world [SEP]) and in base64. */
    r = request(s.port, "POST", "/v1/embeddings", TOKEN,
                "{\"model\":\"x\",\"input\":[[101,7592,2088,102]],\"encoding_format\":\"base64\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_of(&r);
    const tu_json *emb = tu_json_get(tu_json_get(j, "data")->items[0], "embedding");
    cr_assert(emb && emb->type == TU_JSON_STR, "base64 embedding is a string");
    size_t blen = 0;
    unsigned char *bytes = tu_base64_decode(emb->str, emb->str_len, &blen);
    cr_assert(bytes && blen == sizeof(float) * DIM, "%zu bytes", blen);
    float t[DIM];
    memcpy(t, bytes, sizeof t);
    for (int k = 0; k < DIM; k++)
        cr_assert(fabsf(t[k] - v[0][k]) < 1e-6f, "value %d: %g vs %g", k, t[k], v[0][k]);
    cr_assert_eq((int)tu_json_get(tu_json_get(j, "usage"), "prompt_tokens")->num, 4);
    free(bytes);
    tu_json_free(j);
    tu_http_resp_free(&r);

    /* llama.cpp's route, as Tabby's llama.cpp/embedding backend calls it. */
    r = request(s.port, "POST", "/embeddings", TOKEN, "{\"content\":\"hello world\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_of(&r);
    cr_assert(j->type == TU_JSON_ARR && j->n == 1, "%s", r.body);
    const tu_json *rows = tu_json_get(j->items[0], "embedding");
    cr_assert(rows && rows->type == TU_JSON_ARR && rows->n == 1 && rows->items[0]->n == DIM);
    for (int k = 0; k < DIM; k++)
        cr_assert(fabs(rows->items[0]->items[k]->num - v[0][k]) < 1e-6);
    tu_json_free(j);
    tu_http_resp_free(&r);

    /* ... and the one before llama.cpp b4356 (Tabby's before_b4356 setting). */
    r = request(s.port, "POST", "/embedding", TOKEN, "{\"content\":\"hello world\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_of(&r);
    const tu_json *flat = tu_json_get(j, "embedding");
    cr_assert(flat && flat->type == TU_JSON_ARR && flat->n == DIM, "%s", r.body);
    for (int k = 0; k < DIM; k++)
        cr_assert(fabs(flat->items[k]->num - v[0][k]) < 1e-6);
    tu_json_free(j);
    tu_http_resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

Test(embed_api, bad_embedding_requests_get_openai_errors_naming_the_param, .timeout = 120)
{
    server s = server_start(NULL);
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"input\":[]}", 400, "\"param\":\"input\"");
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"model\":\"m\"}", 400, "input");
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"input\":[\"a\",1]}", 400,
           "input[1] is not a string");
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"input\":\"a\",\"encoding_format\":\"int8\"}",
           400, "\"param\":\"encoding_format\"");
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"input\":\"a\",\"dimensions\":128}", 400,
           "384");
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"input\":[101,99999999,102]}", 400,
           "99999999");
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"input\":[[]]}", 400, "empty token array");
    expect(s.port, "POST", "/embeddings", TOKEN, "{\"content\":7}", 422, "content");
    expect(s.port, "POST", "/v1/embeddings", NULL, "{\"input\":\"a\"}", 401, NULL);
    expect(s.port, "GET", "/v1/embeddings", TOKEN, NULL, 405, NULL);
    /* Longer than the model's 512 positions: truncated, not refused. */
    char *big = malloc(64 * 1024);
    int n = sprintf(big, "{\"input\":\"");
    for (int i = 0; i < 3000; i++)
        n += sprintf(big + n, "word%d ", i);
    sprintf(big + n, "\"}");
    tu_http_resp r = request(s.port, "POST", "/v1/embeddings", TOKEN, big);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    cr_assert_eq((int)tu_json_get(tu_json_get(j, "usage"), "prompt_tokens")->num, 512);
    tu_json_free(j);
    tu_http_resp_free(&r);
    free(big);
    cr_assert_eq(server_stop(&s), 0);
}

Test(embed_api, the_official_openai_python_client_reads_serval_embeddings, .timeout = 120)
{
    if (system("python3 -c 'import openai' 2>/dev/null") != 0)
        cr_skip_test("the openai Python package is not installed (pip install openai)");
    server s = server_start(NULL);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "python3 -c '\n"
             "import openai, sys\n"
             "c = openai.OpenAI(base_url=\"http://127.0.0.1:%d/v1\", api_key=\"%s\")\n"
             "r = c.embeddings.create(model=\"all-MiniLM-L6-v2\", input=[\"a\", \"b c\"])\n"
             "assert len(r.data) == 2 and len(r.data[1].embedding) == 384, r\n"
             "assert r.usage.prompt_tokens == 7, r.usage\n"
             "r = c.embeddings.create(model=\"m\", input=\"x\", encoding_format=\"float\")\n"
             "assert abs(sum(x * x for x in r.data[0].embedding) - 1) < 1e-4\n"
             "try:\n"
             "    c.embeddings.create(model=\"m\", input=[])\n"
             "    sys.exit(3)\n"
             "except openai.BadRequestError:\n"
             "    pass\n'",
             s.port, TOKEN);
    cr_assert_eq(system(cmd), 0, "the openai client failed (see above)");
    cr_assert_eq(server_stop(&s), 0);
}

Test(embed_api, grpc_embed_answers_the_same_vectors, .timeout = 120)
{
    tu_server s = tu_server_start("grpc", TOKEN, true, NULL);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    cr_assert_not_null(cl);
    Serval__V1__EmbedRequest rq = SERVAL__V1__EMBED_REQUEST__INIT;
    char *inputs[2] = {"hello world", "def add(a, b): return a + b"};
    rq.n_inputs = 2;
    rq.inputs = inputs;
    size_t len;
    uint8_t *b = gt_pack(&rq.base, &len);
    rpc_client_result res = {0};
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Embed", b, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_OK, "%s", res.details);
    Serval__V1__EmbedResponse *r = serval__v1__embed_response__unpack(NULL, res.last_len, res.last);
    cr_assert(r && r->n_embeddings == 2);
    cr_assert_eq(r->embeddings[0]->n_values, DIM);
    double n2 = 0, cross = 0;
    for (int k = 0; k < DIM; k++) {
        n2 += (double)r->embeddings[1]->values[k] * r->embeddings[1]->values[k];
        cross += (double)r->embeddings[0]->values[k] * r->embeddings[1]->values[k];
    }
    cr_assert(fabs(n2 - 1.0) < 1e-5);
    cr_assert_lt(cross, 0.9, "two different texts got the same vector");
    serval__v1__embed_response__free_unpacked(r, NULL);
    free(b);
    /* A model name that is not the served one. */
    rq.model = "text-embedding-3-small";
    b = gt_pack(&rq.base, &len);
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Embed", b, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(res.details, "all-MiniLM-L6-v2"), "%s", res.details);
    free(b);
    rpc_client_result_clear(&res);
    rpc_client_free(cl);
    cr_assert_eq(tu_server_stop(&s), 0);
}

Test(embed_api, without_an_embedding_model_the_routes_say_so, .timeout = 120)
{
    const char *extra[] = {"--no-embeddings", NULL};
    server s = server_start(extra);
    expect(s.port, "POST", "/v1/embeddings", TOKEN, "{\"input\":\"a\"}", 501, "--embedding-model");
    expect(s.port, "POST", "/embeddings", TOKEN, "{\"content\":\"a\"}", 501, "embedding");
    cr_assert_eq(server_stop(&s), 0);
    tu_server g = tu_server_start("grpc", TOKEN, true, extra);
    rpc_client *cl = rpc_client_create(g.target, TOKEN);
    rpc_client_result res = {0};
    uint8_t empty = 0;
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Embed", &empty, 0, 5000, NULL, NULL, &res),
                 GRPC_STATUS_UNIMPLEMENTED);
    cr_assert(strstr(res.details, "embedding model"), "%s", res.details);
    rpc_client_result_clear(&res);
    rpc_client_free(cl);
    cr_assert_eq(tu_server_stop(&g), 0);
    /* An embedding model named explicitly that does not load stops serve. */
    const char *bad[] = {"--embedding-model", "/nonexistent/embed.gguf", NULL};
    char *cmd = NULL;
    char *bin = tu_bin_path("serval");
    cr_assert(asprintf(&cmd, "%s serve --model %s --no-auth --grpc-port 0 --http-port 0 "
                       "--threads 1 %s %s 2>/dev/null", bin, tu_default_model(), bad[0], bad[1]) > 0);
    cr_assert_neq(system(cmd), 0, "serve started with a missing --embedding-model");
    free(cmd);
    free(bin);
}
