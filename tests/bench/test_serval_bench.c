/* test_serval_bench.c — serval-bench's CI smoke run: `serval serve` on a tiny synthetic model,
 * serval-bench for a couple of seconds per mode (developer sessions, classic closed and open
 * loop, Poisson and gamma, sweeps, the developers-at-SLO search) against every target (Tabby,
 * OpenAI completions and chat, llama.cpp's /completion as Serval serves it, Serval gRPC); the
 * outputs must be well-formed and add up, each answer carry the server's request id and
 * timings, and the server's /metrics account for the aborts. The null server (client
 * overhead) answers every call. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "testutil.h"
#include "tu_http.h"
#include "tu_server.h"

#define TOKEN "bench-token"

/* serval-synth --preset tiny with the default model's vocabulary (FIM tokens included). */
static char *tiny_model(void)
{
    char *bin = tu_bin_path("serval-synth"), *out = tu_temp_path(".gguf");
    char *argv[] = {bin, "--preset", "tiny", "--vocab-from", (char *)tu_default_model(), "--out",
                    out, NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 60);
    cr_assert_eq(rc, 0, "serval-synth: %s", err ? err : "");
    free(err);
    free(bin);
    return out;
}

/* The server of this test (Criterion forks one process per test): a failed assertion skips
 * the test's own stop, so the suite's fini kills what is left. */
static pid_t test_server_pid;

static void reap_server(void)
{
    if (test_server_pid > 0) {
        kill(test_server_pid, SIGKILL);
        waitpid(test_server_pid, NULL, 0);
    }
}

TestSuite(serval_bench, .fini = reap_server);

/* listener: "http" or "grpc", the port tu_server keeps. */
static tu_server start_listener(const char *model, const char *listener)
{
    const char *extra[] = {"--model", model, NULL};
    tu_server s = tu_server_start(listener, TOKEN, true, extra);
    test_server_pid = s.pid;
    return s;
}

/* tu_server_stop, and nothing left for the fini. */
static int stop_server(tu_server *s)
{
    int rc = tu_server_stop(s);
    test_server_pid = 0;
    return rc;
}

static tu_server start_server(const char *model)
{
    return start_listener(model, "http");
}

/* A fresh output directory path (not created: serval-bench makes it). */
static char *out_dir(void)
{
    char *p = tu_temp_path(".out");
    unlink(p);
    return p;
}

/* Runs serval-bench with the common flags plus `extra` (NULL-terminated); returns stdout. */
static char *bench(const tu_server *s, const char *target, const char *out,
                   const char *const *extra)
{
    char *bin = tu_bin_path("serval-bench"), *repos = tu_source_path("engine");
    char url[96];
    snprintf(url, sizeof url, "%s://%s", strcmp(target, "grpc") == 0 ? "grpc" : "http", s->target);
    /* --token first: a --token-file in extra replaces it */
    const char *argv[40] = {bin, "--target", target, "--url", url, "--token", TOKEN, "--repos",
                            repos, "--out", out, "--grace", "5", "--quiet"};
    int n = 14;
    for (; extra && *extra && n < 38; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    char *o = NULL, *e = NULL;
    int rc = tu_run((char *const *)argv, &o, &e, 60);
    cr_assert_eq(rc, 0, "serval-bench %s exited %d: %s", target, rc, e ? e : "");
    cr_assert(strstr(o, "serval-bench: "), "the headline on stdout: %s", o);
    free(e);
    free(bin);
    free(repos);
    return o;
}

static const tu_json *need(const tu_json *obj, const char *key)
{
    const tu_json *v = tu_json_get(obj, key);
    cr_assert_not_null(v, "summary.json has no \"%s\"", key);
    return v;
}

static double num(const tu_json *obj, const char *key)
{
    const tu_json *v = need(obj, key);
    cr_assert_eq(v->type, TU_JSON_NUM, "\"%s\" is not a number", key);
    return v->num;
}

static tu_json *read_json(const char *dir, const char *name, char **text_out)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text, "%s was not written", path);
    tu_json *j = name[strlen(name) - 1] == 'n' ? tu_json_parse(text, len) : NULL;
    if (text_out)
        *text_out = text;
    else
        free(text);
    return j;
}

/* A latency distribution: n, and p50 <= p90 <= p95 <= p99 <= max when n > 0. */
static void check_dist(const tu_json *sum, const char *key, double n_expected)
{
    const tu_json *d = need(sum, key);
    cr_assert_eq(num(d, "n"), n_expected, "%s.n", key);
    if (n_expected == 0)
        return;
    const char *order[] = {"p50", "p90", "p95", "p99", "max"};
    for (int i = 1; i < 5; i++)
        cr_assert_leq(num(d, order[i - 1]), num(d, order[i]) + 1e-6, "%s: %s > %s", key,
                      order[i - 1], order[i]);
    cr_assert_geq(num(d, "p50"), 0, "%s.p50 is negative", key);
}

