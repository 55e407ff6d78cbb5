/* flags.c — the flag-table parser and help printer of the `serval` commands (cli/flags.h). */
#include "flags.h"
#include "man.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HELP_WIDTH 96 /* columns the help is wrapped to */
#define HELP_COL_MAX 28 /* the help text's column at most; longer flags start it a line below */

static void vreport(const cli_command *c, const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see --help)\n");
}

cli_parse_result cli_usage_error(const cli_command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, fmt, ap);
    va_end(ap);
    return CLI_PARSE_USAGE;
}

/* The index of s among choices ("cpu|cuda"), or -1. */
static int choice_index(const char *choices, const char *s)
{
    size_t len = strlen(s);
    int i = 0;
    for (const char *p = choices;; i++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncmp(p, s, n))
            return i;
        if (!bar)
            return -1;
        p = bar + 1;
    }
}

bool cli_flag_set(const cli_flag *f, const char *v, char *why, size_t cap)
{
    char *end;
    errno = 0;
    switch (f->kind) {
    case CLI_FLAG_BOOL:
        *(bool *)f->dest = true;
        return true;
    case CLI_FLAG_STRING:
        *(const char **)f->dest = v;
        return true;
    case CLI_FLAG_LIST: {
        cli_list *l = f->dest;
        if (l->n == l->cap) {
            snprintf(why, cap, "may be given at most %zu times", l->cap);
            return false;
        }
        l->items[l->n++] = v;
        return true;
    }
    case CLI_FLAG_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < f->min || x > f->max) {
            snprintf(why, cap, "expects an integer in [%ld, %ld], got '%s'", f->min, f->max, v);
            return false;
        }
        *(long *)f->dest = x;
        return true;
    }
    case CLI_FLAG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[strspn(v, " \t")] == '-') {
            snprintf(why, cap, "expects a non-negative integer, got '%s'", v);
            return false;
        }
        *(uint64_t *)f->dest = (uint64_t)x;
        return true;
    }
    case CLI_FLAG_FLOAT: {
        float x = strtof(v, &end);
        if (errno || end == v || *end || !isfinite(x)) {
            snprintf(why, cap, "expects a number, got '%s'", v);
            return false;
        }
        *(float *)f->dest = x;
        return true;
    }
    case CLI_FLAG_CHOICE: {
        int i = choice_index(f->choices, v);
        if (i < 0) {
            snprintf(why, cap, "expects one of %s, got '%s'", f->choices, v);
            return false;
        }
        *(int *)f->dest = i;
        return true;
    }
    }
    snprintf(why, cap, "has an unknown kind");
    return false;
}

/* Stores value v into f's destination; false (with the message printed) when it is not one. */
static bool set_value(const cli_command *c, const cli_flag *f, const char *v)
{
    char why[512];
    if (cli_flag_set(f, v, why, sizeof why))
        return true;
    cli_usage_error(c, "%s %s", f->name, why);
    return false;
}

static const cli_flag *find_flag(const cli_command *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n_flags; i++)
        if (strlen(c->flags[i].name) == len && !strncmp(c->flags[i].name, name, len))
            return &c->flags[i];
    return NULL;
}

cli_parse_result cli_parse(const cli_command *c, int argc, char **argv)
{
    return cli_parse_seen(c, argc, argv, NULL);
}

cli_parse_result cli_parse_seen(const cli_command *c, int argc, char **argv, bool *seen)
{
    if (seen)
        memset(seen, 0, c->n_flags * sizeof *seen);
    for (size_t i = 0; i < c->n_flags; i++) {
        const cli_flag *f = &c->flags[i];
        if (f->kind == CLI_FLAG_LIST)
            ((cli_list *)f->dest)->n = 0;
        /* A default that does not parse is the table's bug, not the user's. */
        if (f->def && !set_value(c, f, f->def))
            return CLI_PARSE_USAGE;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, CLI_MAN_FLAG)) { /* hidden: `serval help-man COMMAND` (cli/man.h) */
            cli_man_print(c, stdout);
            return CLI_PARSE_HELP;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_help_print(c, stdout);
            return CLI_PARSE_HELP;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
            return cli_usage_error(c, "unexpected argument '%s'", a);
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_flag *f = find_flag(c, a, len);
        if (!f)
            return cli_usage_error(c, "unknown option '%.*s'", (int)len, a);
        const char *v = NULL;
        if (f->kind == CLI_FLAG_BOOL) {
            if (eq)
                return cli_usage_error(c, "%s takes no value, got '%s'", f->name, eq + 1);
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            return cli_usage_error(c, "%s needs a value", f->name);
        }
        if (!set_value(c, f, v))
            return CLI_PARSE_USAGE;
        if (seen)
            seen[f - c->flags] = true;
    }
    return CLI_PARSE_OK;
}

/* Writes text from column col, wrapped at HELP_WIDTH; the first line continues the current
 * one, which already reaches col. */
static void wrap(FILE *o, const char *text, int col)
{
    int at = col;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (n == 0)
            break;
        if (at > col && at + 1 + (int)n > HELP_WIDTH) {
            fprintf(o, "\n%*s", col, "");
            at = col;
        } else if (at > col) {
            fputc(' ', o);
            at++;
        }
        fwrite(p, 1, n, o);
        at += (int)n;
        p += n;
    }
    fputc('\n', o);
}

void cli_help_print(const cli_command *c, FILE *o)
{
    fprintf(o, "usage: %s %s\n\n", c->prog, c->usage);
    wrap(o, c->about, 0);
    fputc('\n', o);
    int col = 0;
    for (size_t i = 0; i < c->n_flags; i++) {
        const cli_flag *f = &c->flags[i];
        int w = 2 + (int)strlen(f->name) + (f->value ? 1 + (int)strlen(f->value) : 0) + 2;
        if (w > col && w <= HELP_COL_MAX)
            col = w;
    }
    for (size_t i = 0; i < c->n_flags; i++) {
        const cli_flag *f = &c->flags[i];
        int w = fprintf(o, "  %s%s%s", f->name, f->value ? " " : "", f->value ? f->value : "");
        if (w + 2 > col)
            fprintf(o, "\n%*s", col, "");
        else
            fprintf(o, "%*s", col - w, "");
        char text[1024];
        if (f->def && f->kind != CLI_FLAG_BOOL)
            snprintf(text, sizeof text, "%s (default %s)", f->help, f->def);
        else
            snprintf(text, sizeof text, "%s", f->help);
        wrap(o, text, col);
    }
}
