/* toml_read.h — the small C interface over the TOML parser (toml++, Debian's
 * libtomlplusplus-dev): a file's top-level keys as a flat list of typed entries, each with the
 * line it was written on, for cli/config.c. Nothing else in Serval sees the parser. */
#ifndef SERVAL_CLI_TOML_READ_H
#define SERVAL_CLI_TOML_READ_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cli_toml_type {
    CLI_TOML_STRING,
    CLI_TOML_INT,
    CLI_TOML_FLOAT,
    CLI_TOML_BOOL,
    CLI_TOML_ARRAY, /* items holds each element's text; all_strings says whether they are strings */
    CLI_TOML_TABLE, /* a [section] or inline table: Serval's settings are all top-level keys */
    CLI_TOML_OTHER  /* a date or time */
} cli_toml_type;

typedef struct cli_toml_entry {
    char *key;         /* the key as written (owned by the doc) */
    cli_toml_type type;
    char *text;        /* scalars: a string's contents, an integer in decimal, a float (%.17g),
                        * true/false; NULL for arrays and tables (owned by the doc) */
    char **items;      /* arrays: each element as text (owned by the doc) */
    size_t n_items;
    bool all_strings;  /* arrays: every element is a string */
    int line;          /* 1-based line of the value in the file */
} cli_toml_entry;

typedef struct cli_toml_doc {
    cli_toml_entry *entries; /* in file order */
    size_t n;
} cli_toml_doc;

/* Parses the TOML file at path into *out (owned by the caller: cli_toml_doc_free). On a file
 * that cannot be read or is not TOML, returns false with "PATH:LINE:COL: what is wrong" (or
 * "PATH: why" when it cannot be read) in err (cap bytes) and *out NULL. Never throws. */
bool cli_toml_read(const char *path, cli_toml_doc **out, char *err, size_t cap);

/* Frees a doc and everything in it; NULL does nothing. */
void cli_toml_doc_free(cli_toml_doc *d);

#ifdef __cplusplus
}
#endif

#endif