/* What a target's replies carry besides the text. */
enum {
    USAGE_NONE = 0,      /* Tabby: an id, no token counts */
    USAGE_TOKENS = 1,    /* OpenAI: an id and usage */
    USAGE_NONE_NO_ID = 2 /* llama.cpp: tokens_predicted, no id */
};

/* Checks one run's outputs; returns the summary (caller frees). */
static tu_json *check_run(const char *dir, bool developer, int usage)
{
    tu_json *sum = read_json(dir, "summary.json", NULL);
    cr_assert_not_null(sum, "summary.json is not JSON");
    char *lines = NULL;
    read_json(dir, "requests.jsonl", &lines);
    double count[3] = {0}, tokens = 0, ttft_n = 0;
    size_t n = 0;
    for (char *line = strtok(lines, "\n"); line; line = strtok(NULL, "\n"), n++) {
        tu_json *r = tu_json_parse(line, strlen(line));
        cr_assert_not_null(r, "requests.jsonl line %zu is not JSON: %s", n + 1, line);
        const char *outcome = need(r, "outcome")->str;
        int k = strcmp(outcome, "answered") == 0     ? 0
                : strcmp(outcome, "superseded") == 0 ? 1
                : strcmp(outcome, "error") == 0      ? 2
                                                     : -1;
        cr_assert_geq(k, 0, "line %zu: outcome %s", n + 1, outcome);
        count[k]++;
        cr_assert_eq(need(r, "superseded")->b, k == 1, "line %zu: superseded flag", n + 1);
        cr_assert_geq(num(r, "t_sent_ms"), num(r, "t_intended_ms") - 1e-6,
                      "line %zu: sent before it was due", n + 1);
        cr_assert_geq(num(r, "t_intended_ms"), num(r, "t_key_ms"), "line %zu", n + 1);
        if (k == 0) {
            double ttft = num(r, "ttft_ms"), e2e = num(r, "e2e_ms");
            double k2s = num(r, "keystroke_to_suggestion_ms");
            cr_assert(ttft >= 0 && ttft <= e2e + 1e-6, "line %zu: ttft %g e2e %g", n + 1, ttft,
                      e2e);
            cr_assert_geq(k2s, e2e - 1e-6, "line %zu: keystroke-to-suggestion < e2e", n + 1);
            cr_assert_eq(num(r, "status"), 200, "line %zu", n + 1);
            cr_assert_null(tu_json_get(r, "suggestion_not_utf8"),
                           "line %zu: Serval sent a suggestion that is not UTF-8", n + 1);
            if (usage != USAGE_NONE_NO_ID)
                cr_assert_str_neq(need(r, "id")->str, "", "line %zu: the server's id", n + 1);
            /* Serval's request id (to join its log) and its own timings, on every target */
            const char *rid = need(r, "server_request_id")->str;
            cr_assert(rid && (strncmp(rid, "http-", 5) == 0 || strncmp(rid, "grpc-", 5) == 0),
                      "line %zu: server_request_id %s", n + 1, rid ? rid : "(not a string)");
            cr_assert_leq(num(r, "server_queue_ms"), num(r, "server_total_ms") + 1e-6,
                          "line %zu: server timings", n + 1);
            cr_assert_leq(num(r, "server_total_ms"), e2e + 1e-6,
                          "line %zu: the server took longer than the client waited", n + 1);
            cr_assert_eq(need(r, "suggestion")->type, TU_JSON_STR, "line %zu: the suggestion",
                         n + 1);
            ttft_n++;
            if (usage != USAGE_NONE)
                tokens += num(r, "completion_tokens");
            else
                cr_assert_eq(need(r, "completion_tokens")->type, TU_JSON_NULL,
                             "line %zu: tokens without a usage field", n + 1);
        } else {
            cr_assert_eq(need(r, "e2e_ms")->type, TU_JSON_NULL, "line %zu: e2e", n + 1);
        }
        if (k == 2) {
            cr_assert_eq(need(r, "error")->type, TU_JSON_STR, "line %zu: error says why (%s)",
                         n + 1, need(r, "error")->str);
        }
        tu_json_free(r);
    }
    free(lines);
    double req = num(sum, "requests");
    cr_assert_eq(req, (double)n, "requests %g, requests.jsonl has %zu lines", req, n);
    cr_assert_gt(req, 0, "no requests were sent");
    cr_assert_eq(num(sum, "answered"), count[0]);
    cr_assert_eq(num(sum, "superseded"), count[1]);
    cr_assert_eq(num(sum, "errors"), count[2]);
    cr_assert_eq(count[0] + count[1] + count[2], req);
    cr_assert_gt(count[0], 0, "nothing was answered");
    /* None: a generation that ended inside a UTF-8 character used to cut a stream off
     * mid-reply; the engine now ends it with U+FFFD (test_families_e2e). */
    cr_assert_eq(count[2], 0, "errors against a healthy server");
    cr_assert_float_eq(num(sum, "superseded_fraction"), count[1] / req, 1e-6);
    if (!developer)
        cr_assert_eq(count[1], 0, "classic requests are never superseded");
    check_dist(sum, "ttft_ms", ttft_n);
    check_dist(sum, "e2e_ms", count[0]);
    check_dist(sum, "keystroke_to_suggestion_ms", count[0]);
    /* summary.json keeps 8 significant digits */
    double tput = count[0] / num(sum, "duration_s");
    cr_assert_float_eq(num(sum, "throughput_rps"), tput, 1e-6 * (1 + tput));
    cr_assert_leq(num(sum, "goodput_rps"), num(sum, "throughput_rps") + 1e-9);
    cr_assert_geq(num(sum, "client_cpu_s"), 0);
    cr_assert_eq(need(sum, "client_bottleneck")->type, TU_JSON_BOOL);
    cr_assert_eq(need(sum, "warnings")->type, TU_JSON_ARR);
    if (usage != USAGE_NONE)
        cr_assert_eq(num(sum, "completion_tokens"), tokens, "summary tokens = the lines' sum");
    const tu_json *em = need(sum, "exact_match");
    cr_assert(em->type == TU_JSON_NULL || (em->num >= 0 && em->num <= 1), "exact_match in [0,1]");

    /* summary.csv: a header and one row, as many cells in each. */
    char *csv = NULL;
    read_json(dir, "summary.csv", &csv);
    char *nl = strchr(csv, '\n');
    cr_assert(nl && nl[1] && strchr(nl + 1, '\n'), "summary.csv has a header and a row");
    size_t c0 = 0, c1 = 0;
    for (char *p = csv; p < nl; p++)
        c0 += *p == ',';
    for (char *p = nl + 1; *p && *p != '\n'; p++)
        c1 += *p == ',';
    cr_assert_eq(c0, c1, "summary.csv: %zu header commas, %zu row commas", c0, c1);
    cr_assert(strstr(csv, "keystroke_to_suggestion_ms.p95"));
    free(csv);
    return sum;
}

