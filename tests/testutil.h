/* testutil.h — helpers shared by the Criterion tests: paths to the default model, fixtures,
 * the built binaries, temp files, JSONL fixtures, and running a command to capture its
 * output. */
#ifndef SERVAL_TESTUTIL_H
#define SERVAL_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "tu_json.h"

/* Absolute path of the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf); the test
 * fails with a message pointing at tools/setup.sh when it is missing. */
const char *tu_default_model(void);
/* Absolute path of a file under the source tree (static buffer per call site is NOT used:
 * the result is malloc'd and owned by the caller). */
char *tu_source_path(const char *rel);
/* Absolute path of a built binary (build/bin/<name>); malloc'd, caller frees. */
char *tu_bin_path(const char *name);
/* Reads a whole file; malloc'd (NUL-terminated), *len set; NULL if unreadable. */
char *tu_read_file(const char *path, size_t *len);
/* Creates a unique temp file path under /tmp (file created empty); malloc'd. */
char *tu_temp_path(const char *suffix);
/* Writes len bytes to path; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);
/* Reads a JSONL file under the source tree into an array of its parsed non-empty lines, *n
 * set; the test fails when the file is missing or a line is not JSON. The array (malloc'd)
 * and every tu_json in it are owned by the caller: tu_json_free each, then free the array. */
tu_json **tu_read_jsonl(const char *rel, size_t *n);

/* Runs argv (argv[0] a path) with stdin from /dev/null, captures stdout and stderr
 * (malloc'd, NUL-terminated; either out pointer may be NULL), kills it after timeout_s.
 * Returns the exit status, 128+signal if killed by a signal, or -1 on failure to run. */
int tu_run(char *const argv[], char **out, char **err, int timeout_s);

/* Index of the largest of x[0 .. n) (the first on ties): a greedy pick from logits. */
int32_t tu_argmax(const float *x, int32_t n);

#endif
