/* index.h — `serval index`: index repositories for retrieval (indexer/serval_index.h) with the
 * embedding model, showing progress, then print what was indexed and skipped. */
#ifndef SERVAL_CLI_INDEX_H
#define SERVAL_CLI_INDEX_H

/* Runs `serval index` with the arguments after the command name. Returns the process exit
 * code: 0 when every repository was indexed (or --help), 1 when one failed, 2 on bad usage. */
int cli_index_main(int argc, char **argv);

#endif
