/* token.h — `serval token create|list|revoke`: named tokens in the data directory's store. */
#ifndef SERVAL_CLI_TOKEN_H
#define SERVAL_CLI_TOKEN_H

/* argv: the arguments after "token". Returns the exit code: 0 done, 1 failed (the store could
 * not be read or written, no such token), 2 a usage error. */
int cli_token_main(int argc, char **argv);

#endif
