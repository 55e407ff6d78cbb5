/* test_backend_cuda.c — runs serval-cuda-check (tools/cuda_check.c) on the default model: the
 * CUDA backend's logits against the CPU backend, chunked prefill and decode against full
 * prefill, batched-equals-alone on the GPU. Skips cleanly without a GPU or a CUDA build. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

Test(backend_cuda, matches_cpu_backend, .timeout = 900)
{
    char *bin = tu_bin_path("serval-cuda-check");
    if (access(bin, X_OK) != 0) {
        free(bin);
        cr_skip_test("built without CUDA (no serval-cuda-check)");
    }
    char *argv[] = {bin, "--model", (char *)tu_default_model(), NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, 800);
    if (rc == 77) {
        free(out);
        free(err);
        free(bin);
        cr_skip_test("no CUDA device");
    }
    cr_log_info("%s", out ? out : "");
    cr_assert_eq(rc, 0, "serval-cuda-check failed (rc %d):\n%s%s", rc, out ? out : "",
                 err ? err : "");
    cr_assert(out && strstr(out, "ALL PASSED"));
    free(out);
    free(err);
    free(bin);
}