Test(serval_bench, tabby_developer_sessions_and_classic_runs_are_well_formed_and_add_up)
{
    char *model = tiny_model();
    tu_server s = start_server(model);
    char *dev = out_dir(), *cls = out_dir();
    const char *dev_args[] = {"--developers", "4", "--duration", "2.5", "--keystroke-ms", "60",
                              "--debounce-ms", "100", "--events", NULL};
    free(bench(&s, "tabby", dev, dev_args));
    tu_json *a = check_run(dev, true, USAGE_NONE);
    /* --events: view, then select or dismiss, for every suggestion shown */
    cr_assert_eq(num(a, "events_sent"), 2 * num(a, "suggestions_scored"));
    cr_assert_eq(num(a, "events_failed"), 0);
    const tu_json *cfg = need(a, "config");
    cr_assert_str_eq(need(cfg, "mode")->str, "developer");
    cr_assert_geq(num(a, "suggestions_scored"), 1, "answered suggestions are scored");
    const char *cls_args[] = {"--mode", "classic", "--concurrency", "2", "--duration", "1.5", NULL};
    free(bench(&s, "tabby", cls, cls_args));
    tu_json_free(check_run(cls, false, USAGE_NONE));
    tu_json_free(a);

    /* A sweep over concurrency with shared-prefix groups: one point and one run per load. */
    char *sw = out_dir();
    const char *sweep_args[] = {"--mode", "classic", "--sweep", "1,2", "--duration", "0.8",
                                "--prefix-groups", "2", NULL};
    free(bench(&s, "tabby", sw, sweep_args));
    tu_json *j = read_json(sw, "sweep.json", NULL);
    cr_assert_not_null(j, "sweep.json is not JSON");
    const tu_json *pts = need(j, "points");
    cr_assert_eq(pts->n, 2, "one point per load");
    for (size_t i = 0; i < pts->n; i++) {
        cr_assert_eq(num(pts->items[i], "load"), (double)(i + 1));
        tu_json_free(check_run(need(pts->items[i], "dir")->str, false, USAGE_NONE));
    }
    char *lines = NULL;
    char dir1[600];
    snprintf(dir1, sizeof dir1, "%s/sweep/concurrency-1", sw);
    read_json(dir1, "requests.jsonl", &lines);
    cr_assert(strstr(lines, "\"group\":"), "requests carry their shared-prefix group");
    free(lines);
    tu_json_free(j);
    free(sw);

    /* compare prints B/A per key. */
    char *bin = tu_bin_path("serval-bench"), pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/summary.json", dev);
    snprintf(pb, sizeof pb, "%s/summary.json", cls);
    char *argv[] = {bin, "compare", pa, pb, NULL}, *out = NULL;
    cr_assert_eq(tu_run(argv, &out, NULL, 10), 0);
    cr_assert(strstr(out, "e2e_ms.p95") && strstr(out, "x\n"), "compare: %s", out);
    free(out);
    free(bin);
    cr_assert_eq(stop_server(&s), 0);
    free(dev);
    free(cls);
    free(model);
}

