/* complete.h — `serval complete`: one completion for one prompt through the engine, printed on
 * stdout as it is generated, with the prompt and decode speed on stderr. */
#ifndef SERVAL_CLI_COMPLETE_H
#define SERVAL_CLI_COMPLETE_H

/* Runs `serval complete` with the arguments after the command name. Returns the process exit
 * code: 0 when the completion was printed (or --help), 1 when it failed, 2 on bad usage. */
int cli_complete_main(int argc, char **argv);

#endif
