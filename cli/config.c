/* config.c — settings from flags, SERVAL_* variables, a TOML file and defaults (cli/config.h).
 * The file is parsed by toml++ behind cli/toml_read.h; this file maps its keys to the flag
 * table and checks each value with the table's own parser. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "toml_read.h"

#define SRC_LEN 320 /* "file PATH:LINE" at most */

struct cli_config {
    char *path;        /* the file read, or NULL */
    cli_toml_doc *doc; /* its values; STRING and LIST destinations point into it */
    const char **list_items; /* file arrays given to LIST destinations (one block, owned) */
    size_t n_flags;
    char (*src)[SRC_LEN]; /* per flag: where its value came from */
    const char *const *not_settings, *const *secrets; /* the spec's (borrowed) */
};

void cli_config_key(const char *flag, char *buf, size_t cap)
{
    size_t i = 0;
    for (const char *p = flag + strspn(flag, "-"); *p && i + 1 < cap; p++)
        buf[i++] = *p == '-' ? '_' : *p;
    if (cap) buf[i] = '\0';
}

void cli_config_env_name(const char *flag, char *buf, size_t cap)
{
    char key[128];
    cli_config_key(flag, key, sizeof key);
    int n = snprintf(buf, cap, "SERVAL_%s", key);
    for (int i = 0; i < n && (size_t)i < cap; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
}

static bool in_list(const char *const *names, const char *name)
{
    for (; names && *names; names++)
        if (!strcmp(*names, name)) return true;
    return false;
}

static const char *type_name(cli_toml_type t)
{
    switch (t) {
    case CLI_TOML_STRING: return "a string";
    case CLI_TOML_INT: return "an integer";
    case CLI_TOML_FLOAT: return "a float";
    case CLI_TOML_BOOL: return "a boolean";
    case CLI_TOML_ARRAY: return "an array";
    case CLI_TOML_TABLE: return "a table";
    case CLI_TOML_OTHER: break;
    }
    return "a date or time";
}

/* What a flag's kind takes in the file, and whether entry e is one. */
static const char *expected(const cli_flag *f, const cli_toml_entry *e, bool *ok)
{
    switch (f->kind) {
    case CLI_FLAG_BOOL: *ok = e->type == CLI_TOML_BOOL; return "true or false";
    case CLI_FLAG_STRING: *ok = e->type == CLI_TOML_STRING; return "a string";
    case CLI_FLAG_CHOICE: *ok = e->type == CLI_TOML_STRING; return "a string";
    case CLI_FLAG_INT:
    case CLI_FLAG_U64: *ok = e->type == CLI_TOML_INT; return "an integer";
    case CLI_FLAG_FLOAT:
        *ok = e->type == CLI_TOML_INT || e->type == CLI_TOML_FLOAT;
        return "a number";
    case CLI_FLAG_LIST:
        *ok = e->type == CLI_TOML_STRING || (e->type == CLI_TOML_ARRAY && e->all_strings);
        return "a string or an array of strings";
    }
    *ok = false;
    return "?";
}

/* Scratch room for checking a value without storing it (a flag argv already set). */
typedef union scratch {
    bool b;
    const char *s;
    long l;
    uint64_t u;
    float f;
    int i;
} scratch;

/* Stores (or, when !store, only checks) the file entry e in f. */
static bool apply_entry(const cli_config *cfg, const cli_flag *f, const cli_toml_entry *e,
                        bool store, const char **items, char *why, size_t cap)
{
    bool ok;
    const char *want = expected(f, e, &ok);
    if (!ok) {
        snprintf(why, cap, "expects %s, got %s", want, type_name(e->type));
        return false;
    }
    (void)cfg;
    if (f->kind == CLI_FLAG_BOOL) {
        if (store) *(bool *)f->dest = !strcmp(e->text, "true");
        return true;
    }
    if (f->kind == CLI_FLAG_LIST) {
        cli_list *l = f->dest;
        size_t n = e->type == CLI_TOML_ARRAY ? e->n_items : 1;
        if (n > l->cap) {
            snprintf(why, cap, "holds at most %zu values, got %zu", l->cap, n);
            return false;
        }
        if (!store) return true;
        /* The destination's own array may be too small to hold file values beside flags',
         * but argv did not set this one: it takes the file's values alone. */
        l->n = 0;
        for (size_t i = 0; i < n; i++) {
            items[i] = e->type == CLI_TOML_ARRAY ? e->items[i] : e->text;
            l->items[l->n++] = items[i];
        }
        return true;
    }
    scratch tmp;
    cli_flag check = *f;
    if (!store) check.dest = &tmp;
    return cli_flag_set(&check, e->text, why, cap);
}

/* Stores (or only checks) $SERVAL_<NAME> = v in f. */
static bool apply_env(const cli_flag *f, const char *v, bool store, char *why, size_t cap)
{
    if (f->kind == CLI_FLAG_BOOL) {
        bool t = !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
                 !strcasecmp(v, "on");
        bool fa = !strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
                  !strcasecmp(v, "off");
        if (!t && !fa) {
            snprintf(why, cap, "expects true or false (or 1/0, yes/no), got '%s'", v);
            return false;
        }
        if (store) *(bool *)f->dest = t;
        return true;
    }
    if (f->kind == CLI_FLAG_LIST) { /* one value: a token, a comma list of origins */
        if (store) {
            cli_list *l = f->dest;
            l->n = 0;
            l->items[l->n++] = v;
        }
        return true;
    }
    scratch tmp;
    cli_flag check = *f;
    if (!store) check.dest = &tmp;
    return cli_flag_set(&check, v, why, cap);
}

static cli_parse_result fail(const cli_command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static cli_parse_result fail(const cli_command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_PARSE_USAGE;
}

static const cli_flag *find_flag(const cli_command *c, const char *name)
{
    for (size_t i = 0; i < c->n_flags; i++)
        if (!strcmp(c->flags[i].name, name)) return &c->flags[i];
    return NULL;
}

/* Which file to read: the flag's, $SERVAL_CONFIG, or the default when it exists. */
static cli_parse_result pick_file(const cli_command *c, const cli_config_spec *s, const char **path)
{
    const cli_flag *cf = s->config_flag ? find_flag(c, s->config_flag) : NULL;
    const char *named = cf ? *(const char **)cf->dest : NULL;
    const char *what = s->config_flag;
    if (!named && getenv("SERVAL_CONFIG") && *getenv("SERVAL_CONFIG")) {
        named = getenv("SERVAL_CONFIG");
        what = "$SERVAL_CONFIG";
    }
    *path = NULL;
    if (named) {
        if (access(named, R_OK) != 0)
            return fail(c, "%s %s: %s", what, named, strerror(errno));
        *path = named;
    } else if (s->default_path && access(s->default_path, F_OK) == 0) {
        *path = s->default_path;
    }
    return CLI_PARSE_OK;
}

/* Applies the file's entries, then the environment, to the settings argv did not set. */
static cli_parse_result apply_sources(const cli_command *c, const cli_config_spec *s,
                                      cli_config *cfg, const bool *seen)
{
    char key[128], why[512];
    size_t n_items = 0;
    for (size_t k = 0; cfg->doc && k < cfg->doc->n; k++)
        n_items += cfg->doc->entries[k].n_items + 1;
    cfg->list_items = calloc(n_items ? n_items : 1, sizeof *cfg->list_items);
    if (!cfg->list_items) return fail(c, "out of memory");
    const char **items = cfg->list_items;
    for (size_t k = 0; cfg->doc && k < cfg->doc->n; k++) {
        const cli_toml_entry *e = &cfg->doc->entries[k];
        const cli_flag *f = NULL;
        for (size_t i = 0; i < c->n_flags && !f; i++) {
            cli_config_key(c->flags[i].name, key, sizeof key);
            /* a list may also be written plural in the file: repos = [...] for --repo */
            size_t kl = strlen(key);
            bool plural = c->flags[i].kind == CLI_FLAG_LIST && !strncmp(key, e->key, kl) &&
                          !strcmp(e->key + kl, "s");
            if ((plural || !strcmp(key, e->key)) && !in_list(s->not_settings, c->flags[i].name))
                f = &c->flags[i];
        }
        if (!f && e->type == CLI_TOML_TABLE)
            return fail(c, "%s:%d: unknown table '%s' (settings are top-level keys, written "
                        "before any [table])", cfg->path, e->line, e->key);
        if (!f)
            return fail(c, "%s:%d: unknown key '%s' (a key is a flag of `%s --help` without its "
                        "'--', with '_' for '-')", cfg->path, e->line, e->key, c->prog);
        size_t i = (size_t)(f - c->flags);
        if (!apply_entry(cfg, f, e, !seen[i], items, why, sizeof why))
            return fail(c, "%s:%d: key '%s' %s", cfg->path, e->line, e->key, why);
        items += e->n_items + 1;
        if (!seen[i]) snprintf(cfg->src[i], SRC_LEN, "file %s:%d", cfg->path, e->line);
    }
    for (size_t i = 0; i < c->n_flags; i++) {
        const cli_flag *f = &c->flags[i];
        if (in_list(s->not_settings, f->name) || in_list(s->no_env, f->name)) continue;
        char env[160];
        cli_config_env_name(f->name, env, sizeof env);
        const char *v = getenv(env);
        if (!v || !*v) continue;
        if (!apply_env(f, v, !seen[i], why, sizeof why))
            return fail(c, "$%s %s", env, why);
        if (!seen[i]) snprintf(cfg->src[i], SRC_LEN, "env %s", env);
    }
    return CLI_PARSE_OK;
}

cli_parse_result cli_config_parse(const cli_command *c, const cli_config_spec *s, int argc,
                                  char **argv, cli_config **out)
{
    *out = NULL;
    bool *seen = calloc(c->n_flags ? c->n_flags : 1, sizeof *seen);
    cli_config *cfg = calloc(1, sizeof *cfg);
    if (cfg) cfg->src = calloc(c->n_flags ? c->n_flags : 1, sizeof *cfg->src);
    if (!seen || !cfg || !cfg->src) {
        free(seen);
        cli_config_free(cfg);
        return fail(c, "out of memory");
    }
    cfg->n_flags = c->n_flags;
    cfg->not_settings = s->not_settings;
    cfg->secrets = s->secrets;
    cli_parse_result r = cli_parse_seen(c, argc, argv, seen);
    const char *path = NULL;
    if (r == CLI_PARSE_OK) r = pick_file(c, s, &path);
    if (r == CLI_PARSE_OK && path) {
        char err[1024];
        cfg->path = strdup(path);
        if (!cfg->path)
            r = fail(c, "out of memory");
#ifdef SERVAL_HAVE_TOML
        else if (!cli_toml_read(path, &cfg->doc, err, sizeof err))
            r = fail(c, "%s", err);
#else
        else
            r = fail(c, "%s: this build reads no config files (it was built without toml++: "
                     "install libtomlplusplus-dev and rebuild)", path);
        (void)err;
#endif
    }
    for (size_t i = 0; i < c->n_flags; i++)
        snprintf(cfg->src[i], SRC_LEN, seen[i] ? "flag %s" : "default", c->flags[i].name);
    if (r == CLI_PARSE_OK) r = apply_sources(c, s, cfg, seen);
    free(seen);
    if (r != CLI_PARSE_OK) {
        cli_config_free(cfg);
        return r;
    }
    *out = cfg;
    return CLI_PARSE_OK;
}

/* Writes s as a TOML basic string. */
static void print_string(FILE *o, const char *s)
{
    fputc('"', o);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', o);
        if ((unsigned char)*s < 0x20) fprintf(o, "\\u%04x", (unsigned char)*s);
        else fputc(*s, o);
    }
    fputc('"', o);
}

/* The value of f as TOML into o; false when it holds nothing (no default, not given). */
static bool print_value(FILE *o, const cli_flag *f, bool secret)
{
    switch (f->kind) {
    case CLI_FLAG_BOOL: fputs(*(bool *)f->dest ? "true" : "false", o); return true;
    case CLI_FLAG_STRING: {
        const char *v = *(const char **)f->dest;
        if (!v) return false;
        print_string(o, secret ? "(secret)" : v);
        return true;
    }
    case CLI_FLAG_LIST: {
        const cli_list *l = f->dest;
        fputc('[', o);
        for (size_t i = 0; i < l->n; i++) {
            fputs(i ? ", " : "", o);
            print_string(o, secret ? "(secret)" : l->items[i]);
        }
        fputc(']', o);
        return true;
    }
    case CLI_FLAG_INT:
        fprintf(o, "%ld", *(long *)f->dest);
        return true;
    case CLI_FLAG_U64: fprintf(o, "%llu", (unsigned long long)*(uint64_t *)f->dest); return true;
    case CLI_FLAG_FLOAT: fprintf(o, "%g", (double)*(float *)f->dest); return true;
    case CLI_FLAG_CHOICE: {
        int k = *(int *)f->dest;
        const char *p = f->choices;
        for (; k > 0 && p; k--) {
            p = strchr(p, '|');
            if (p) p++;
        }
        if (!p) return false;
        fprintf(o, "\"%.*s\"", (int)strcspn(p, "|"), p);
        return true;
    }
    }
    return false;
}

void cli_config_print(const cli_config *cfg, const cli_command *c, FILE *o)
{
    fprintf(o, "# %s: effective settings (precedence: flag > env > file > default)\n", c->prog);
    fprintf(o, "# config file: %s\n", cfg->path ? cfg->path : "none");
    char key[128];
    for (size_t i = 0; i < c->n_flags && i < cfg->n_flags; i++) {
        const cli_flag *f = &c->flags[i];
        if (in_list(cfg->not_settings, f->name))
            continue;
        cli_config_key(f->name, key, sizeof key);
        char *line = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&line, &len);
        if (!m) continue;
        bool secret = in_list(cfg->secrets, f->name);
        fprintf(m, "%s = ", key);
        bool unset = !strcmp(cfg->src[i], "default") && !f->def && f->kind != CLI_FLAG_BOOL &&
                     f->kind != CLI_FLAG_LIST;
        bool has = !unset && print_value(m, f, secret);
        fclose(m);
        if (has)
            fprintf(o, "%-44s # %s\n", line, cfg->src[i]);
        else
            fprintf(o, "# %-42s # %s: not set, the built-in value applies\n", key, cfg->src[i]);
        free(line);
    }
}

const char *cli_config_file(const cli_config *cfg) { return cfg ? cfg->path : NULL; }

const char *cli_config_source(const cli_config *cfg, const cli_command *c, const char *flag_name)
{
    for (size_t i = 0; cfg && i < c->n_flags && i < cfg->n_flags; i++)
        if (!strcmp(c->flags[i].name, flag_name)) return cfg->src[i];
    return "default";
}

void cli_config_free(cli_config *cfg)
{
    if (!cfg) return;
    cli_toml_doc_free(cfg->doc);
    free(cfg->list_items);
    free(cfg->path);
    free(cfg->src);
    free(cfg);
}
