/* test_abuse.c — hostile clients against a real `serval serve` (default model, port 0 on
 * 127.0.0.1, a token): slowloris on headers and bodies, 512 idle gRPC calls, 1,000 concurrent
 * HTTP connections at 10x the engine's capacity, 4 MiB bodies and prompts on HTTP and gRPC,
 * deeply nested JSON on every POST route, and an events flood. One test runs the attacks in
 * turn against one server (restarted only when an attack killed it) and checks after each that
 * the process is alive, serves a normal completion within PROBE_S seconds, and keeps its
 * memory bounded (VmHWM below RSS_CAP_MIB, VmRSS growing less than RSS_GROWTH_MIB per attack).
 * Every attack runs to the end even when an earlier one failed, and the table of what the
 * server answered goes to stderr and to $SERVAL_ABUSE_REPORT (default
 * /tmp/serval_abuse_report.md); tests/rpc/ABUSE.md records a run. Counts and waits are
 * bounded: the whole run takes about two and a half minutes on 2 cores. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "testutil.h"
#include "tu_http.h"
#include "tu_server.h"

#define TOKEN "abuse_test_token"   /* the attacker's */
#define TOKEN2 "abuse_other_user"  /* another user, who must still be served */
#define PROBE_S 10.0          /* a normal completion must be served again within this */
#define RSS_CAP_MIB 1536      /* VmHWM stays below 1.5 GiB through the whole run */
#define RSS_GROWTH_MIB 200    /* VmRSS after an attack minus before it */
#define SLOW_DEADLINE_S 16.0  /* a slowloris connection is cut by then (the ~10-15 s deadline) */
#define SLOW_WAIT_S 20.0      /* how long the slowloris attack watches */
#define FLOOD_CONNS 1000      /* concurrent HTTP connections ... */
#define FLOOD_WAIT_S 60.0     /* ... each answered (or closed) within this */
#define REFUSE_S 5.0          /* an excess request is refused within this */
#define BIG_BODY (4u << 20)   /* the oversized HTTP body */
#define BIG_ANSWER_S 3.0      /* ... refused within this */
#define EVENTS_N 10000        /* events posted in the flood ... */
#define EVENTS_BYTES 7680     /* ... this large each (under the 8 KiB per event): 73 MiB */
#define EVENTS_CAP_MIB 64     /* the events files of one day stay below this (the default) */
/* The engine's capacity for the flood: sequences decoded together plus queued requests. */
static const char *const server_flags[] = {"--max-running", "8", "--max-waiting", "92",
                                           "--token", TOKEN2, NULL};
#define CAPACITY 100

/* ---- the server under attack ---------------------------------------------------------------- */

typedef struct target {
    tu_server srv;
    int http, grpc;   /* ports */
    int restarts;
} target;

static double now_s(void) { return eng_clock_ms() / 1e3; }

static void target_start(target *t)
{
    signal(SIGPIPE, SIG_IGN);
    t->srv = tu_server_start("http", TOKEN, true, server_flags);
    t->http = t->srv.port;
    t->grpc = 0;
    const char *key = "serval: grpc listening on 127.0.0.1:";
    for (int i = 0; i < 200 && t->grpc <= 0; i++) {
        char *log = tu_read_file(t->srv.log_path, NULL);
        const char *p = log ? strstr(log, key) : NULL;
        if (p)
            t->grpc = atoi(p + strlen(key));
        free(log);
        if (t->grpc <= 0)
            usleep(50 * 1000);
    }
    cr_assert_gt(t->grpc, 0, "no gRPC listener line in %s", t->srv.log_path);
}

/* 0 while running; else how it ended (128+signal for a signal), and the process is reaped. */
static int target_exited(target *t)
{
    int st;
    pid_t p = waitpid(t->srv.pid, &st, WNOHANG);
    if (p == 0)
        return 0;
    if (p != t->srv.pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* VmRSS and VmHWM of the server in MiB (0 when unreadable). */
static void target_rss(const target *t, double *rss, double *hwm)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)t->srv.pid);
    char *s = tu_read_file(path, NULL);
    const char *r = s ? strstr(s, "VmRSS:") : NULL, *h = s ? strstr(s, "VmHWM:") : NULL;
    *rss = r ? atof(r + 6) / 1024.0 : 0;
    *hwm = h ? atof(h + 6) / 1024.0 : 0;
    free(s);
}

