/* sd_notify.h — tells systemd how `serval serve` is doing (READY=1 once it serves, STOPPING=1
 * when it drains) through the datagram protocol of sd_notify(3), without libsystemd. */
#ifndef SERVAL_CLI_SD_NOTIFY_H
#define SERVAL_CLI_SD_NOTIFY_H

#include <stdbool.h>

/* Sends state ("READY=1\nSTATUS=serving", newline-separated KEY=VALUE lines, borrowed) as one
 * datagram to the AF_UNIX socket named by $NOTIFY_SOCKET: a path, or "@name" for the abstract
 * namespace. True when it was sent, or when $NOTIFY_SOCKET is unset or empty (not run by
 * systemd, or not Type=notify: nothing to tell). False, with why (cap bytes) filled in, when the
 * variable names no usable socket or the send failed; the caller logs it and goes on (systemd
 * then times the start out, which says the same thing). Does not block; thread-safe; opens and
 * closes one socket per call. */
bool cli_sd_notify(const char *state, char *why, unsigned cap);

#endif
