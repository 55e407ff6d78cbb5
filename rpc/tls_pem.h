/* tls_pem.h — the one reader of the PEM certificate and key files both front ends (HTTP and
 * gRPC) serve TLS with: size cap, marker check, errors that name the file. */
#ifndef SERVAL_RPC_TLS_PEM_H
#define SERVAL_RPC_TLS_PEM_H

#include "status.h"

/* Largest PEM file accepted (a certificate chain is a few KiB). */
#define RPC_PEM_MAX_BYTES (1u << 20)

/* Reads the PEM file `path` (at most RPC_PEM_MAX_BYTES), which must contain `marker` (e.g.
 * "-----BEGIN CERTIFICATE-----"). Returns a NUL-terminated copy the caller frees, or NULL
 * with err set: "<who> TLS: the <what> file '<path>' ..." (empty name, cannot read, larger
 * than the cap, not PEM). */
char *rpc_read_pem(const char *who, const char *what, const char *path, const char *marker,
                   eng_err *err);

#endif