/* ---- requests (the tu_http.h client) -------------------------------------------------------- */

/* A connection whose receive and send (and connect) time out after timeout_s; -1 if none. */
static int hc_connect(int port, double timeout_s)
{
    return tu_http_connect(port, timeout_s, timeout_s);
}

/* The head of a JSON POST by the attacker. */
static int head_format(char *buf, size_t cap, const char *path, size_t body_len)
{
    return tu_http_head(buf, cap, "POST", path, TOKEN, NULL, body_len);
}

/* Reads one response; its status, 0 when nothing complete came back. */
static int hc_read(int fd)
{
    tu_http_resp r = tu_http_read(fd);
    int st = r.status;
    tu_http_resp_free(&r);
    return st;
}

/* One POST on a fresh connection; the status (0: none within timeout_s). */
static int post(int port, const char *path, const char *body, size_t len, double timeout_s)
{
    int fd = hc_connect(port, timeout_s);
    if (fd < 0)
        return 0;
    char head[512];
    int n = head_format(head, sizeof head, path, len);
    /* A server may answer (413) and close before the body is all sent: read its answer even
     * when sending failed (the deep-JSON row saw 0 for /v1/health once that way). */
    if (tu_http_send_all(fd, head, (size_t)n))
        tu_http_send_all(fd, body, len);
    int st = hc_read(fd);
    close(fd);
    return st;
}

/* Seconds until a normal completion is answered 200 (retrying until PROBE_S), -1 if never. */
static double probe(const target *t)
{
    static const char req[] = "{\"prompt\":\"def add(a, b):\",\"max_tokens\":4}";
    double t0 = now_s();
    while (now_s() - t0 < PROBE_S) {
        double left = PROBE_S - (now_s() - t0);
        if (post(t->http, "/v1/completions", req, sizeof req - 1, left) == 200)
            return now_s() - t0;
        usleep(100 * 1000);
    }
    return -1;
}

/* ---- the report ---------------------------------------------------------------------------- */

typedef struct row {
    char attack[64];
    char answer[768];
    double recover_s;   /* probe: seconds until a normal completion was served; -1 never */
    double rss, hwm;    /* MiB after the attack */
    double growth;      /* VmRSS after minus before */
    bool survived;      /* alive, served, bounded */
    bool answered;      /* the attack's own criterion */
} row;

static row rows[16];
static int n_rows;

/* After an attack: alive? serving? bounded? Restarts a dead server for the next attack. */
static void settle(target *t, row *r, double rss_before)
{
    int ex = target_exited(t);
    if (ex) {
        char *log = tu_read_file(t->srv.log_path, NULL);
        size_t n = log ? strlen(log) : 0;
        fprintf(stderr, "abuse: %s: the server died (%d); its log ends:\n%s\n", r->attack, ex,
                log ? log + (n > 2000 ? n - 2000 : 0) : "");
        free(log);
        snprintf(r->answer + strlen(r->answer), sizeof r->answer - strlen(r->answer),
                 "; SERVER DIED (%s %d)", ex > 128 ? "signal" : "exit", ex > 128 ? ex - 128 : ex);
        r->recover_s = -1;
        r->survived = false;
        target_start(t);
        t->restarts++;
        return;
    }
    r->recover_s = probe(t);
    target_rss(t, &r->rss, &r->hwm);
    r->growth = r->rss - rss_before;
    r->survived = r->recover_s >= 0 && r->hwm < RSS_CAP_MIB && r->growth < RSS_GROWTH_MIB;
}

static row *row_new(const char *attack)
{
    cr_assert_lt(n_rows, 16);
    row *r = &rows[n_rows++];
    memset(r, 0, sizeof *r);
    snprintf(r->attack, sizeof r->attack, "%s", attack);
    return r;
}

