/* doctor.c — `serval doctor`: reads the settings `serve` would run with (the same flag table,
 * config file and SERVAL_* variables: cli/serve_opts.h) and checks the machine against them:
 * CPU features, memory, GPUs and the NVIDIA driver, the model file (it loads, it fits), the
 * ports, the data directory, the token file's mode, the TLS files, the embedding model and the
 * repositories to index. Each finding is one line, "ok", "warn"
 * or "FIX" with what to do; the exit status is 1 when anything must be fixed. */
#include "doctor.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cpuinfo.h"
#include "flags.h"
#include "serval_engine.h"
#include "serve_opts.h"

typedef enum doctor_level { DOCTOR_OK, DOCTOR_WARN, DOCTOR_FIX } doctor_level;

typedef struct doctor {
    int n_fix, n_warn;
    int64_t mem_available; /* bytes; -1 unknown */
    int64_t gpu_mem;       /* the first GPU's memory in bytes; -1: no GPU */
} doctor;

static void say(doctor *d, doctor_level lv, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void say(doctor *d, doctor_level lv, const char *what, const char *fmt, ...)
{
    static const char *const tag[] = {"ok  ", "warn", "FIX "};
    if (lv == DOCTOR_FIX) d->n_fix++;
    if (lv == DOCTOR_WARN) d->n_warn++;
    printf("  %s  %-10s ", tag[lv], what);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static void check_cpu(doctor *d)
{
    char name[256] = "unknown CPU";
    eng_cpuinfo_model_name(name, sizeof name);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2"), fma = __builtin_cpu_supports("fma");
    bool f16c = __builtin_cpu_supports("f16c"), avx512 = __builtin_cpu_supports("avx512f");
    say(d, avx2 && fma ? DOCTOR_OK : DOCTOR_WARN, "cpu",
        "%s, %ld online; AVX2 %s, FMA %s, F16C %s, AVX-512 %s%s", name, n, avx2 ? "yes" : "no", fma ? "yes" : "no", f16c ? "yes" : "no",
        avx512 ? "yes" : "no",
        avx2 && fma ? "" : " (the CPU backend falls back to its plain-C path: expect it slower)");
#else
    say(d, DOCTOR_WARN, "cpu", "%s, %ld online; not x86-64: the CPU backend runs its plain-C path",
        name, n);
#endif
}

/* A /proc/meminfo field in bytes, or -1. */
static int64_t meminfo(const char *field)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    int64_t v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') {
            v = strtoll(line + n + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

static void check_memory(doctor *d)
{
    int64_t total = meminfo("MemTotal");
    d->mem_available = meminfo("MemAvailable");
    if (total < 0 || d->mem_available < 0) {
        say(d, DOCTOR_WARN, "memory", "cannot read /proc/meminfo");
        return;
    }
    say(d, DOCTOR_OK, "memory", "%.1f GiB total, %.1f GiB available", total / 1073741824.0,
        d->mem_available / 1073741824.0);
}

/* The NVIDIA driver through libcuda's driver API, opened at run time, so even a CPU-only build
 * can say what the machine has. */
typedef int (*cu_int_fn)(int *);
static void check_gpus(doctor *d, bool want_cuda)
{
    d->gpu_mem = -1;
#ifdef SERVAL_HAVE_CUDA
    const char *build = "this build has the CUDA backend";
#else
    const char *build = "this build is CPU-only (configure with the cuda preset for GPUs)";
#endif
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        say(d, want_cuda ? DOCTOR_FIX : DOCTOR_OK, "gpu", "no GPU (no NVIDIA driver: libcuda.so.1 "
            "is not installed)%s; %s", want_cuda ? ": backend cuda cannot run here" : "", build);
        return;
    }
    int (*cu_init)(unsigned) = NULL;
    cu_int_fn cu_version = NULL, cu_count = NULL;
    int (*cu_get)(int *, int) = NULL;
    int (*cu_name)(char *, int, int) = NULL;
    int (*cu_mem)(size_t *, int) = NULL;
    int (*cu_attr)(int *, int, int) = NULL;
    /* POSIX's way to take a function from dlsym without an object-to-function cast */
    *(void **)&cu_init = dlsym(lib, "cuInit");
    *(void **)&cu_version = dlsym(lib, "cuDriverGetVersion");
    *(void **)&cu_count = dlsym(lib, "cuDeviceGetCount");
    *(void **)&cu_get = dlsym(lib, "cuDeviceGet");
    *(void **)&cu_name = dlsym(lib, "cuDeviceGetName");
    *(void **)&cu_mem = dlsym(lib, "cuDeviceTotalMem_v2");
    *(void **)&cu_attr = dlsym(lib, "cuDeviceGetAttribute");
    int ver = 0, n = 0;
    if (!cu_init || !cu_version || !cu_count || !cu_get || !cu_name || !cu_mem || !cu_attr ||
        cu_init(0) != 0 || cu_version(&ver) != 0 || cu_count(&n) != 0 || n == 0) {
        say(d, want_cuda ? DOCTOR_FIX : DOCTOR_OK, "gpu", "no GPU (the NVIDIA driver is installed "
            "but reports no usable device)%s; %s", want_cuda ? ": backend cuda cannot run" : "",
            build);
        dlclose(lib);
        return;
    }
    char drv[128] = "";
    FILE *f = fopen("/proc/driver/nvidia/version", "r");
    if (f) {
        char line[256];
        if (fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "Module");
            if (p) sscanf(p + 6, " %127s", drv);
        }
        fclose(f);
    }
    say(d, DOCTOR_OK, "gpu", "NVIDIA driver %s, CUDA %d.%d (the newest the driver runs), %d "
        "device(s); %s", drv[0] ? drv : "(version unknown)", ver / 1000, ver % 1000 / 10, n, build);
    for (int i = 0; i < n; i++) {
        int dev = 0, major = 0, minor = 0;
        char name[128] = "?";
        size_t mem = 0;
        cu_get(&dev, i);
        cu_name(name, sizeof name, dev);
        cu_mem(&mem, dev);
        cu_attr(&major, 75, dev); /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */
        cu_attr(&minor, 76, dev); /* ..._MINOR */
        if (i == 0) d->gpu_mem = (int64_t)mem;
        say(d, major >= 8 ? DOCTOR_OK : DOCTOR_WARN, "gpu", "%d: %s, %.1f GiB, compute %d.%d%s", i,
            name, mem / 1073741824.0, major, minor,
            major >= 8 ? "" : " (bf16 needs compute 8.0: use --cuda-fp16)");
    }
    dlclose(lib);
}

static void check_model(doctor *d, const serve_opts *o)
{
    struct stat st;
    if (stat(o->model, &st) != 0) {
        say(d, DOCTOR_FIX, "model", "%s: %s: set `model` in the config (or --model), or run "
            "tools/setup.sh for the default one", o->model, strerror(errno));
        return;
    }
    bool cuda = o->eng.backend == ENG_BACKEND_CUDA;
    long reps = o->replicas > 1 ? o->replicas : 1; /* each replica has its own KV cache */
    int64_t kv = (o->eng.kv_mb ? o->eng.kv_mb : 1024) * (int64_t)1048576 * reps;
    int64_t need = (int64_t)st.st_size + (cuda ? 0 : kv);
    if (cuda && reps > 1 && !o->eng.kv_mb && !o->eng.gpus) /* --gpus: each its own GPUs */
        say(d, DOCTOR_FIX, "replicas", "%ld replicas on cuda need kv_mb: each replica's KV pool "
            "would take 90%% of the GPU memory the ones before it left", reps);
    int64_t have = cuda ? d->gpu_mem : d->mem_available;
    if (have >= 0 && need > have)
        say(d, DOCTOR_FIX, "model", "%s: %.2f GiB of weights%s do not fit in %.2f GiB of %s "
            "memory: pick a smaller model or quantisation%s", o->model, st.st_size / 1073741824.0,
            cuda ? "" : reps > 1 ? " and the replicas' KV caches" : " and the KV cache",
            have / 1073741824.0, cuda ? "GPU" : "available",
            cuda ? "" : reps > 1 ? ", or lower kv_mb or replicas" : ", or lower kv_mb");
    eng_model *m = NULL;
    eng_err err = {{0}};
    if (eng_model_load(o->model, &m, &err) != ENG_OK) {
        say(d, DOCTOR_FIX, "model", "%s does not load: %s", o->model, err.msg);
        return;
    }
    if (have < 0 || need <= have)
        say(d, DOCTOR_OK, "model", "%s loads: %s (%s, %d layers, context %d), %.0f MiB of weights "
            "on %s", o->model, eng_model_name(m), eng_model_arch_name(m), eng_model_n_layer(m),
            eng_model_n_ctx_train(m), eng_model_weight_bytes(m) / 1048576.0,
            cli_backend_name(&o->eng));
    eng_model_free(m);
}

/* The embedding model and the repositories to index (`repos`): what `serve` needs to start
 * with them. Paths are checked as this user: run doctor as the service's user (`sudo -u
 * serval serval doctor`) to see what it can read. */
static void check_repos(doctor *d, const serve_opts *o)
{
    struct stat st;
    const char *emb = o->embedding_model ? o->embedding_model : SERVAL_DEFAULT_EMBED_MODEL;
    bool have_emb = !o->no_embeddings && stat(emb, &st) == 0 && S_ISREG(st.st_mode);
    const char *why = have_emb || o->no_embeddings ? ""
                      : stat(emb, &st) != 0 ? strerror(errno) : "not a regular file";
    if (o->no_embeddings)
        say(d, o->repos.n ? DOCTOR_FIX : DOCTOR_OK, "embedding", "off (no_embeddings)%s",
            o->repos.n ? ": `repos` needs the embedding model: drop no_embeddings" : "");
    else if (have_emb)
        say(d, DOCTOR_OK, "embedding", "%s (%.0f MiB)", emb, st.st_size / 1048576.0);
    else if (o->embedding_model || o->repos.n)
        say(d, DOCTOR_FIX, "embedding", "%s: %s: set `embedding_model`%s", emb, why,
            o->embedding_model ? "" : " (serve needs it for `repos`), or run tools/setup.sh");
    else
        say(d, DOCTOR_WARN, "embedding", "%s is missing: /v1/embeddings answers 501 (set "
            "`embedding_model`, or run tools/setup.sh)", emb);
    for (size_t i = 0; i < o->repos.n; i++) {
        const char *v = o->repos.items[i], *eq = strchr(v, '=');
        char path[4096], git[4200];
        snprintf(path, sizeof path, "%.*s", (int)(eq ? (size_t)(eq - v) : strlen(v)), v);
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            say(d, DOCTOR_FIX, "repository", "%s: %s: `repos` names folders (\"PATH\" or "
                "\"PATH=GIT_URL\")", path, stat(path, &st) != 0 ? strerror(errno)
                                                                   : "not a directory");
        else if (access(path, R_OK | X_OK) != 0)
            say(d, DOCTOR_FIX, "repository", "%s: %s for this user: the service's user must "
                "read it", path, strerror(errno));
        else {
            snprintf(git, sizeof git, "%s/.git", path);
            say(d, DOCTOR_OK, "repository", "%s (%s): %s", path, eq && eq[1] ? eq + 1 : "its path",
                stat(git, &st) == 0 ? "a git work tree: its tracked files are indexed"
                                    : "a folder: its files are indexed (not a git work tree)");
        }
    }
}

/* Whether a listener could bind addr:port now. */
static void check_port(doctor *d, const char *what, const char *key, const char *addr, long port)
{
    if (port == 0) {
        say(d, DOCTOR_OK, what, "port 0: a free one is picked at start");
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *ai = NULL;
    char sport[16];
    snprintf(sport, sizeof sport, "%ld", port);
    int gr = getaddrinfo(addr, sport, &hints, &ai);
    if (gr != 0) {
        say(d, DOCTOR_FIX, what, "bind address '%s': %s: set `bind` to an address of this machine",
            addr, gai_strerror(gr));
        return;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM, 0), e = 0;
    int one = 1;
    if (fd < 0) e = errno;
    else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1) != 0) e = errno;
        close(fd);
    }
    freeaddrinfo(ai);
    if (e == EADDRINUSE)
        say(d, DOCTOR_FIX, what, "port %ld on %s is taken: stop what listens there (ss -ltnp "
            "'sport = :%ld') or set `%s`", port, addr, port, key);
    else if (e == EACCES)
        say(d, DOCTOR_FIX, what, "port %ld on %s needs privileges: use a port above 1023 (`%s`)",
            port, addr, key);
    else if (e)
        say(d, DOCTOR_FIX, what, "cannot listen on %s port %ld: %s", addr, port, strerror(e));
    else
        say(d, DOCTOR_OK, what, "%s port %ld is free", addr, port);
}