Test(serval_bench, openai_streamed_sessions_and_open_and_closed_loops_count_server_tokens)
{
    char *model = tiny_model();
    tu_server s = start_server(model);
    char *dev = out_dir(), *open = out_dir(), *closed = out_dir();
    const char *dev_args[] = {
        "--developers", "4",        "--duration",   "2.5", "--keystroke-ms", "60", "--debounce-ms",
        "100",          "--stream", "--max-tokens", "8",   "--plot",         NULL};
    free(bench(&s, "openai", dev, dev_args));
    tu_json_free(check_run(dev, true, USAGE_TOKENS));
    /* --plot: the data and the gnuplot script always, the PNG where gnuplot is installed. */
    char path[512];
    const char *plot_files[] = {"latency_cdf.dat", "latency_cdf.gp", "latency_cdf.png"};
    bool have_gnuplot = system("command -v gnuplot >/dev/null 2>&1") == 0;
    for (int i = 0; i < (have_gnuplot ? 3 : 2); i++) {
        snprintf(path, sizeof path, "%s/%s", dev, plot_files[i]);
        cr_assert_eq(access(path, R_OK), 0, "--plot did not write %s", path);
    }
    const char *open_args[] = {"--mode", "classic", "--rate", "8", "--arrival", "gamma",
                               "--duration", "1.5", "--stream", "--max-tokens", "8", NULL};
    free(bench(&s, "openai", open, open_args));
    tu_json_free(check_run(open, false, USAGE_TOKENS));
    const char *closed_args[] = {"--mode", "classic", "--concurrency", "2", "--duration", "1.5",
                                 "--max-tokens", "8", NULL};
    free(bench(&s, "openai", closed, closed_args));
    tu_json *c = check_run(closed, false, USAGE_TOKENS);
    /* Non-streamed, max_tokens 8: each answer reports at most 8 tokens. */
    cr_assert_leq(num(c, "completion_tokens"), 8 * num(c, "answered"));
    tu_json_free(c);

    /* Chat: usage when not streamed (Serval's chat stream carries none: tokens stay null). */
    char *chat = out_dir(), *chat_stream = out_dir();
    free(bench(&s, "openai-chat", chat, closed_args));
    tu_json *ch = check_run(chat, false, USAGE_TOKENS);
    cr_assert_str_eq(need(need(ch, "config"), "target")->str, "openai-chat");
    tu_json_free(ch);
    const char *chat_stream_args[] = {"--mode", "classic", "--concurrency", "2", "--duration", "1",
                                      "--max-tokens", "8", "--stream", NULL};
    free(bench(&s, "openai-chat", chat_stream, chat_stream_args));
    tu_json_free(check_run(chat_stream, false, USAGE_NONE));
    free(chat);
    free(chat_stream);
    cr_assert_eq(stop_server(&s), 0);
    free(dev);
    free(open);
    free(closed);
    free(model);
}

Test(serval_bench, llamacpp_completion_streams_and_plain_replies_count_tokens_predicted)
{
    char *model = tiny_model();
    tu_server s = start_server(model);
    char *dev = out_dir(), *closed = out_dir();
    const char *dev_args[] = {"--developers", "4", "--duration", "2", "--keystroke-ms", "60",
                              "--debounce-ms", "100", "--stream", "--max-tokens", "8", NULL};
    free(bench(&s, "llamacpp", dev, dev_args));
    tu_json *d = check_run(dev, true, USAGE_NONE_NO_ID);
    /* Streams of 8 tokens have pieces to time: inter-token latency is measured. */
    cr_assert_gt(num(need(d, "itl_ms"), "n"), 0, "no inter-token latency from the streams");
    tu_json_free(d);
    const char *closed_args[] = {"--mode", "classic", "--concurrency", "2", "--duration", "1",
                                 "--max-tokens", "8", NULL};
    free(bench(&s, "llamacpp", closed, closed_args));
    tu_json *c = check_run(closed, false, USAGE_NONE_NO_ID);
    cr_assert_leq(num(c, "completion_tokens"), 8 * num(c, "answered"));
    tu_json_free(c);
    /* An open loop with Poisson gaps (the openai test draws gamma ones). */
    char *open = out_dir();
    const char *open_args[] = {"--mode", "classic", "--rate", "6", "--arrival", "poisson",
                               "--duration", "1", "--stream", "--max-tokens", "8", NULL};
    free(bench(&s, "llamacpp", open, open_args));
    c = check_run(open, false, USAGE_NONE_NO_ID);
    cr_assert_str_eq(need(need(c, "config"), "arrival")->str, "poisson");
    tu_json_free(c);
    free(open);

    /* --token-file: developer i uses token i mod 2; the second is wrong, so exactly the odd
     * developers' requests come back 401. Keystrokes 150 ms apart without jitter, past the
     * 100 ms debounce, so every developer sends after each keystroke whatever file it types
     * (with 60 ms keystrokes only pauses sent, and which files the seed picks from engine/
     * changes as the tree grows: once no odd developer paused in 1.5 s). */
    char *tokens = tu_temp_path(".tokens"), *mixed = out_dir();
    const char *tf = "# one per developer\n" TOKEN "\nnot-" TOKEN "\n";
    cr_assert_eq(tu_write_file(tokens, tf, strlen(tf)), 0);
    const char *tok_args[] = {"--developers", "4", "--duration", "1.5", "--keystroke-ms", "150",
                              "--jitter", "0", "--debounce-ms", "100", "--max-tokens", "4",
                              "--token-file", tokens, NULL};
    free(bench(&s, "llamacpp", mixed, tok_args));
    char *lines = NULL;
    read_json(mixed, "requests.jsonl", &lines);
    int odd_401 = 0, even_ok = 0;
    for (char *line = strtok(lines, "\n"); line; line = strtok(NULL, "\n")) {
        tu_json *r = tu_json_parse(line, strlen(line));
        cr_assert_not_null(r);
        bool odd = (int)num(r, "session") % 2 == 1;
        int status = (int)num(r, "status");
        if (odd && strcmp(need(r, "outcome")->str, "superseded") != 0)
            cr_assert_eq(status, 401, "developer %g used the wrong token: %d", num(r, "session"),
                         status);
        if (!odd)
            cr_assert_neq(status, 401, "developer %g used the right token", num(r, "session"));
        odd_401 += odd && status == 401;
        even_ok += !odd && status == 200;
        tu_json_free(r);
    }
    cr_assert(odd_401 > 0 && even_ok > 0, "401s %d, answers %d", odd_401, even_ok);
    free(lines);
    free(tokens);
    free(mixed);
    cr_assert_eq(stop_server(&s), 0);
    free(dev);
    free(closed);
    free(model);
}