static void report(void)
{
    const char *path = getenv("SERVAL_ABUSE_REPORT");
    FILE *f = fopen(path && *path ? path : "/tmp/serval_abuse_report.md", "w");
    FILE *outs[2] = {stderr, f};
    for (int k = 0; k < 2; k++) {
        if (!outs[k])
            continue;
        fprintf(outs[k],
                "| attack | what the server answered | normal completion served again after | "
                "VmRSS / VmHWM after (growth) | result |\n|---|---|---|---|---|\n");
        for (int i = 0; i < n_rows; i++) {
            row *r = &rows[i];
            char rec[32];
            if (r->recover_s < 0)
                snprintf(rec, sizeof rec, "never (%.0f s)", PROBE_S);
            else
                snprintf(rec, sizeof rec, "%.2f s", r->recover_s);
            fprintf(outs[k], "| %s | %s | %s | %.0f / %.0f MiB (%+.0f) | %s |\n", r->attack,
                    r->answer, rec, r->rss, r->hwm, r->growth,
                    r->survived && r->answered ? "pass" : "FAIL");
        }
    }
    if (f)
        fclose(f);
}

/* ---- slowloris ----------------------------------------------------------------------------- */

#define SLOW_N 4 /* connections of each kind */

/* 4 connections dribble their headers a byte a second, 4 more send complete headers and then
 * dribble the body; each must be cut by SLOW_DEADLINE_S. */