static void check_data_dir(doctor *d, const char *dir)
{
    struct stat st;
    if (!dir) {
        say(d, DOCTOR_FIX, "data dir", "none: set `data_dir` (HOME is unset)");
        return;
    }
    if (stat(dir, &st) != 0) {
        char parent[4096];
        snprintf(parent, sizeof parent, "%s", dir);
        char *slash = strrchr(parent, '/');
        if (slash == parent) slash[1] = '\0';
        else if (slash) *slash = '\0';
        else snprintf(parent, sizeof parent, ".");
        if (access(parent, W_OK | X_OK) == 0)
            say(d, DOCTOR_OK, "data dir", "%s does not exist yet: serve creates it at first start",
                dir);
        else
            say(d, DOCTOR_FIX, "data dir", "%s does not exist and %s is not writable by uid %d: "
                "create it (mkdir -m 700) and chown it to the user serval runs as", dir, parent,
                (int)getuid());
        return;
    }
    if (!S_ISDIR(st.st_mode))
        say(d, DOCTOR_FIX, "data dir", "%s is not a directory", dir);
    else if (access(dir, W_OK | X_OK) != 0)
        say(d, DOCTOR_FIX, "data dir", "%s is not writable by uid %d: chown it to the user serval "
            "runs as", dir, (int)getuid());
    else if (st.st_mode & S_IWOTH)
        say(d, DOCTOR_FIX, "data dir", "%s is writable by everyone (mode %04o): chmod 700 %s", dir,
            (unsigned)(st.st_mode & 07777), dir);
    else
        say(d, DOCTOR_OK, "data dir", "%s is writable (mode %04o)", dir,
            (unsigned)(st.st_mode & 07777));
}

