/* tls_pem.c — reads the PEM certificate and key files both front ends serve TLS with (see
 * tls_pem.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls_pem.h"

char *rpc_read_pem(const char *who, const char *what, const char *path, const char *marker,
                   eng_err *err)
{
    if (!path || !path[0]) {
        eng_fail(err, ENG_ERR_INVALID, "%s TLS: the %s file name is empty", who, what);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        eng_fail(err, ENG_ERR_IO, "%s TLS: cannot open the %s file '%s': %s", who, what, path,
                 strerror(errno));
        return NULL;
    }
    char *buf = malloc(RPC_PEM_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        eng_fail(err, ENG_ERR_NOMEM, "%s TLS: out of memory reading the %s file", who, what);
        return NULL;
    }
    /* One byte past the cap tells a file at the cap from a larger one. */
    const size_t n = fread(buf, 1, RPC_PEM_MAX_BYTES + 1, f);
    const bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        eng_fail(err, ENG_ERR_IO, "%s TLS: cannot read the %s file '%s'", who, what, path);
        return NULL;
    }
    if (n > RPC_PEM_MAX_BYTES) {
        free(buf);
        eng_fail(err, ENG_ERR_FORMAT, "%s TLS: the %s file '%s' is larger than %u KiB: not a PEM "
                 "%s", who, what, path, RPC_PEM_MAX_BYTES >> 10, what);
        return NULL;
    }
    buf[n] = '\0'; /* before any string search */
    if (!strstr(buf, marker)) {
        free(buf);
        eng_fail(err, ENG_ERR_FORMAT, "%s TLS: the %s file '%s' is not PEM: no '%s' in it", who,
                 what, path, marker);
        return NULL;
    }
    return buf;
}