static void attack_slowloris(target *t)
{
    row *rh = row_new("slowloris: headers, 1 byte/s x 4 conns");
    row *rb = row_new("slowloris: body, 1 byte/s x 4 conns");
    double rss0, hwm0;
    target_rss(t, &rss0, &hwm0);
    static const char hdr[] = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Authorization: Bearer " TOKEN "\r\nX-Slow: "
                              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fd[2 * SLOW_N];
    double closed[2 * SLOW_N];
    int status[2 * SLOW_N];
    size_t off[2 * SLOW_N];
    double t0 = now_s();
    for (int i = 0; i < 2 * SLOW_N; i++) {
        fd[i] = hc_connect(t->http, 2);
        cr_assert(fd[i] >= 0);
        closed[i] = -1;
        status[i] = 0;
        off[i] = 0;
        if (i >= SLOW_N) {
            char head[512];
            int n = head_format(head, sizeof head, "/v1/completions", 100000);
            tu_http_send_all(fd[i], head, (size_t)n);
        }
    }
    while (now_s() - t0 < SLOW_WAIT_S) {
        int open = 0;
        for (int i = 0; i < 2 * SLOW_N; i++) {
            if (closed[i] >= 0)
                continue;
            char b = i < SLOW_N ? hdr[off[i]++ % (sizeof hdr - 1)] : (off[i]++ ? ' ' : '{');
            bool sent = send(fd[i], &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1;
            struct pollfd p = {.fd = fd[i], .events = POLLIN};
            char buf[512];
            bool gone = false;
            if (poll(&p, 1, 0) > 0) {
                ssize_t k = recv(fd[i], buf, sizeof buf - 1, MSG_DONTWAIT);
                if (k > 0) {
                    buf[k] = 0;
                    if (!status[i] && !strncmp(buf, "HTTP/1.", 7))
                        status[i] = atoi(buf + 9);
                    k = recv(fd[i], buf, sizeof buf, MSG_DONTWAIT);
                }
                gone = k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
            }
            if (!sent || gone) {
                closed[i] = now_s() - t0;
                continue;
            }
            open++;
        }
        if (!open)
            break;
        usleep(1000 * 1000);
    }
    for (int kind = 0; kind < 2; kind++) {
        row *r = kind ? rb : rh;
        double worst = 0;
        int cut = 0, answered = 0, code = 0;
        for (int i = kind * SLOW_N; i < (kind + 1) * SLOW_N; i++) {
            if (closed[i] >= 0) {
                cut++;
                worst = closed[i] > worst ? closed[i] : worst;
            }
            if (status[i]) {
                answered++;
                code = status[i];
            }
        }
        if (cut == SLOW_N)
            snprintf(r->answer, sizeof r->answer, "all %d cut, the last after %.1f s%s", SLOW_N,
                     worst, "");
        else
            snprintf(r->answer, sizeof r->answer, "%d of %d still open after %.0f s", SLOW_N - cut,
                     SLOW_N, SLOW_WAIT_S);
        if (answered)
            snprintf(r->answer + strlen(r->answer), sizeof r->answer - strlen(r->answer),
                     " (%d answered %d first)", answered, code);
        r->answered = cut == SLOW_N && worst <= SLOW_DEADLINE_S;
    }
    for (int i = 0; i < 2 * SLOW_N; i++)
        close(fd[i]);
    settle(t, rh, rss0);
    rb->recover_s = rh->recover_s;
    rb->rss = rh->rss, rb->hwm = rh->hwm, rb->growth = rh->growth, rb->survived = rh->survived;
}

/* ---- gRPC (the Python peer) ---------------------------------------------------------------- */

/* Runs tests/rpc/abuse_grpc.py MODE against the server; its ANSWER line goes to r->answer. */
static bool run_grpc_peer(const target *t, row *r, const char *mode, int timeout_s)
{
    char *script = tu_source_path("tests/rpc/abuse_grpc.py");
    char tgt[64];
    snprintf(tgt, sizeof tgt, "127.0.0.1:%d", t->grpc);
    char *argv[] = {"/usr/bin/python3", script, (char *)mode, "--target", tgt, "--token", TOKEN,
                    "--stubs", SERVAL_PY_STUBS, "--probe-token", TOKEN2, NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, timeout_s);
    const char *a = out ? strstr(out, "ANSWER: ") : NULL;
    if (a) {
        snprintf(r->answer, sizeof r->answer, "%.*s", (int)strcspn(a + 8, "\n"), a + 8);
    } else {
        const char *e = err ? err : "";
        size_t n = strlen(e);
        snprintf(r->answer, sizeof r->answer, "peer failed (%d): %.300s", rc,
                 e + (n > 300 ? n - 300 : 0));
        for (char *c = r->answer; *c; c++)
            if (*c == '\n' || *c == '|')
                *c = ' ';
    }
    free(out);
    free(err);
    free(script);
    return rc == 0;
}

static void attack_idle_grpc(target *t)
{
    row *r = row_new("512 idle gRPC calls (no message sent)");
    double rss0, hwm0;
    target_rss(t, &rss0, &hwm0);
    r->answered = run_grpc_peer(t, r, "idle", 90);
    settle(t, r, rss0);
}

static void attack_big_grpc(target *t)
{
    row *r = row_new("gRPC 4.5 MiB and 3.9 MiB prompts");
    double rss0, hwm0;
    target_rss(t, &rss0, &hwm0);
    r->answered = run_grpc_peer(t, r, "big", 150);
    settle(t, r, rss0);
}

/* ---- 1,000 concurrent connections ---------------------------------------------------------- */

typedef struct conn {
    int fd;
    int status;        /* 0: none yet */
    double done;       /* seconds from the start when answered or closed; -1: not yet */
    size_t sent;
    char in[1024];
    size_t got;
} conn;

static void attack_flood(target *t)
{
    row *r = row_new("1,000 concurrent connections (10x capacity)");
    double rss0, hwm0;
    target_rss(t, &rss0, &hwm0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < FLOOD_CONNS + 64 && rl.rlim_max >= FLOOD_CONNS + 64) {
        rl.rlim_cur = FLOOD_CONNS + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    static const char body[] = "{\"prompt\":\"def f(x):\",\"max_tokens\":4}";
    char req[512];
    int req_len = head_format(req, sizeof req, "/v1/completions", sizeof body - 1);
    memcpy(req + req_len, body, sizeof body);
    req_len += (int)sizeof body - 1;
    conn *c = calloc(FLOOD_CONNS, sizeof *c);
    struct pollfd *p = calloc(FLOOD_CONNS, sizeof *p);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t->http)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    double t0 = now_s();
    for (int i = 0; i < FLOOD_CONNS; i++) {
        c[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        c[i].done = -1;
        if (c[i].fd < 0 ||
            (connect(c[i].fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)) {
            c[i].done = now_s() - t0; /* refused at connect */
        }
    }
    int left = FLOOD_CONNS;
    for (int i = 0; i < FLOOD_CONNS; i++)
        left -= c[i].done >= 0;
    while (left > 0 && now_s() - t0 < FLOOD_WAIT_S) {
        int n = 0;
        int idx[FLOOD_CONNS];
        for (int i = 0; i < FLOOD_CONNS; i++) {
            if (c[i].done >= 0)
                continue;
            p[n].fd = c[i].fd;
            p[n].events = (short)(c[i].sent < (size_t)req_len ? POLLOUT : POLLIN);
            p[n].revents = 0;
            idx[n++] = i;
        }
        if (poll(p, (nfds_t)n, 200) <= 0)
            continue;
        for (int k = 0; k < n; k++) {
            conn *x = &c[idx[k]];
            if (!p[k].revents)
                continue;
            if (x->sent < (size_t)req_len && (p[k].revents & POLLOUT)) {
                ssize_t w = send(x->fd, req + x->sent, (size_t)req_len - x->sent, MSG_NOSIGNAL);
                if (w > 0) {
                    x->sent += (size_t)w;
                    continue;
                }
            }
            ssize_t got = recv(x->fd, x->in + x->got, sizeof x->in - 1 - x->got, 0);
            if (got > 0)
                x->got += (size_t)got;
            x->in[x->got] = 0;
            if (x->got >= 12 && !strncmp(x->in, "HTTP/1.", 7)) {
                x->status = atoi(x->in + 9);
            } else if (got > 0 || (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
                continue;
            }
            x->done = now_s() - t0;
            left--;
        }
    }
    int ok = 0, refused = 0, closed = 0, other = 0, pending = 0;
    double worst_refusal = 0;
    for (int i = 0; i < FLOOD_CONNS; i++) {
        if (c[i].done < 0)
            pending++;
        else if (c[i].status == 200)
            ok++;
        else if (c[i].status == 503 || c[i].status == 429 || c[i].status == 0) {
            c[i].status ? refused++ : closed++;
            worst_refusal = c[i].done > worst_refusal ? c[i].done : worst_refusal;
        } else
            other++;
        if (c[i].fd >= 0)
            close(c[i].fd);
    }
    snprintf(r->answer, sizeof r->answer,
             "%d x 200, %d x 503/429, %d closed unanswered, %d other, %d no answer after %.0f s; "
             "slowest refusal %.1f s, all done after %.1f s",
             ok, refused, closed, other, pending, FLOOD_WAIT_S, worst_refusal, now_s() - t0);
    r->answered = pending == 0 && other == 0 && ok > 0 && worst_refusal <= REFUSE_S;
    free(c);
    free(p);
    settle(t, r, rss0);
}

/* ---- 4 MiB bodies ---------------------------------------------------------------------- */

/* Sends a BIG_BODY-byte request body as fast as the server takes it, stopping when an answer
 * arrives; the status (0: closed without one) and the seconds it took. */
static int post_big(int port, const char *path, const char *body, size_t len, double *secs)
{
    double t0 = now_s();
    int fd = hc_connect(port, 10);
    if (fd < 0) {
        *secs = now_s() - t0;
        return 0;
    }
    char head[512];
    int n = head_format(head, sizeof head, path, len);
    tu_http_send_all(fd, head, (size_t)n);
    size_t off = 0;
    while (off < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        if (poll(&p, 1, 10000) <= 0)
            break;
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            break;
        ssize_t w = send(fd, body + off, len - off > 65536 ? 65536 : len - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0 && errno != EAGAIN)
            break;
        if (w > 0)
            off += (size_t)w;
    }
    int st = hc_read(fd);
    close(fd);
    *secs = now_s() - t0;
    return st;
}

static void attack_big_http(target *t)
{
    row *r = row_new("HTTP 4 MiB bodies x 8, 1000 KiB prompt x 2");
    double rss0, hwm0;
    target_rss(t, &rss0, &hwm0);
    char *body = malloc(BIG_BODY + 64);
    size_t n = (size_t)sprintf(body, "{\"prompt\":\"");
    memset(body + n, 'x', BIG_BODY - n - 2);
    memcpy(body + BIG_BODY - 2, "\"}", 2);
    static const char *const routes[] = {"/v1/completions", "/v1/chat/completions",
                                         "/completion", "/tokenize"};
    int codes[600] = {0};
    double worst = 0;
    bool fast = true;
    for (int i = 0; i < 8; i++) {
        double s;
        int st = post_big(t->http, routes[i % 4], body, BIG_BODY, &s);
        codes[st < 600 && st >= 0 ? st : 0]++;
        worst = s > worst ? s : worst;
        fast = fast && s <= BIG_ANSWER_S && st != 200;
    }
    /* Just under the 1 MiB body limit: a 1000 KiB prompt passes the body check and must be
     * refused by length before it is tokenized. */
    size_t m = 1000 * 1024;
    n = (size_t)sprintf(body, "{\"prompt\":\"");
    memset(body + n, 'x', m);
    memcpy(body + n + m, "\",\"max_tokens\":1}", 18);
    double worst_near = 0;
    int near_code = 0;
    for (int i = 0; i < 2; i++) {
        double s;
        near_code = post_big(t->http, "/v1/completions", body, strlen(body), &s);
        worst_near = s > worst_near ? s : worst_near;
        fast = fast && s <= BIG_ANSWER_S && near_code != 200;
    }
    char got[128] = "";
    for (int s = 0; s < 600; s++)
        if (codes[s])
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%d x %d",
                     got[0] ? ", " : "", codes[s], s);
    snprintf(r->answer, sizeof r->answer,
             "4 MiB: %s (0: closed), slowest %.2f s; 1000 KiB prompt: %d, slowest %.2f s", got,
             worst, near_code, worst_near);
    r->answered = fast;
    free(body);
    settle(t, r, rss0);
}

/* ---- deep JSON ------------------------------------------------------------------------------ */

static void attack_deep_json(target *t, int depth)
{
    char name[64];
    snprintf(name, sizeof name, "JSON nested %d deep, every POST route", depth);
    row *r = row_new(name);
    static const char *const routes[] = {"/v1/completions", "/v1/events",
                                         "/v1/chat/completions", "/v1beta/chat/completions",
                                         "/completion", "/tokenize", "/v1/health", "/embeddings"};
    /* arrays {"prompt":[[[...]]]} and objects {"a":{"a":{...}}}: a printer or validator that
     * recurses spends more stack per object level */
    char *arr = malloc(16 + 2 * (size_t)depth), *obj = malloc(16 + 6 * (size_t)depth);
    size_t n_arr = (size_t)sprintf(arr, "{\"prompt\":");
    memset(arr + n_arr, '[', (size_t)depth);
    memset(arr + n_arr + (size_t)depth, ']', (size_t)depth);
    n_arr += 2 * (size_t)depth;
    arr[n_arr++] = '}';
    size_t n_obj = 0;
    for (int i = 0; i < depth; i++, n_obj += 5)
        memcpy(obj + n_obj, "{\"a\":", 5);
    obj[n_obj++] = '1';
    memset(obj + n_obj, '}', (size_t)depth);
    n_obj += (size_t)depth;
    double rss0, hwm0;
    target_rss(t, &rss0, &hwm0);
    bool good = true;
    char *a = r->answer;
    for (size_t i = 0; i < 2 * (sizeof routes / sizeof routes[0]); i++) {
        size_t k = i % (sizeof routes / sizeof routes[0]);
        bool is_obj = i >= sizeof routes / sizeof routes[0];
        int st = post(t->http, routes[k], is_obj ? obj : arr, is_obj ? n_obj : n_arr, 10);
        int ex = target_exited(t);
        size_t used = strlen(a);
        snprintf(a + used, sizeof r->answer - used, "%s%s%s %d", used ? ", " : "",
                 k == 0 ? (is_obj ? "objects: " : "arrays: ") : "", routes[k] + 1, st);
        if (ex) {
            used = strlen(a);
            snprintf(a + used, sizeof r->answer - used, " KILLED THE SERVER (%s %d)",
                     ex > 128 ? "signal" : "exit", ex > 128 ? ex - 128 : ex);
            target_start(t);
            t->restarts++;
            target_rss(t, &rss0, &hwm0);
            good = false;
            continue;
        }
        /* a refusal (4xx) or, for routes that ignore bodies, their normal answer (/embeddings
         * is 501: no embedding model) */
        if (st == 0 || (st >= 500 && st != 501))
            good = false;
    }
    r->answered = good;
    free(arr);
    free(obj);
    settle(t, r, rss0);
    if (!good)
        r->survived = false;
}

/* ---- events flood --------------------------------------------------------------------------- */

/* Lines in the files of dir (the events written). */
static long dir_lines(const char *dir)
{
    DIR *d = opendir(dir);
    long lines = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        size_t n = 0;
        char *text = e->d_name[0] != '.' ? tu_read_file(p, &n) : NULL;
        for (size_t i = 0; i < n; i++)
            lines += text[i] == '\n';
        free(text);
    }
    if (d)
        closedir(d);
    return lines;
}

static double dir_mib(const char *dir)
{
    DIR *d = opendir(dir);
    double total = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char p[4400];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && stat(p, &st) == 0)
            total += (double)st.st_size;
    }
    if (d)
        closedir(d);
    return total / 1048576.0;
}

