/* plot.c — PNG plots drawn by gnuplot (Debian's gnuplot-nox): the latency CDFs of a run and,
 * for a search, p95 keystroke-to-suggestion against developers and against throughput. The
 * data and the script stay beside the PNGs; without gnuplot only they are written. */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* gnuplot SCRIPT in DIR; 0 when it drew, 1 when it is missing or failed (said on stderr). */
static int run_gnuplot(const char *dir, const char *script)
{
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(126);
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        fprintf(stderr, "serval-bench: gnuplot not found (apt install gnuplot-nox): wrote %s/%s "
                "and its data, no PNG\n", dir, script);
    else
        fprintf(stderr, "serval-bench: gnuplot %s/%s failed\n", dir, script);
    return 1;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int bench_plot_run(const bench_run *r)
{
    const bench_cfg *cfg = r->cfg;
    static const char *const NAMES[3] = {"time to first token", "end to end",
                                         "keystroke to suggestion"};
    char path[4096];
    snprintf(path, sizeof path, "%s/latency_cdf.dat", cfg->out);
    FILE *d = fopen(path, "w");
    double *v = malloc((r->n_recs + 1) * sizeof *v);
    if (!d || !v) {
        if (d)
            fclose(d);
        free(v);
        return 1;
    }
    int blocks = 0;
    bool used[3] = {false, false, false};
    bool dev = cfg->mode == BENCH_MODE_DEVELOPER;
    for (int k = 0; k < 3; k++) {
        if (k == 2 && !dev)
            continue; /* classic: keystroke-to-suggestion is e2e */
        size_t n = 0;
        for (size_t i = 0; i < r->n_recs; i++) {
            const bench_rec *x = &r->recs[i];
            double y = k == 0 ? x->ttft_ms : k == 1 ? x->e2e_ms : x->k2s_ms;
            if (x->outcome == BENCH_OUTCOME_ANSWERED && y >= 0)
                v[n++] = y > 0.01 ? y : 0.01; /* log axis */
        }
        if (!n)
            continue;
        qsort(v, n, sizeof *v, cmp_d);
        fprintf(d, "# %s\n", NAMES[k]);
        for (size_t i = 0; i < n; i++)
            fprintf(d, "%.3f %.5f\n", v[i], (double)(i + 1) / (double)n);
        fprintf(d, "\n\n");
        used[k] = true;
        blocks++;
    }
    free(v);
    fclose(d);
    if (!blocks)
        return 0;
    snprintf(path, sizeof path, "%s/latency_cdf.gp", cfg->out);
    FILE *g = fopen(path, "w");
    if (!g)
        return 1;
    fprintf(g, "set terminal png size 900,600 noenhanced\nset output 'latency_cdf.png'\n"
               "set title 'serval-bench: latency CDF of answered requests (%s, %s, %d %s)'\n"
               "set xlabel 'ms (log scale)'\nset ylabel 'fraction answered within'\n"
               "set logscale x\nset grid\nset key bottom right\nset yrange [0:1]\nplot ",
            dev ? "developer sessions" : "classic",
            bench_target_name(cfg->target),
            dev ? cfg->developers : cfg->concurrency, dev ? "developers" : "clients");
    int idx = 0;
    for (int k = 0; k < 3; k++)
        if (used[k]) {
            fprintf(g, "%s'latency_cdf.dat' index %d using 1:2 with steps lw 2 title '%s'",
                    idx ? ", " : "", idx, NAMES[k]);
            idx++;
        }
    fprintf(g, "\n");
    fclose(g);
    return run_gnuplot(cfg->out, "latency_cdf.gp");
}

int bench_plot_search(const char *out, double slo_ms, const double *devs, const double *tput,
                      const double *p95, const int *rep, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/search.dat", out);
    FILE *d = fopen(path, "w");
    if (!d)
        return 1;
    fprintf(d, "# developers answered_per_s p95_keystroke_to_suggestion_ms rep\n");
    for (size_t i = 0; i < n; i++)
        if (p95[i] >= 0)
            fprintf(d, "%g %.4f %.3f %d\n", devs[i], tput[i], p95[i], rep[i]);
    fclose(d);
    snprintf(path, sizeof path, "%s/search.gp", out);
    FILE *g = fopen(path, "w");
    if (!g)
        return 1;
    fprintf(g,
            "set terminal png size 1200,500 noenhanced\nset output 'search.png'\nset multiplot "
            "layout 1,2\n"
            "set grid\nset key top left\nset ylabel 'p95 keystroke to suggestion (ms)'\n"
            "set title 'developers-at-SLO search: each trial'\nset xlabel 'developers'\n"
            "plot 'search.dat' using 1:3 with points pt 7 ps 1.2 title 'trial', %g with lines lw 2 "
            "title 'SLO %g ms'\n"
            "set title 'latency against throughput'\nset xlabel 'answered requests per second'\n"
            "plot 'search.dat' using 2:3 with points pt 7 ps 1.2 title 'trial', %g with lines lw 2 "
            "title 'SLO'\nunset multiplot\n",
            slo_ms, slo_ms, slo_ms);
    fclose(g);
    return run_gnuplot(out, "search.gp");
}

int bench_plot_sweep(const char *out, const char *metric, const double *load, const double *tput,
                     const double *p50, const double *p95, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/sweep.dat", out);
    FILE *d = fopen(path, "w");
    if (!d)
        return 1;
    fprintf(d, "# answered_per_s p50_ms p95_ms load (%s)\n", metric);
    for (size_t i = 0; i < n; i++)
        if (p50[i] >= 0)
            fprintf(d, "%.4f %.3f %.3f %g\n", tput[i], p50[i], p95[i], load[i]);
    fclose(d);
    snprintf(path, sizeof path, "%s/sweep.gp", out);
    FILE *g = fopen(path, "w");
    if (!g)
        return 1;
    bool k2s = strcmp(metric, "keystroke_to_suggestion_ms") == 0;
    fprintf(
        g,
        "set terminal png size 900,600 noenhanced\nset output 'sweep.png'\nset grid\n"
        "set key top left\nset title 'latency against throughput (points labelled with the load)'\n"
        "set xlabel 'answered requests per second'\nset ylabel '%s (ms)'\n"
        "plot 'sweep.dat' using 1:2 with linespoints lw 2 pt 7 title 'p50', "
        "'sweep.dat' using 1:3 with linespoints lw 2 pt 5 title 'p95', "
        "'sweep.dat' using 1:3:4 with labels offset 1,1 notitle\n",
        k2s ? "keystroke to suggestion" : "end to end");
    fclose(g);
    return run_gnuplot(out, "sweep.gp");
}