/* Runs a search and checks search.json; returns the developers found per repetition. */
static void search(const tu_server *s, const char *slo_ms, int repeats, int *found,
                   const char *start)
{
    char *out = out_dir(), reps[8];
    snprintf(reps, sizeof reps, "%d", repeats);
    const char *args[] = {"--search", "--search-max", "2", "--search-repeats", reps, "--slo-ms",
                          slo_ms, "--duration", "1.2", "--keystroke-ms", "40", "--jitter", "0",
                          "--pause-prob", "1", "--pause-ms", "400", "--debounce-ms", "100",
                          "--search-start", start, "--plot", NULL};
    free(bench(s, "tabby", out, args));
    tu_json *j = read_json(out, "search.json", NULL);
    cr_assert_not_null(j, "search.json is not JSON");
    const tu_json *per = need(j, "developers_at_slo"), *trials = need(j, "trials");
    cr_assert_eq(per->n, (size_t)repeats);
    cr_assert_leq(num(j, "ci95_low"), num(j, "mean") + 1e-9);
    cr_assert_leq(num(j, "mean"), num(j, "ci95_high") + 1e-9);
    for (int r = 0; r < repeats; r++) {
        found[r] = (int)per->items[r]->num;
        /* The answer passed, and one more developer failed (or was past --search-max). */
        bool answer_passed = found[r] == 0, next_failed = found[r] == 2;
        for (size_t t = 0; t < trials->n; t++) {
            const tu_json *x = trials->items[t];
            if ((int)num(x, "rep") != r)
                continue;
            int n = (int)num(x, "developers");
            if (n == found[r])
                answer_passed = need(x, "pass")->b;
            if (n == found[r] + 1)
                next_failed = !need(x, "pass")->b;
            tu_json *sum = read_json(need(x, "dir")->str, "summary.json", NULL);
            cr_assert_not_null(sum, "trial %zu: summary.json", t);
            cr_assert_eq(num(sum, "requests"),
                         num(sum, "answered") + num(sum, "superseded") + num(sum, "errors"));
            cr_assert_eq(num(sum, "requests"), num(x, "requests"), "trial %zu", t);
            tu_json_free(sum);
        }
        cr_assert(answer_passed && next_failed, "rep %d: found %d", r, found[r]);
    }
    cr_assert_eq(num(j, "search_start"), atof(start));
    /* --plot: every trial's p95 against developers, the data beside the PNG */
    char path[600];
    bool have_gnuplot = system("command -v gnuplot >/dev/null 2>&1") == 0;
    const char *plot_files[] = {"search.dat", "search.gp", "search.png"};
    for (int i = 0; i < (have_gnuplot ? 3 : 2); i++) {
        snprintf(path, sizeof path, "%s/%s", out, plot_files[i]);
        cr_assert_eq(access(path, R_OK), 0, "--search --plot did not write %s", path);
    }
    tu_json_free(j);
    free(out);
}

Test(serval_bench, developers_at_slo_search_grows_until_a_trial_fails_and_reports_each_trial)
{
    char *model = tiny_model();
    tu_server s = start_server(model);
    int found[2];
    search(&s, "60000", 2, found, "1"); /* every trial passes: the answer is --search-max */
    cr_assert(found[0] == 2 && found[1] == 2, "found %d, %d", found[0], found[1]);
    /* no answer comes within 1 ms: none pass, from 2 the search halves down to 1 */
    search(&s, "1", 1, found, "2");
    cr_assert_eq(found[0], 0);
    cr_assert_eq(stop_server(&s), 0);
    free(model);
}

