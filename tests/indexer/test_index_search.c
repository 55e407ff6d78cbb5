/* test_index_search.c — how the hybrid search ranks code queries (completion prefixes): the
 * chunk that defines the name being called comes before the chunks that merely call it, in
 * Python and in C, a name nobody defines leaves the two lists' ranking alone, and a definition
 * is kept under a similarity floor that drops the rest. */
#include "idx_test_util.h"

/* A small repository in which one function is defined once and called from several files,
 * each caller sharing more words with the query than the definition does. */
static const char *const pool_py =
    "import socket\n"
    "import threading\n\n\n"
    "class ConnectionPool:\n"
    "    def __init__(self, size):\n"
    "        self.size = size\n"
    "        self.lock = threading.Lock()\n"
    "        self.free = []\n\n"
    "    def open_connection(self, host, port, timeout=10.0):\n"
    "        with self.lock:\n"
    "            if self.free:\n"
    "                return self.free.pop()\n"
    "        sock = socket.create_connection((host, port), timeout)\n"
    "        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "        return sock\n";
static const char *const client_py =
    "from pool import ConnectionPool\n\n\n"
    "def fetch(pool, request, host, port):\n"
    "    sock = pool.open_connection(host, port)\n"
    "    sock.sendall(request.encode())\n"
    "    reply = sock.recv(65536)\n"
    "    return reply.decode()\n";
static const char *const health_py =
    "from pool import ConnectionPool\n\n\n"
    "def check_health(pool, host, port):\n"
    "    try:\n"
    "        sock = pool.open_connection(host, port, timeout=1.0)\n"
    "    except OSError:\n"
    "        return False\n"
    "    sock.sendall(b'PING')\n"
    "    return sock.recv(4) == b'PONG'\n";
static const char *const retry_py =
    "import time\n\n\n"
    "def with_retries(pool, host, port, attempts):\n"
    "    for i in range(attempts):\n"
    "        try:\n"
    "            return pool.open_connection(host, port)\n"
    "        except OSError:\n"
    "            time.sleep(0.1 * (i + 1))\n"
    "    raise OSError('no connection to %s:%d' % (host, port))\n";
/* The file being edited: the query is its last lines, ending where a call is being typed. */
static const char *const query_py =
    "def send_batch(pool, host, port, requests):\n"
    "    replies = []\n"
    "    for request in requests:\n"
    "        sock = pool.open_connection(";

static const char *const buf_c =
    "#include <stddef.h>\n"
    "#include \"buf.h\"\n\n"
    "static int\n"
    "parse_header_line(struct buf *b, struct header *h)\n"
    "{\n"
    "    const char *colon = memchr(b->data + b->pos, ':', b->len - b->pos);\n"
    "    if (!colon)\n"
    "        return -1;\n"
    "    h->name_len = (size_t)(colon - (b->data + b->pos));\n"
    "    return 0;\n"
    "}\n";
static const char *const http_c =
    "#include \"buf.h\"\n\n"
    "int http_read_headers(struct buf *b, struct header *headers, size_t max)\n"
    "{\n"
    "    size_t n = 0;\n"
    "    while (n < max && b->pos < b->len) {\n"
    "        if (parse_header_line(b, &headers[n]) < 0)\n"
    "            return -1;\n"
    "        n++;\n"
    "    }\n"
    "    return (int)n;\n"
    "}\n";
static const char *const proxy_c =
    "#include \"buf.h\"\n\n"
    "int proxy_copy_headers(struct buf *b, struct header *h, struct buf *out)\n"
    "{\n"
    "    int rc = parse_header_line(b, h);\n"
    "    if (rc < 0)\n"
    "        return rc;\n"
    "    return buf_append(out, b->data + b->pos, h->name_len);\n"
    "}\n";
static const char *const query_c =
    "int mail_read_headers(struct buf *b, struct header *headers, size_t max)\n"
    "{\n"
    "    size_t n = 0;\n"
    "    while (n < max && b->pos < b->len) {\n"
    "        int rc = parse_header_line(";

typedef struct fixture {
    char *repo, *data;
    idx_index *ix;
} fixture;