static void attack_events(target *t)
{
    row *r = row_new("events flood: 10,000 x 7.5 KiB");
    double rss0, hwm0;
    target_rss(t, &rss0, &hwm0);
    char *body = malloc(EVENTS_BYTES + 64);
    size_t n = (size_t)sprintf(body, "{\"type\":\"view\",\"completion_id\":\"");
    memset(body + n, 'e', EVENTS_BYTES - n - 2);
    memcpy(body + EVENTS_BYTES - 2, "\"}", 2);
    char head[512];
    int hn = head_format(head, sizeof head, "/v1/events", EVENTS_BYTES);
    int codes[600] = {0};
    int fd = -1;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/events", t->srv.data_dir);
    long lines0 = dir_lines(dir); /* earlier attacks may have written some */
    double t0 = now_s();
    for (int i = 0; i < EVENTS_N && now_s() - t0 < 60; i++) {
        if (fd < 0 && (fd = hc_connect(t->http, 10)) < 0)
            break;
        int st = 0;
        if (tu_http_send_all(fd, head, (size_t)hn) && tu_http_send_all(fd, body, EVENTS_BYTES))
            st = hc_read(fd);
        codes[st]++;
        if (st == 0) { /* closed: a new connection next time */
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    double secs = now_s() - t0;
    double mib = dir_mib(dir);
    char got[160] = "";
    for (int s = 0; s < 600; s++)
        if (codes[s])
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%d x %d",
                     got[0] ? ", " : "", codes[s], s);
    long lines = dir_lines(dir) - lines0;
    snprintf(r->answer, sizeof r->answer,
             "%s in %.1f s; events files %.1f MiB (cap %d MiB), %ld events written", got, secs,
             mib, EVENTS_CAP_MIB, lines);
    /* under the cap, the excess refused out loud (429), and every 200 really written */
    r->answered = mib <= EVENTS_CAP_MIB && codes[429] > 0 && lines == codes[200];
    free(body);
    settle(t, r, rss0);
}

/* ---- the suite ------------------------------------------------------------------------------ */

Test(abuse, no_request_crashes_starves_or_silently_drops_the_other_users, .timeout = 420)
{
    target t = {0};
    target_start(&t);
    double first = probe(&t);
    cr_assert_geq(first, 0, "the server does not serve a normal completion before any attack");
    double rss, hwm;
    target_rss(&t, &rss, &hwm);
    fprintf(stderr, "abuse: baseline: a completion in %.2f s, VmRSS %.0f MiB, VmHWM %.0f MiB\n",
            first, rss, hwm);
    double t0 = now_s();
    attack_slowloris(&t);
    attack_idle_grpc(&t);
    attack_flood(&t);
    attack_big_http(&t);
    attack_big_grpc(&t);
    attack_deep_json(&t, 1900);
    attack_deep_json(&t, 100000);
    attack_events(&t);
    fprintf(stderr, "abuse: %d attacks in %.0f s, %d server restarts\n", n_rows, now_s() - t0,
            t.restarts);
    report();
    int ex = target_exited(&t);
    if (!ex)
        tu_server_stop(&t.srv);
    for (int i = 0; i < n_rows; i++) {
        cr_expect(rows[i].answered, "%s: %s", rows[i].attack, rows[i].answer);
        cr_expect(rows[i].survived,
                  "%s: after it the server %s (normal completion after %.2f s, VmRSS %.0f MiB "
                  "(%+.0f), VmHWM %.0f MiB; bounds: %.0f s, +%d MiB, %d MiB)",
                  rows[i].attack, rows[i].recover_s < 0 ? "did not serve" : "served",
                  rows[i].recover_s, rows[i].rss, rows[i].growth, rows[i].hwm, PROBE_S,
                  RSS_GROWTH_MIB, RSS_CAP_MIB);
    }
}
