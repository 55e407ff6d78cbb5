/* tu_server.c — starting and stopping a real `serval serve` for end-to-end tests (see
 * tu_server.h). */
#include "tu_server.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

tu_server tu_server_start(const char *listener, const char *token, bool quiet,
                          const char *const *extra)
{
    tu_server s = {0};
    s.log_path = tu_temp_path(".log");
    s.data_dir = tu_temp_path(".d");
    unlink(s.data_dir);
    char *bin = tu_bin_path("serval");
    const char *argv[40] = {bin, "serve", "--model", tu_default_model(), "--grpc-port", "0",
                            "--http-port", "0", "--token", token, "--data-dir", s.data_dir,
                            "--threads", "2", quiet ? "--quiet" : NULL};
    int n = quiet ? 15 : 14;
    for (; extra && *extra && n < 38; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    s.pid = fork();
    cr_assert(s.pid >= 0);
    if (s.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion ends the test: the server too */
        int fd = open(s.log_path, O_WRONLY | O_TRUNC);
        int dn = open("/dev/null", O_RDWR);
        dup2(dn, 0);
        dup2(dn, 1);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    free(bin);
    char line[64];
    snprintf(line, sizeof line, "serval: %s listening on 127.0.0.1:", listener);
    for (int i = 0; i < 600 && s.port <= 0; i++) {
        char *log = tu_read_file(s.log_path, NULL);
        const char *p = log ? strstr(log, line) : NULL;
        if (p)
            s.port = atoi(p + strlen(line));
        free(log);
        int st;
        if (s.port <= 0) {
            cr_assert_eq(waitpid(s.pid, &st, WNOHANG), 0, "serval serve exited early");
            usleep(50 * 1000);
        }
    }
    cr_assert_gt(s.port, 0, "no '%sPORT' line", line);
    snprintf(s.target, sizeof s.target, "127.0.0.1:%d", s.port);
    return s;
}

int tu_server_stop(tu_server *s)
{
    kill(s->pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(50 * 1000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    return -1;
}
