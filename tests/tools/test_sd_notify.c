/* test_sd_notify.c — `serval serve` under a systemd Type=notify unit, without systemd: the test
 * plays the service manager's side of sd_notify(3) (an AF_UNIX datagram socket named by
 * $NOTIFY_SOCKET) and checks what a unit's start and stop depend on: STATUS while the model
 * loads, READY=1 once the ports accept connections, STOPPING=1 when SIGTERM begins the drain (also when the kernel
 * hands the signal to a thread other than the main one), and a socket that cannot be used is
 * reported without stopping the server. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"
#include "tu_server.h"

#define TOKEN "sd-notify-test-token"

/* A datagram socket bound at path (a file path, or "@name": the abstract namespace). */
static int manager_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') sa.sun_path[0] = '\0';
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
                 0, "bind %s: %s", path, strerror(errno));
    return fd;
}

/* The next datagram within timeout_ms, NUL-terminated in buf; false when none came. */
static bool receive(int fd, char *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1) return false;
    ssize_t n = recv(fd, buf, cap - 1, 0);
    if (n < 0) return false;
    buf[n] = '\0';
    return true;
}

static bool port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Starts a server that notifies the socket at path, and checks READY=1 then STOPPING=1. */
static void ready_then_stopping(const char *path)
{
    int fd = manager_socket(path);
    setenv("NOTIFY_SOCKET", path, 1);
    tu_server s = tu_server_start("http", TOKEN, true, NULL);
    unsetenv("NOTIFY_SOCKET");
    char msg[256];
    cr_assert(receive(fd, msg, sizeof msg, 10000), "no STATUS while the model loads");
    cr_assert_str_eq(msg, "STATUS=loading the model", "systemctl status says why it is not ready");
    cr_assert(receive(fd, msg, sizeof msg, 10000), "no READY=1 within 10 s of 'listening'");
    cr_assert_str_eq(msg, "READY=1\nSTATUS=serving");
    cr_assert(port_accepts(s.port), "READY=1 was sent but port %d does not accept", s.port);
    cr_assert(!receive(fd, msg, sizeof msg, 200), "a second message before any signal: %s", msg);

    cr_assert_eq(tu_server_stop(&s), 0);
    cr_assert(receive(fd, msg, sizeof msg, 1000), "no STOPPING=1 on SIGTERM");
    cr_assert_str_eq(msg, "STOPPING=1\nSTATUS=draining");
    close(fd);
}

Test(sd_notify, ready_comes_once_the_ports_accept_and_stopping_when_sigterm_drains)
{
    char *path = tu_temp_path(".notify");
    unlink(path); /* tu_temp_path made a file; the socket takes its name */
    ready_then_stopping(path);
    unlink(path);
    free(path);
}

Test(sd_notify, an_abstract_socket_name_is_notified_too)
{
    char name[64];
    snprintf(name, sizeof name, "@serval-test-notify-%d", (int)getpid());
    ready_then_stopping(name);
}

Test(sd_notify, an_unusable_notify_socket_is_logged_and_the_server_serves_on)
{
    setenv("NOTIFY_SOCKET", "relative/notify", 1);
    tu_server s = tu_server_start("http", TOKEN, true, NULL);
    unsetenv("NOTIFY_SOCKET");
    cr_assert(port_accepts(s.port));
    cr_assert_eq(tu_server_stop(&s), 0);
    char *log = tu_read_file(s.log_path, NULL);
    cr_assert(log && strstr(log, "serval: cannot tell systemd that serve is ready: $NOTIFY_SOCKET "
                                 "'relative/notify' is neither an absolute path nor '@name'"),
              "log: %s", log ? log : "(none)");
    free(log);
}

/* A thread of pid, other than the main one, that does not block SIGTERM (OpenBLAS's workers,
 * started before main()); 0 when there is none. */
static pid_t unblocked_worker(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    cr_assert(d, "%s: %s", dir, strerror(errno));
    pid_t found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == pid) continue;
        char path[128], line[256];
        snprintf(path, sizeof path, "%s/%d/status", dir, (int)tid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "SigBlk:", 7) && !(strtoull(line + 7, NULL, 16) & (1ull << (SIGTERM - 1))))
                found = tid;
        fclose(f);
    }
    closedir(d);
    return found;
}

Test(sd_notify, a_sigterm_the_kernel_hands_to_a_worker_thread_still_drains_and_exits_0)
{
    char *path = tu_temp_path(".notify");
    unlink(path);
    int fd = manager_socket(path);
    setenv("NOTIFY_SOCKET", path, 1);
    tu_server s = tu_server_start("http", TOKEN, true, NULL);
    unsetenv("NOTIFY_SOCKET");
    char msg[256];
    cr_assert(receive(fd, msg, sizeof msg, 10000), "no STATUS while the model loads");
    cr_assert(receive(fd, msg, sizeof msg, 10000), "no READY=1");
    cr_assert_str_eq(msg, "READY=1\nSTATUS=serving");
    pid_t tid = unblocked_worker(s.pid);
    if (!tid) {
        tu_server_stop(&s);
        cr_skip_test("every thread of the server blocks SIGTERM (no OpenBLAS worker threads here)");
    }
    /* What kill(pid) does when the main thread is between two sigwait calls. */
    cr_assert_eq(syscall(SYS_tgkill, s.pid, tid, SIGTERM), 0);
    cr_assert(receive(fd, msg, sizeof msg, 5000), "no STOPPING=1: the signal did not reach serve");
    cr_assert_str_eq(msg, "STOPPING=1\nSTATUS=draining");
    cr_assert_eq(tu_server_stop(&s), 0, "serve did not drain and exit 0");
    close(fd);
    unlink(path);
    free(path);
}
