/* test_status_page.c — the administrator's status page against a real `serval serve`:
 * GET /v1/status (model, memory, GPUs from NVML (a stand-in library here), latency percentiles
 * over HTTP, streamed and gRPC requests, usage per user per day from /v1/events), who may open
 * it (admin scope, or loopback without a token), the HTML page self-contained, and rendered by a real headless Chromium whose numbers match the JSON (a
 * screenshot is kept in the build directory; tools/test.sh installs Chromium; the test skips
 * where it is not installed). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc_test_util.h"
#include "http_test_util.h"
#include "testutil.h"

static const char *const COMPLETION = "{\"prompt\":\"def add(a, b):\",\"max_tokens\":3}";

static json_t *status_json(int port, const char *token)
{
    tu_http_resp r = request(port, "GET", "/v1/status", token, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_error_t je;
    json_t *j = json_loads(r.body, 0, &je);
    cr_assert_not_null(j, "%s", je.text);
    tu_http_resp_free(&r);
    return j;
}

static json_t *status_json(int port, const char *token);

static void post_event(int port, const char *type)
{
    char body[160];
    snprintf(body, sizeof body, "{\"type\":\"%s\",\"completion_id\":\"cmpl-1\",\"choice_index\":0}",
             type);
    tu_http_resp r = request(port, "POST", "/v1/events", TOKEN, body);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_http_resp_free(&r);
}

/* The server's gRPC port, from its "grpc listening on 127.0.0.1:PORT" line. */
static int grpc_port(const server *s)
{
    char *log = tu_read_file(s->log_path, NULL);
    const char *p = log ? strstr(log, "grpc listening on 127.0.0.1:") : NULL;
    cr_assert_not_null(p, "%s", log);
    int port = atoi(p + strlen("grpc listening on 127.0.0.1:"));
    free(log);
    return port;
}

/* Three completions, one per way in (HTTP, HTTP streamed, gRPC: the latencies count them
 * all), and Tabby's events for two of them: 2 shown, 1 accepted. */
static void traffic(const server *s)
{
    int port = s->port;
    tu_http_resp r = request(port, "POST", "/v1/completions", TOKEN, COMPLETION);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_http_resp_free(&r);
    r = request(port, "POST", "/v1/completions", TOKEN,
                "{\"prompt\":\"def add(a, b):\",\"max_tokens\":3,\"stream\":true}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strstr(r.body, "data: "), "a stream: %s", r.body);
    tu_http_resp_free(&r);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", grpc_port(s));
    rpc_client *cl = rpc_client_create(target, TOKEN);
    size_t len = 0;
    uint8_t *req = gt_pack_complete("def add(a, b):", 3, &len);
    rpc_client_result res;
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 60000, NULL, NULL, &res),
                 GRPC_STATUS_OK, "%s", res.details);
    rpc_client_result_clear(&res);
    free(req);
    rpc_client_free(cl);
    post_event(port, "view");
    post_event(port, "view");
    post_event(port, "select");
    /* The engine counts a request just after the client has the answer: wait until all three
     * are in. */
    for (int i = 0; i < 200; i++) {
        json_t *j = status_json(port, TOKEN);
        long n = (long)json_integer_value(json_object_get(json_object_get(j, "latency_ms"),
                                                          "requests"));
        json_decref(j);
        if (n == 3) return;
        usleep(50 * 1000);
    }
}

Test(status_page, status_json_reports_model_memory_latency_and_usage_per_user)
{
    server s = server_start(NULL);
    traffic(&s);
    json_t *j = status_json(s.port, TOKEN);
    cr_assert_gt(strlen(json_string_value(json_object_get(json_object_get(j, "model"), "name"))), 0);
    json_t *mem = json_object_get(j, "memory");
    cr_assert_gt(json_integer_value(json_object_get(mem, "kv_blocks_total")), 0);
    cr_assert_gt(json_integer_value(json_object_get(mem, "weight_bytes")), 1 << 20);
    json_t *lat = json_object_get(j, "latency_ms");
    cr_assert_eq(json_integer_value(json_object_get(lat, "requests")), 3,
                 "HTTP, HTTP streamed and gRPC requests all count");
    double p50 = json_number_value(json_object_get(lat, "p50")),
           p99 = json_number_value(json_object_get(lat, "p99"));
    cr_assert(p50 > 0 && p99 >= p50, "p50 %f p99 %f", p50, p99);
    json_t *pts = json_object_get(json_object_get(j, "series"), "points");
    cr_assert_eq(json_array_size(pts), 60, "10 minutes of 10 s points");
    long reqs = 0;
    for (size_t i = 0; i < json_array_size(pts); i++)
        reqs += (long)json_integer_value(json_object_get(json_array_get(pts, i), "requests"));
    cr_assert_eq(reqs, 3, "the series adds up to the window's requests");
    json_t *usage = json_object_get(j, "usage");
    cr_assert_eq(json_array_size(usage), 1, "one user, one day");
    json_t *u = json_array_get(usage, 0);
    cr_assert_str_eq(json_string_value(json_object_get(u, "user")), "token:1",
                     "the token's name, never the token");
    cr_assert_eq(json_integer_value(json_object_get(u, "shown")), 2);
    cr_assert_eq(json_integer_value(json_object_get(u, "accepted")), 1);
    cr_assert_float_eq(json_number_value(json_object_get(u, "acceptance_rate")), 0.5, 1e-9);
    cr_assert_eq(json_array_size(json_object_get(j, "repositories")), 0);
    json_decref(j);
    cr_assert_eq(tu_server_stop(&s), 0);
}

