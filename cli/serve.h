/* serve.h — `serval serve`: load a model, start the engine and the network front ends, serve
 * until SIGTERM/SIGINT, then drain and exit. */
#ifndef SERVAL_CLI_SERVE_H
#define SERVAL_CLI_SERVE_H

/* Runs `serval serve` with the arguments after the command name. Returns the process exit
 * code: 0 after a clean shutdown, 1 on a start-up failure, 2 on bad usage. */
int cli_serve_main(int argc, char **argv);

#endif