Test(serval_bench, grpc_unary_and_streamed_sessions_and_prefix_groups_report_the_cache)
{
    char *model = tiny_model();
    tu_server s = start_listener(model, "grpc");
    char *dev = out_dir(), *str = out_dir(), *cls = out_dir();
    const char *dev_args[] = {"--developers", "4", "--duration", "2", "--keystroke-ms", "60",
                              "--debounce-ms", "100", "--max-tokens", "8", NULL};
    free(bench(&s, "grpc", dev, dev_args));
    tu_json *d = check_run(dev, true, USAGE_TOKENS);
    cr_assert_eq(need(d, "server")->type, TU_JSON_NULL, "gRPC has no /metrics of its own");
    tu_json_free(d);
    /* --metrics-url names the HTTP listener: the summary gets the server's side. */
    char *log = tu_read_file(s.log_path, NULL), murl[64];
    const char *key = "serval: http listening on 127.0.0.1:", *hl = strstr(log, key);
    cr_assert_not_null(hl, "the HTTP listener's line: %s", log);
    snprintf(murl, sizeof murl, "http://127.0.0.1:%d", atoi(hl + strlen(key)));
    free(log);
    const char *str_args[] = {"--developers", "4", "--duration", "2", "--keystroke-ms", "60",
                              "--debounce-ms", "100", "--max-tokens", "8", "--stream",
                              "--metrics-url", murl, NULL};
    free(bench(&s, "grpc", str, str_args));
    d = check_run(str, true, USAGE_TOKENS);
    cr_assert_gt(num(need(d, "itl_ms"), "n"), 0, "no inter-token latency from the streams");
    const tu_json *sv = need(d, "server");
    cr_assert_eq(sv->type, TU_JSON_OBJ, "summary.server with --metrics-url");
    cr_assert_leq(num(sv, "requests_cancelled"), num(d, "superseded"),
                  "the engine cancelled no more than the client aborted");
    tu_json_free(d);
    /* Two groups sharing a 400-character head: the cache serves part of most prompts. */
    const char *cls_args[] = {"--mode", "classic", "--concurrency", "2", "--duration", "1",
                              "--max-tokens", "8", "--prefix-groups", "2", NULL};
    free(bench(&s, "grpc", cls, cls_args));
    tu_json *c = check_run(cls, false, USAGE_TOKENS);
    double hit = num(c, "prefix_cache_hit_rate");
    cr_assert(hit > 0 && hit <= 1, "prefix_cache_hit_rate %g", hit);
    tu_json_free(c);
    cr_assert_eq(stop_server(&s), 0);
    free(dev);
    free(str);
    free(cls);
    free(model);
}

/* The server's count of /v1/completions requests that ended with status (from /metrics). */
static double completions_with_status(const tu_server *s, const char *status)
{
    int fd = tu_http_connect(s->port, 10, 10);
    cr_assert_geq(fd, 0);
    cr_assert(tu_http_send(fd, "GET", "/metrics", TOKEN, NULL, NULL, 0));
    tu_http_resp r = tu_http_read(fd);
    close(fd);
    cr_assert_eq(r.status, 200, "/metrics");
    char key[128];
    snprintf(key, sizeof key,
             "serval_http_requests_total{route=\"/v1/completions\",status=\"%s\"} ", status);
    const char *p = strstr(r.body, key);
    double v = p ? atof(p + strlen(key)) : 0;
    tu_http_resp_free(&r);
    return v;
}

Test(serval_bench, typing_on_closes_the_connection_and_the_server_sees_the_abort)
{
    char *model = tiny_model();
    tu_server s = start_server(model);
    char *out = out_dir();
    /* Every keystroke 105 ms after the last, a 100 ms debounce: each request has 5 ms before
     * the next keystroke supersedes it, far less than 64 tokens take. */
    const char *args[] = {"--developers",
                          "3",
                          "--duration",
                          "1.5",
                          "--keystroke-ms",
                          "105",
                          "--jitter",
                          "0",
                          "--pause-prob",
                          "0",
                          "--pause-ms",
                          "0",
                          "--debounce-ms",
                          "100",
                          "--max-tokens",
                          "64",
                          NULL};
    free(bench(&s, "openai", out, args));
    tu_json *sum = read_json(out, "summary.json", NULL);
    double req = num(sum, "requests"), sup = num(sum, "superseded");
    cr_assert_geq(req, 10, "requests %g", req);
    cr_assert_geq(sup, 0.9 * req, "superseded %g of %g", sup, req);
    cr_assert_float_eq(num(sum, "superseded_fraction"), sup / req, 1e-6);
    usleep(300 * 1000); /* the server notices a closed connection at its next token */
    double seen = completions_with_status(&s, "499");
    cr_assert(seen >= 0.8 * sup && seen <= req, "the server saw %g client aborts of %g", seen, sup);
    /* summary.json's "server", from /metrics before and after the run: the engine ended the
     * aborted requests, timed each abort to its blocks freed, and counts what they cost. */
    const tu_json *sv = need(sum, "server");
    cr_assert_eq(sv->type, TU_JSON_OBJ, "summary.server from /metrics");
    double cancelled = num(sv, "requests_cancelled");
    cr_assert(cancelled >= 0.8 * sup && cancelled <= req, "cancelled %g of %g superseded",
              cancelled, sup);
    const tu_json *af = need(sv, "abort_to_free_ms");
    cr_assert_eq(num(af, "n"), cancelled, "one abort-to-free sample per cancelled request");
    cr_assert(num(af, "p50") <= num(af, "p95") && num(af, "p95") <= num(af, "p99"));
    cr_assert_geq(num(af, "mean"), 0);
    cr_assert_gt(num(sv, "wasted_prompt_tokens"), 0, "the aborted prompts were computed");
    cr_assert_geq(num(sv, "wasted_generated_tokens"), 0);
    tu_json_free(sum);
    cr_assert_eq(stop_server(&s), 0);
    free(out);
    free(model);
}