/* A server that finds tests/rpc/fake_nvml.c's libnvidia-ml.so.1 first: one 80 GiB GPU. */
static server server_with_fake_gpu(void)
{
    const char *old = getenv("LD_LIBRARY_PATH");
    char *keep = old ? strdup(old) : NULL;
    setenv("LD_LIBRARY_PATH", FAKE_NVML_DIR, 1);
    server s = server_start(NULL);
    if (keep) setenv("LD_LIBRARY_PATH", keep, 1);
    else unsetenv("LD_LIBRARY_PATH");
    free(keep);
    return s;
}

Test(status_page, the_gpus_nvml_reports_are_listed_with_their_memory)
{
    server s = server_with_fake_gpu();
    json_t *j = status_json(s.port, TOKEN);
    json_t *devs = json_object_get(j, "devices"), *gpu = NULL;
    for (size_t i = 0; i < json_array_size(devs); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(devs, i), "kind")), "gpu"))
            gpu = json_array_get(devs, i);
    cr_assert_not_null(gpu, "no gpu in devices: %s", json_dumps(devs, 0));
    cr_assert_str_eq(json_string_value(json_object_get(gpu, "name")), "Fake GPU 80GB");
    cr_assert_eq(json_integer_value(json_object_get(gpu, "memory_total_bytes")), 80ll << 30);
    cr_assert_eq(json_integer_value(json_object_get(gpu, "memory_used_bytes")), 10ll << 30);
    cr_assert_eq(json_integer_value(json_object_get(gpu, "utilization_pct")), 42);
    cr_assert_str_eq(json_string_value(json_object_get(gpu, "driver")), "999.1");
    json_decref(j);
    tu_http_resp r = request(s.port, "GET", "/", TOKEN, NULL);
    cr_assert(strstr(r.body, "Fake GPU 80GB"), "the page carries the GPU");
    tu_http_resp_free(&r);
    cr_assert_eq(tu_server_stop(&s), 0);
}

Test(status_page, only_admins_or_loopback_clients_open_it)
{
    server s = server_start(NULL);
    tu_http_resp r = request(s.port, "GET", "/", NULL, NULL);
    cr_assert_eq(r.status, 200, "loopback without a token: %s", r.body);
    cr_assert(strcasestr(r.headers, "Content-Type: text/html"), "%s", r.headers);
    tu_http_resp_free(&r);
    cr_assert_eq(request(s.port, "GET", "/v1/status", "not-a-token", NULL).status, 401,
                 "a wrong token is refused even from loopback");
    char *bin = tu_bin_path("serval"), *out = NULL;
    char *argv[] = {bin, "token", "create", "dev", "--scopes=completion", "--data-dir",
                    s.data_dir, NULL};
    cr_assert_eq(tu_run(argv, &out, NULL, 30), 0);
    out[strcspn(out, "\n")] = '\0';
    int st = 0;
    for (int i = 0; i < 40 && st != 403; i++, usleep(100 * 1000))
        st = request(s.port, "GET", "/", out, NULL).status;
    cr_assert_eq(st, 403, "a token without the admin scope");
    cr_assert_eq(tu_server_stop(&s), 0);
    free(out), free(bin);
}

Test(status_page, the_page_is_one_self_contained_file)
{
    server s = server_start(NULL);
    tu_http_resp r = request(s.port, "GET", "/", TOKEN, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "<svg") && strstr(r.body, "<style>") && strstr(r.body, "<script>"));
    cr_assert_null(strstr(r.body, "src="), "no external script or image");
    cr_assert_null(strstr(r.body, "<link"), "no external stylesheet");
    cr_assert_null(strstr(r.body, "http://"));
    cr_assert_null(strstr(r.body, "https://"));
    cr_assert_lt(r.len, 64 * 1024, "small: %zu bytes", r.len);
    tu_http_resp_free(&r);
    cr_assert_eq(tu_server_stop(&s), 0);
}