static fixture open_repo(void)
{
    fixture f = {tu_idx_tempdir("-repo"), tu_idx_tempdir("-data"), NULL};
    tu_put(f.repo, "pool.py", pool_py);
    tu_put(f.repo, "client.py", client_py);
    tu_put(f.repo, "health.py", health_py);
    tu_put(f.repo, "retry.py", retry_py);
    tu_put(f.repo, "src/buf.c", buf_c);
    tu_put(f.repo, "src/http.c", http_c);
    tu_put(f.repo, "src/proxy.c", proxy_c);
    static tu_embed_state es;
    idx_embedder emb = tu_idx_embedder(&es);
    eng_err err;
    cr_assert_eq(idx_open(f.data, &emb, &f.ix, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(idx_index_repo(f.ix, f.repo, "git@x:app.git", NULL, NULL, NULL, NULL, &err),
                 ENG_OK, "%s", err.msg);
    return f;
}

static void close_repo(fixture *f)
{
    idx_close(f->ix);
    tu_rmtree(f->repo), tu_rmtree(f->data);
    free(f->repo), free(f->data);
}

static idx_hit *run(idx_index *ix, const char *text, const char *current, idx_mode mode,
                    float min_similarity, size_t *n)
{
    idx_query q = {.text = text, .top_k = 10, .git_url = "git@x:app.git", .mode = mode,
                   .exclude_path = current, .exclude_text = text,
                   .min_similarity = min_similarity};
    idx_hit *h;
    eng_err err;
    cr_assert_eq(idx_search(ix, &q, &h, n, &err), ENG_OK, "%s", err.msg);
    return h;
}

static int rank_of(const idx_hit *h, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(h[i].filepath, path) == 0)
            return (int)i + 1;
    return 0;
}

Test(index_search, a_call_being_typed_ranks_the_definition_before_its_callers)
{
    fixture f = open_repo();
    size_t n;
    /* BM25 alone: the callers share more of the query's words than the definition. */
    idx_hit *h = run(f.ix, query_py, "batch.py", IDX_MODE_BM25, 0, &n);
    int def_bm25 = rank_of(h, n, "pool.py");
    cr_assert(rank_of(h, n, "client.py") && rank_of(h, n, "health.py"), "callers found");
    cr_assert_gt(def_bm25, 1, "BM25 alone puts a caller first (the case this is about)");
    idx_hits_free(h, n);

    h = run(f.ix, query_py, "batch.py", IDX_MODE_HYBRID, 0, &n);
    cr_assert_gt(n, 3);
    cr_assert_str_eq(h[0].filepath, "pool.py", "first: %s", h[0].filepath);
    cr_assert(strstr(h[0].body, "def open_connection(self, host, port"), "%s", h[0].body);
    cr_assert(rank_of(h, n, "client.py") > 1 && rank_of(h, n, "health.py") > 1 &&
              rank_of(h, n, "retry.py") > 1, "the callers still come, after it");
    idx_hits_free(h, n);
    close_repo(&f);
}

Test(index_search, a_c_function_defined_with_its_return_type_above_comes_first)
{
    fixture f = open_repo();
    size_t n;
    idx_hit *h = run(f.ix, query_c, "src/mail.c", IDX_MODE_HYBRID, 0, &n);
    cr_assert_gt(n, 2);
    cr_assert_str_eq(h[0].filepath, "src/buf.c", "first: %s", h[0].filepath);
    cr_assert(rank_of(h, n, "src/http.c") > 1 && rank_of(h, n, "src/proxy.c") > 1);
    idx_hits_free(h, n);
    close_repo(&f);
}

Test(index_search, names_that_are_only_used_change_nothing)
{
    fixture f = open_repo();
    size_t n, n2;
    /* sendall is called in two files and defined in none: the hybrid ranks as the lists do,
     * and a line that returns or assigns a call's result is not taken for a definition. */
    const char *q = "def ping(pool, host, port):\n    sock = pool.open_connection(host, port)\n"
                    "    sock.sendall(";
    idx_hit *h = run(f.ix, q, "ping.py", IDX_MODE_HYBRID, 0, &n);
    cr_assert_gt(n, 0);
    for (size_t i = 0; i < n; i++)
        cr_assert(h[i].bm25_rank || h[i].vector_rank, "%s is in a list", h[i].filepath);
    idx_hits_free(h, n);
    /* The same query as prose (one line): no definitions are looked for. */
    h = run(f.ix, "open a pooled connection to the host", NULL, IDX_MODE_HYBRID, 0, &n2);
    for (size_t i = 0; i < n2; i++)
        cr_assert(h[i].bm25_rank || h[i].vector_rank, "%s is in a list", h[i].filepath);
    idx_hits_free(h, n2);
    close_repo(&f);
}

Test(index_search, a_definition_of_the_called_name_stays_above_a_similarity_floor)
{
    fixture f = open_repo();
    size_t n;
    /* A floor no chunk reaches: only the definition of the name at the cursor is relevant. */
    idx_hit *h = run(f.ix, query_py, "batch.py", IDX_MODE_HYBRID, 0.999f, &n);
    cr_assert_eq(n, 1, "got %zu hits", n);
    cr_assert_str_eq(h[0].filepath, "pool.py");
    cr_assert_lt(h[0].similarity, 0.999f);
    idx_hits_free(h, n);
    close_repo(&f);
}
