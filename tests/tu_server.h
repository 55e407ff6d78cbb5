/* tu_server.h — a real `serval serve` process for end-to-end tests: the default model, free
 * ports (--grpc-port 0 --http-port 0), a bearer token, its own data dir, stderr to a log. */
#ifndef SERVAL_TU_SERVER_H
#define SERVAL_TU_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct tu_server {
    pid_t pid;
    int port;         /* the port of the listener tu_server_start waited for */
    char target[64];  /* "127.0.0.1:<port>" */
    char *log_path;   /* the server's stderr (malloc'd; the file is left for the test to read) */
    char *data_dir;   /* its --data-dir (malloc'd; the server creates it) */
} tu_server;

/* Starts `serval serve --model <default> --grpc-port 0 --http-port 0 --token <token>
 * --data-dir <fresh> --threads 2 [--quiet] <extra...>` (extra NULL-terminated, may be NULL)
 * and waits up to 30 s for its "serval: <listener> listening on 127.0.0.1:PORT" line, where
 * listener is "grpc" or "http". The test fails when the server exits first or never says. */
tu_server tu_server_start(const char *listener, const char *token, bool quiet,
                          const char *const *extra);
/* SIGTERM, then the exit status (128+signal when a signal ended it), or -1 when it had to be
 * killed after 15 s. */
int tu_server_stop(tu_server *s);

#endif
