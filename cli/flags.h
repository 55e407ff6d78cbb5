/* flags.h — the one command-line parser of the `serval` commands: each command declares its
 * flags as a table (name, value kind, destination, default, help) and this parses argv against
 * it and prints the command's --help from it. */
#ifndef SERVAL_CLI_FLAGS_H
#define SERVAL_CLI_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/*
 * Accepted forms: `--flag value`, `--flag=value`, and `--flag` alone for CLI_FLAG_BOOL. `-h` and
 * `--help` print the help on stdout; the hidden `--help-man` prints the same as a manual page
 * (cli/man.h: `serval help-man COMMAND`, the build's man pages). Anything else is a usage
 * error printed on stderr as
 * "<program>: <what was wrong> (see --help)", naming the flag and the value it got. Every
 * flag's destination gets its default (parsed like a command-line value) before argv is read;
 * flags without one keep what the caller stored there. A later flag overrides an earlier one,
 * except CLI_FLAG_LIST, which collects every value.
 */

typedef enum cli_flag_kind {
    CLI_FLAG_BOOL,   /* bool: true when present; takes no value */
    CLI_FLAG_STRING, /* const char *: the argv string itself (borrowed) */
    CLI_FLAG_LIST,   /* cli_list: every value, in order, at most list->cap */
    CLI_FLAG_INT,    /* long: a whole decimal number in [min, max] */
    CLI_FLAG_U64,    /* uint64_t: a whole non-negative decimal number */
    CLI_FLAG_FLOAT,  /* float: a finite number (ranges are the consumer's: sampling limits) */
    CLI_FLAG_CHOICE  /* int: the index of the value in choices, "cpu|cuda" */
} cli_flag_kind;

/* The destination of a CLI_FLAG_LIST: items is the caller's array of cap entries. */
typedef struct cli_list {
    const char **items;
    size_t n, cap;
} cli_list;

typedef struct cli_flag {
    const char *name;    /* "--max-tokens" */
    const char *value;   /* what the help calls the value ("N"); NULL for BOOL */
    cli_flag_kind kind;
    void *dest;          /* the variable of the type named by kind (borrowed) */
    const char *def;     /* default, written as on the command line; NULL: none, help says
                          * it in the text where it matters */
    long min, max;       /* CLI_FLAG_INT's range */
    const char *choices; /* CLI_FLAG_CHOICE's names, '|'-separated */
    const char *help;    /* one sentence; the help wraps it and appends "(default DEF)" */
} cli_flag;

typedef struct cli_command {
    const char *prog;     /* "serval complete", the prefix of every message */
    const char *usage;    /* what follows prog on the usage line */
    const char *about;    /* a paragraph under the usage line (wrapped) */
    const cli_flag *flags;
    size_t n_flags;
} cli_command;

typedef enum cli_parse_result {
    CLI_PARSE_OK = 0,
    CLI_PARSE_HELP,  /* --help was given and the help printed: exit 0 */
    CLI_PARSE_USAGE  /* a usage error was printed: exit 2 */
} cli_parse_result;

/* Parses argv[0, argc) (the arguments after the command's name) into the flags' destinations.
 * Nothing is allocated; destinations may hold pointers into argv. */
cli_parse_result cli_parse(const cli_command *c, int argc, char **argv);

/* cli_parse, also setting seen[i] (an array of c->n_flags, caller's) for every flag argv gave:
 * what cli/config.c needs to let the environment and the config file fill in the rest. */
cli_parse_result cli_parse_seen(const cli_command *c, int argc, char **argv, bool *seen);

/* Stores the value v, written as on the command line, into f's destination (v is borrowed by
 * STRING and LIST destinations). False, with the destination unchanged, when v is not a value
 * of f: then why (cap bytes) says so without naming the flag ("expects an integer in [0, 65535],
 * got '70000'"), for the caller to prefix with where the value came from. */
bool cli_flag_set(const cli_flag *f, const char *v, char *why, size_t cap);

/* Prints the usage line, the paragraph and one entry per flag to o. */
void cli_help_print(const cli_command *c, FILE *o);

/* Prints "<prog>: <message> (see --help)" on stderr for errors found after parsing (flags
 * that depend on each other); returns CLI_PARSE_USAGE. */
cli_parse_result cli_usage_error(const cli_command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
