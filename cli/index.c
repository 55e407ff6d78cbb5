/* index.c — `serval index [--git-url URL] [--db DIR] PATH...`: loads the embedding model, indexes
 * each repository into the index folder (a progress bar on a terminal, log lines otherwise) and
 * prints what it indexed, embedded and skipped. */
#include "index.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flags.h"
#include "serval_embed.h"
#include "serval_index.h"

#define INDEX_MAX_PATHS 64

typedef struct index_opts {
    const char *git_url;
    const char *db;
    const char *embed_model;
    long threads;
    bool quiet;
    const char *paths[INDEX_MAX_PATHS];
    size_t n_paths;
} index_opts;

typedef struct progress_state {
    bool tty, quiet;
    double last_log;
    const char *name;
} progress_state;

static volatile bool stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = true;
}

static void show_progress(void *user, const idx_progress *p)
{
    progress_state *ps = user;
    if (ps->quiet)
        return;
    double rate = p->seconds > 0 ? (double)p->embeddings_done / p->seconds : 0;
    double frac = p->files_total ? (double)p->files_done / (double)p->files_total : 1;
    double eta = frac > 0.01 && !p->done ? p->seconds * (1 - frac) / frac : 0;
    if (ps->tty) {
        char bar[31];
        int full = (int)(frac * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < full ? '=' : i == full ? '>' : ' ';
        bar[30] = 0;
        fprintf(stderr, "\r[%s] files %lld/%lld  chunks %lld  %.1f emb/s  ETA %d:%02d ", bar,
                (long long)p->files_done, (long long)p->files_total, (long long)p->chunks_done,
                rate, (int)eta / 60, (int)eta % 60);
        if (p->done)
            fputc('\n', stderr);
        return;
    }
    if (!p->done && p->seconds - ps->last_log < 5)
        return;
    ps->last_log = p->seconds;
    fprintf(stderr, "serval index: %s: files %lld/%lld, chunks %lld, %lld embedded (%.1f/s), "
                    "ETA %.0f s\n", ps->name, (long long)p->files_done, (long long)p->files_total,
            (long long)p->chunks_done, (long long)p->embeddings_done, rate, eta);
}

/* The flags go to the flag parser; every other argument is a repository path. */
static int parse_index(int argc, char **argv, index_opts *o)
{
    *o = (index_opts){0};
    const cli_flag flags[] = {
        {"--git-url", "URL", CLI_FLAG_STRING, &o->git_url, NULL, 0, 0, NULL,
         "the repository's URL as IDE clients send it in segments.git_url (one PATH only; "
         "default: the folder's absolute path)"},
        {"--db", "DIR", CLI_FLAG_STRING, &o->db, NULL, 0, 0, NULL,
         "the index folder (default: <data dir>/index, the data dir being $SERVAL_DATA_DIR or "
         "~/.serval, where `serval serve` looks)"},
        {"--embedding-model", "PATH", CLI_FLAG_STRING, &o->embed_model, SERVAL_DEFAULT_EMBED_MODEL,
         0, 0, NULL, "the embedding model (GGUF, architecture bert)"},
        {"--threads", "N", CLI_FLAG_INT, &o->threads, "0", 0, 256, NULL,
         "CPU threads for embedding; 0: the online CPUs"},
        {"--quiet", NULL, CLI_FLAG_BOOL, &o->quiet, NULL, 0, 0, NULL,
         "no progress, only errors and the summary"},
    };
    const cli_command cmd = {
        .prog = "serval index",
        .usage = "[--git-url URL] [--db DIR] PATH...",
        .about = "Indexes repositories for retrieval: a git work tree's tracked files (HEAD is "
                 "recorded), or any folder's files minus what .gitignore files exclude; binary, "
                 "generated, vendored and huge files are skipped. Files are chunked, embedded and "
                 "stored for keyword (BM25) and vector search. Run it again to update: only "
                 "changed files are embedded again. `serval serve --repo` does the same in the "
                 "background.",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0]};
    char *fargv[256];
    int fargc = 0;
    for (int i = 0; i < argc; i++) {
        bool flag = argv[i][0] == '-' && argv[i][1];
        if (!flag) {
            if (o->n_paths == INDEX_MAX_PATHS) {
                cli_usage_error(&cmd, "at most %d repositories per run", INDEX_MAX_PATHS);
                return 2;
            }
            o->paths[o->n_paths++] = argv[i];
            continue;
        }
        if (fargc < 255)
            fargv[fargc++] = argv[i];
        /* A value flag given as "--flag VALUE" takes the next argument with it. */
        bool takes_value = !strchr(argv[i], '=') && strcmp(argv[i], "--quiet") != 0 &&
                           strcmp(argv[i], "-h") != 0 && strcmp(argv[i], "--help") != 0 &&
                           strncmp(argv[i], "--help", 6) != 0;
        if (takes_value && i + 1 < argc && fargc < 255)
            fargv[fargc++] = argv[++i];
    }
    fargv[fargc] = NULL;
    cli_parse_result pr = cli_parse(&cmd, fargc, fargv);
    if (pr == CLI_PARSE_HELP)
        return 0;
    if (pr == CLI_PARSE_OK && o->n_paths == 0)
        pr = cli_usage_error(&cmd, "name at least one repository PATH");
    if (pr == CLI_PARSE_OK && o->git_url && o->n_paths > 1)
        pr = cli_usage_error(&cmd, "--git-url names one repository, but %zu PATHs were given",
                             o->n_paths);
    return pr == CLI_PARSE_OK ? -1 : 2;
}