static char *chromium(void)
{
    const char *names[] = {"/usr/bin/chromium", "/usr/bin/chromium-browser",
                           "/usr/bin/google-chrome"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (access(names[i], X_OK) == 0) return strdup(names[i]);
    return NULL;
}

/* The text of the element with id="id" in a dumped DOM ("" when absent). */
static void element_text(const char *dom, const char *id, char *out, size_t cap)
{
    char needle[96];
    snprintf(needle, sizeof needle, "id=\"%s\">", id);
    const char *p = strstr(dom, needle);
    out[0] = '\0';
    if (!p) return;
    p += strlen(needle);
    size_t n = strcspn(p, "<");
    snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
}

Test(status_page, chromium_renders_the_page_and_its_numbers_match_the_json, .timeout = 120)
{
    char *chrome = chromium();
    if (!chrome) cr_skip_test("no Chromium (apt-get install chromium): the browser check is skipped");
    server s = server_with_fake_gpu();
    traffic(&s);
    json_t *j = status_json(s.port, TOKEN);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", s.port);
    char *profile = tu_temp_path(".chrome");
    unlink(profile);
    char prof[600];
    snprintf(prof, sizeof prof, "--user-data-dir=%s", profile);
    char *argv[] = {chrome, "--headless", "--no-sandbox", "--disable-gpu", prof,
                    "--virtual-time-budget=2000", "--dump-dom", url, NULL};
    char *dom = NULL;
    cr_assert_eq(tu_run(argv, &dom, NULL, 90), 0, "chromium --dump-dom");
    cr_assert(strstr(dom, "data-rendered=\"yes\""), "the script ran to its end: %.2000s", dom);
    char got[128], want[128];
    json_t *lat = json_object_get(j, "latency_ms");
    const char *ids[] = {"lat-p50", "lat-p95", "lat-p99"}, *keys[] = {"p50", "p95", "p99"};
    for (int i = 0; i < 3; i++) {
        element_text(dom, ids[i], got, sizeof got);
        snprintf(want, sizeof want, "%.1f ms", json_number_value(json_object_get(lat, keys[i])));
        cr_assert_str_eq(got, want, "%s: page %s, json %s", ids[i], got, want);
    }
    element_text(dom, "lat-n", got, sizeof got);
    cr_assert_str_eq(got, "3");
    element_text(dom, "gpu-0", got, sizeof got);
    cr_assert_str_eq(got, "Fake GPU 80GB: 10.00 GiB of 80.00 GiB, 42% busy");
    element_text(dom, "m-name", got, sizeof got);
    cr_assert_str_eq(got, json_string_value(json_object_get(json_object_get(j, "model"), "name")));
    element_text(dom, "kv-blocks", got, sizeof got);
    json_t *mem = json_object_get(j, "memory");
    snprintf(want, sizeof want, " / %lld", /* used blocks may still be freeing: total only */
             (long long)json_integer_value(json_object_get(mem, "kv_blocks_total")));
    cr_assert(strlen(got) > strlen(want) && !strcmp(got + strlen(got) - strlen(want), want),
              "%s vs %s", got, want);
    cr_assert(strstr(dom, "data-user=\"token:1\""), "the usage row");
    cr_assert(strstr(dom, "class=\"n shown\">2<") && strstr(dom, "class=\"n accepted\">1<") &&
              strstr(dom, "class=\"n rate\">50.0%<"), "shown 2, accepted 1, 50%%");
    cr_assert(strstr(dom, "class=\"line-p50_ms\"") || strstr(dom, "class=\"pt-p50_ms\""),
              "the latency chart is drawn");

    /* The screenshot, kept as the test's artefact. */
    const char *bindir = getenv("SERVAL_BIN_DIR");
    char shot[1024], shot_arg[1100];
    snprintf(shot, sizeof shot, "%s/../status_page.png", bindir ? bindir : ".");
    snprintf(shot_arg, sizeof shot_arg, "--screenshot=%s", shot);
    char *argv2[] = {chrome, "--headless", "--no-sandbox", "--disable-gpu", prof,
                     "--window-size=1280,1100", "--virtual-time-budget=2000", shot_arg, url, NULL};
    cr_assert_eq(tu_run(argv2, NULL, NULL, 90), 0, "chromium --screenshot");
    size_t len = 0;
    char *png = tu_read_file(shot, &len);
    cr_assert(png && len > 10000 && !memcmp(png, "\x89PNG", 4), "a PNG at %s", shot);
    free(png);
    json_decref(j);
    free(dom), free(chrome), free(profile);
    cr_assert_eq(tu_server_stop(&s), 0);
}