/* A file holding secrets: it must exist and be readable by its owner only. */
static void check_secret_file(doctor *d, const char *what, const char *path, bool allow_readable)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        say(d, DOCTOR_FIX, what, "%s: %s", path, strerror(errno));
        return;
    }
    unsigned mode = (unsigned)(st.st_mode & 07777);
    if (!(st.st_mode & 077))
        say(d, DOCTOR_OK, what, "%s is readable by its owner only (mode %04o)", path, mode);
    else if (allow_readable)
        say(d, DOCTOR_WARN, what, "%s has mode %04o: group or others can read it "
            "(allow_readable_token_file is set)", path, mode);
    else
        say(d, DOCTOR_FIX, what, "%s has mode %04o: group or others can read it: chmod 600 %s",
            path, mode, path);
}

static void check_tokens(doctor *d, const serve_opts *o, const char *data_dir)
{
    if (o->no_auth) {
        bool local = !strcmp(o->bind, "127.0.0.1") || !strcmp(o->bind, "::1") ||
                     !strcmp(o->bind, "localhost");
        say(d, local ? DOCTOR_OK : DOCTOR_WARN, "tokens", "no_auth: every request is accepted%s",
            local ? " (loopback only)" : ": anyone who reaches this machine can use the server");
        return;
    }
    if (o->token_file) {
        check_secret_file(d, "token file", o->token_file, o->allow_readable_token_file);
        return;
    }
    if (o->tokens.n || (getenv("SERVAL_TOKEN") && *getenv("SERVAL_TOKEN"))) {
        say(d, DOCTOR_OK, "tokens", "%s", o->tokens.n ? "tokens given in the settings (prefer "
            "token_file: command lines and config files are easier to read)" : "$SERVAL_TOKEN");
        return;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/token", data_dir ? data_dir : ".");
    if (access(path, F_OK) == 0)
        check_secret_file(d, "token file", path, false);
    else
        say(d, DOCTOR_OK, "tokens", "none given: serve generates one into %s at first start", path);
}

int cli_doctor_main(int argc, char **argv)
{
    const char *model = NULL, *config = NULL;
    const cli_flag flags[] = {
        {"--model", "PATH", CLI_FLAG_STRING, &model, NULL, 0, 0, NULL,
         "the model to check (default: the one `serve` would load)"},
        {"--config", "PATH", CLI_FLAG_STRING, &config, NULL, 0, 0, NULL,
         "the config file `serve` would read (default " SERVE_CONFIG_DEFAULT " when it exists)"},
    };
    const cli_command cmd = {
        .prog = "serval doctor", .usage = "[--model PATH] [--config PATH]",
        .about = "Checks this machine before a deployment, with the settings `serval serve` would "
                 "use (its config file and SERVAL_* variables): CPU features, memory, GPUs and "
                 "the NVIDIA driver, that the model loads and fits, that the ports are free, the "
                 "data directory's permissions, the token file's mode, the TLS files, the embedding "
                 "model and the repositories to index. Prints one line per "
                 "check and what to fix; exits 1 when something must be fixed, 0 otherwise.",
        .flags = flags, .n_flags = sizeof flags / sizeof flags[0]};
    cli_parse_result pr = cli_parse(&cmd, argc, argv);
    if (pr != CLI_PARSE_OK) return pr == CLI_PARSE_HELP ? 0 : 2;

    doctor d = {0};
    printf("serval doctor:\n");
    check_cpu(&d);
    check_memory(&d);
    char *sargv[5];
    int sargc = 0;
    if (config) sargv[sargc++] = "--config", sargv[sargc++] = (char *)config;
    if (model) sargv[sargc++] = "--model", sargv[sargc++] = (char *)model;
    sargv[sargc] = NULL;
    serve_opts o;
    fflush(stdout);
    if (cli_serve_opts_parse(sargc, sargv, "serval doctor", &o) >= 0) {
        say(&d, DOCTOR_FIX, "settings", "the settings have an error (above): fix it first");
        check_gpus(&d, false);
    } else {
        say(&d, DOCTOR_OK, "settings", "config file %s",
            cli_config_file(o.cfg) ? cli_config_file(o.cfg)
                                   : "none (flags' defaults and SERVAL_*)");
        check_gpus(&d, o.eng.backend == ENG_BACKEND_CUDA);
        check_model(&d, &o);
        check_port(&d, "grpc port", "grpc_port", o.bind, o.grpc_port);
        if (o.http_port == o.grpc_port && o.http_port)
            say(&d, DOCTOR_FIX, "http port", "http_port and grpc_port are both %ld", o.http_port);
        else
            check_port(&d, "http port", "http_port", o.bind, o.http_port);
        const char *dir = cli_serve_data_dir(&o);
        check_data_dir(&d, dir);
        check_tokens(&d, &o, dir);
        if (o.tls_key) check_secret_file(&d, "tls key", o.tls_key, false);
        if (o.tls_cert && access(o.tls_cert, R_OK) != 0)
            say(&d, DOCTOR_FIX, "tls cert", "%s: %s", o.tls_cert, strerror(errno));
        check_repos(&d, &o);
        cli_serve_opts_free(&o);
    }
    if (d.n_fix)
        printf("doctor: %d thing%s to fix (FIX lines above)%s\n", d.n_fix, d.n_fix > 1 ? "s" : "",
               d.n_warn ? ", and warnings" : "");
    else
        printf("doctor: ready to serve%s\n", d.n_warn ? " (see the warnings)" : "");
    return d.n_fix ? 1 : 0;
}