Test(serval_bench, the_null_server_answers_every_call_at_once_for_the_client_overhead)
{
    char *bin = tu_bin_path("serval-bench"), *log = tu_temp_path(".log");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_TRUNC);
        dup2(fd, 2);
        execl(bin, bin, "null-server", "--grpc-port", "0", (char *)NULL);
        _exit(127);
    }
    test_server_pid = pid;
    const char *key = "null-server: grpc listening on 127.0.0.1:";
    tu_server s = {.pid = pid};
    for (int i = 0; i < 200 && !s.target[0]; i++) {
        char *t = tu_read_file(log, NULL);
        const char *p = t ? strstr(t, key) : NULL;
        if (p)
            snprintf(s.target, sizeof s.target, "127.0.0.1:%d", atoi(p + strlen(key)));
        free(t);
        if (!s.target[0])
            usleep(20 * 1000);
    }
    cr_assert(s.target[0], "the null server never said its port");
    char *out = out_dir();
    const char *args[] = {"--developers", "8", "--duration", "1.5", "--keystroke-ms", "60",
                          "--debounce-ms", "100", NULL};
    free(bench(&s, "grpc", out, args));
    tu_json *sum = read_json(out, "summary.json", NULL);
    cr_assert_eq(num(sum, "errors"), 0);
    cr_assert_gt(num(sum, "answered"), 0);
    /* An instant server: what is left of the latency is the client and loopback. */
    cr_assert_lt(num(need(sum, "e2e_ms"), "p50"), 50, "e2e p50 against an instant server");
    cr_assert_geq(num(sum, "client_cpu_fraction"), 0);
    tu_json_free(sum);
    kill(pid, SIGTERM);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    test_server_pid = 0;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "null-server exits 0 on SIGTERM");
    free(out);
    free(log);
    free(bin);
}

/* A llama-server-like peer: every reply streamed chunked, its last chunk's CRLF sent 30 ms
 * after the rest (as llama-server's HTTP library may), on one kept-alive connection. */
static void *late_crlf_server(void *arg)
{
    int lfd = *(int *)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            return NULL;
        char buf[65536];
        size_t have = 0;
        for (;;) {
            ssize_t n = recv(c, buf + have, sizeof buf - 1 - have, 0);
            if (n <= 0)
                break;
            have += (size_t)n;
            buf[have] = 0;
            char *end = strstr(buf, "\r\n\r\n");
            if (!end)
                continue;
            const char *cl = strcasestr(buf, "content-length:");
            size_t body = cl ? (size_t)atol(cl + 15) : 0, head = (size_t)(end + 4 - buf);
            if (have < head + body)
                continue;
            char reply[1024];
            const char *e1 = "data: {\"content\":\" x\",\"stop\":false}\n\n";
            const char *e2 = "data: {\"content\":\"\",\"stop\":true,\"tokens_predicted\":1,"
                             "\"tokens_evaluated\":3}\n\n";
            if (strncmp(buf, "GET", 3) == 0)
                snprintf(reply, sizeof reply, "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n"
                                              "{\"status\":\"ok\"}");
            else
                snprintf(reply, sizeof reply,
                         "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n%zx\r\n%s\r\n0\r\n",
                         strlen(e1), e1, strlen(e2), e2);
            send(c, reply, strlen(reply), MSG_NOSIGNAL);
            if (strncmp(buf, "GET", 3) != 0) {
                usleep(30 * 1000);
                send(c, "\r\n", 2, MSG_NOSIGNAL);
            }
            memmove(buf, buf + head + body, have - head - body);
            have -= head + body;
        }
        close(c);
    }
}