static void print_summary(const char *path, const char *url, const idx_stats *st)
{
    double s = st->seconds > 0 ? st->seconds : 1e-9;
    printf("%s (%s)%s%s: %lld files indexed, %lld embedded, %lld deleted; %lld chunks, %lld "
           "embedded; skipped %lld vendored, %lld generated, %lld binary, %lld huge; %.1f s "
           "(%.1f files/s, %.1f embeddings/s)\n",
           path, url ? url : "its path", st->git ? " at " : "", st->git ? st->commit : "",
           (long long)st->files_indexed, (long long)st->files_embedded,
           (long long)st->files_deleted, (long long)st->chunks_total,
           (long long)st->chunks_embedded, (long long)st->skipped_vendored,
           (long long)st->skipped_generated, (long long)st->skipped_binary,
           (long long)st->skipped_huge, st->seconds, (double)st->files_seen / s,
           (double)st->chunks_embedded / s);
}

int cli_index_main(int argc, char **argv)
{
    index_opts o;
    int rc = parse_index(argc, argv, &o);
    if (rc >= 0)
        return rc;
    char dbdir[4096];
    if (o.db) {
        snprintf(dbdir, sizeof dbdir, "%s", o.db);
    } else {
        const char *env = getenv("SERVAL_DATA_DIR"), *home = getenv("HOME");
        if (env && *env)
            snprintf(dbdir, sizeof dbdir, "%s/index", env);
        else if (home && *home)
            snprintf(dbdir, sizeof dbdir, "%s/.serval/index", home);
        else {
            fprintf(stderr, "serval index: no --db, $SERVAL_DATA_DIR or $HOME: say where the "
                            "index goes\n");
            return 2;
        }
        if (!env || !*env) { /* ~/.serval may not exist yet */
            char parent[4096];
            snprintf(parent, sizeof parent, "%s/.serval", home);
            mkdir(parent, 0700);
        }
    }
    eng_err err = {{0}};
    eng_embedder_config cfg = eng_embedder_config_defaults();
    cfg.n_threads = (int)o.threads;
    eng_embedder *emb = NULL;
    if (eng_embedder_create(o.embed_model, &cfg, &emb, &err) != ENG_OK) {
        fprintf(stderr, "serval index: embedding model %s: %s\n", o.embed_model, err.msg);
        return 1;
    }
    idx_embedder ie = idx_embedder_from_engine(emb);
    idx_index *ix = NULL;
    if (idx_open(dbdir, &ie, &ix, &err) != ENG_OK) {
        fprintf(stderr, "serval index: %s\n", err.msg);
        eng_embedder_free(emb);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int status = 0;
    for (size_t i = 0; i < o.n_paths && !stop_flag; i++) {
        progress_state ps = {.tty = isatty(2), .quiet = o.quiet, .name = o.paths[i]};
        idx_stats st;
        eng_status s = idx_index_repo(ix, o.paths[i], o.git_url, show_progress, &ps, &stop_flag,
                                      &st, &err);
        if (s != ENG_OK) {
            fprintf(stderr, "serval index: %s: %s\n", o.paths[i], err.msg);
            status = 1;
            continue;
        }
        print_summary(o.paths[i], o.git_url, &st);
    }
    idx_totals t;
    idx_totals_get(ix, &t);
    printf("index %s: %lld repositories, %lld files, %lld chunks (%s vector index)\n", dbdir,
           (long long)t.repos, (long long)t.files, (long long)t.chunks,
           t.approximate ? "approximate IVF" : "exact");
    idx_close(ix);
    eng_embedder_free(emb);
    return status;
}
