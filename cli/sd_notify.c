/* sd_notify.c — the sd_notify(3) datagram protocol, the few lines of it `serval serve` needs
 * (cli/sd_notify.h). Written here rather than linked from libsystemd so that the server has no
 * build option and no library dependency for it, in every build (engine-only and GPU builds
 * included): the protocol is one sendto() on an AF_UNIX datagram socket. */
#include "sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

bool cli_sd_notify(const char *state, char *why, unsigned cap)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return true;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n < 2 || n > sizeof sa.sun_path) {
        snprintf(why, cap, "$NOTIFY_SOCKET '%s' is neither an absolute path nor '@name'", path);
        return false;
    }
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') sa.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, cap, "socket: %s", strerror(errno));
        return false;
    }
    size_t sl = strlen(state);
    ssize_t w = sendto(fd, state, sl, MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    int e = errno;
    close(fd);
    if (w < 0 || (size_t)w != sl) {
        snprintf(why, cap, "sending to $NOTIFY_SOCKET %s: %s", path,
                 w < 0 ? strerror(e) : "short write");
        return false;
    }
    return true;
}
