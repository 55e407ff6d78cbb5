/* man.h — the manual pages of the `serval` commands, written in roff from the same flag tables
 * as their --help (cli/flags.h), so the two never disagree. `serval help-man [COMMAND]` prints
 * them; the build writes one page per command (cmake/ServalMan.cmake). */
#ifndef SERVAL_CLI_MAN_H
#define SERVAL_CLI_MAN_H

#include <stddef.h>
#include <stdio.h>

#include "flags.h"

/* The flag a command's parser answers with its manual page instead of running: hidden from
 * --help, for `serval help-man COMMAND`. */
#define CLI_MAN_FLAG "--help-man"

/* Prints c's page, section 1, named after c->prog with '-' for ' ' ("serval serve" is
 * serval-serve(1)): NAME (from the first sentence of c->about), SYNOPSIS, DESCRIPTION (the whole
 * of c->about), OPTIONS (one entry per flag, the help's text and default) and SEE ALSO
 * serval(1). The footer names this build's version (SERVAL_VERSION). */
void cli_man_print(const cli_command *c, FILE *o);

/* One command of the `serval` program, for its own page. */
typedef struct cli_man_command {
    const char *name;    /* "serve" */
    const char *summary; /* one line */
} cli_man_command;

/* Prints serval(1): what the program is, its commands (each pointing at serval-NAME(1)) and
 * the files it reads. */
void cli_man_print_main(const cli_man_command *cmds, size_t n, FILE *o);

#endif