Test(serval_bench, a_reply_whose_last_crlf_comes_late_leaves_the_connection_clean)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(lfd, 8), 0);
    cr_assert_eq(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, late_crlf_server, &lfd), 0);
    tu_server s = {0};
    snprintf(s.target, sizeof s.target, "127.0.0.1:%d", ntohs(a.sin_port));
    char *out = out_dir();
    const char *args[] = {"--mode", "classic", "--concurrency", "1", "--duration", "1",
                          "--stream", "--max-tokens", "4", NULL};
    free(bench(&s, "llamacpp", out, args));
    tu_json *sum = read_json(out, "summary.json", NULL);
    /* Before the fix the late CRLF began the next reply: status 0, "closed mid-reply". */
    cr_assert_eq(num(sum, "errors"), 0, "replies after a late trailer CRLF failed");
    cr_assert_geq(num(sum, "answered"), 5, "one connection, many replies");
    tu_json_free(sum);
    shutdown(lfd, SHUT_RDWR);
    close(lfd);
    free(out);
}

Test(serval_bench, a_server_that_is_not_there_exits_2_and_says_so)
{
    char *bin = tu_bin_path("serval-bench"), *repos = tu_source_path("engine"), *out = out_dir();
    char *argv[] = {bin, "--target", "tabby", "--url", "http://127.0.0.1:1", "--repos", repos,
                    "--out", out, "--duration", "1", NULL};
    char *err = NULL;
    cr_assert_eq(tu_run(argv, NULL, &err, 10), 2);
    cr_assert(strstr(err, "is the server up?"), "stderr: %s", err);
    free(err);
    free(bin);
    free(repos);
    free(out);
}

Test(serval_bench, help_explains_every_flag_of_the_contract)
{
    char *bin = tu_bin_path("serval-bench");
    char *argv[] = {bin, "--help", NULL}, *out = NULL;
    cr_assert_eq(tu_run(argv, &out, NULL, 10), 0);
    const char *flags[] = {"--target", "--url", "--token", "--developers", "--duration", "--repos",
                           "--out", "--mode", "--session", "--keystroke-ms", "--debounce-ms",
                           "--concurrency", "--rate", "--arrival", "--stream", "--slo-ms",
                           "--max-tokens", "--prompt-chars", "--search", "--search-repeats",
                           "--min-answered", "--plot", "--sweep", "--prefix-groups", "--events",
                           "--token-file", "compare", "--metrics-url", "--search-start",
                           "null-server"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_assert(strstr(out, flags[i]), "--help does not mention %s", flags[i]);
    free(out);
    free(bin);
}

/* ---- quality scoring (bench_quality, compiled in from bench/serval_bench/report.c) ---- */

typedef struct quality_case {
    const char *suggestion, *truth;
    double em, es; /* es < -0.5: not scored */
    bool accept;
    size_t ref_len;
} quality_case;

Test(serval_bench, quality_compares_a_suggestion_with_as_many_lines_of_what_is_typed_next)
{
    const quality_case cases[] = {
        /* the rest of the line, exactly: a match, and the developer takes it */
        {"(n - 1)\n", "(n - 1)\n    return x\n", 1, 1, true, 7},
        /* two lines against the next two lines; trailing whitespace does not count */
        {"a = 1\nb = 2   ", "a = 1\nb = 2\nc = 3\n", 1, 1, false, 11},
        /* one character off in four: similarity 0.75, no match, not taken */
        {"abcd", "abed\nnext", 0, 0.75, false, 4},
        /* a prefix of the line is taken (it is what gets typed) but does not match the line */
        {"ret", "return x\n", 0, 3.0 / 8.0, true, 8},
        /* whitespace only: no suggestion, nothing to score */
        {" \n\t", "x = 1\n", -1, -1, false, 0},
        /* past the end of the file: scored against what there is */
        {"end\nmore", "end", 0, 3.0 / 8.0, false, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const quality_case *c = &cases[i];
        double em, es;
        bool accept;
        size_t ref;
        bench_quality(c->suggestion, c->truth, strlen(c->truth), &em, &es, &accept, &ref);
        cr_assert_float_eq(em, c->em, 1e-9, "case %zu: exact match %g", i, em);
        cr_assert_float_eq(es, c->es, 1e-9, "case %zu: edit similarity %g", i, es);
        cr_assert_eq(accept, c->accept, "case %zu: accepted", i);
        cr_assert_eq(ref, c->ref_len, "case %zu: reference length %zu", i, ref);
    }
}

Test(serval_bench, gamma_gaps_keep_their_mean_and_poisson_gaps_theirs)
{
    uint64_t rng = 42;
    const double shapes[] = {0.5, 1.0, 4.0};
    for (int k = 0; k < 3; k++) {
        double sum = 0;
        for (int i = 0; i < 200000; i++)
            sum += bench_rand_gamma(&rng, shapes[k], 100.0);
        cr_assert_float_eq(sum / 200000, 100.0, 2.0, "shape %g: mean %g", shapes[k], sum / 200000);
    }
    double sum = 0;
    for (int i = 0; i < 200000; i++)
        sum += bench_rand_exp(&rng, 100.0);
    cr_assert_float_eq(sum / 200000, 100.0, 2.0, "exponential mean %g", sum / 200000);
}
