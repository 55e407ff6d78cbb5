/* kt_host.c — the Criterion side of the host helpers (see kt.h): kt_compare as an assertion. */
#include "kt.h"

#include <math.h>

double kt_check_close(kn_dtype dt, const void *got, const void *want, size_t n, double rtol,
                      const char *what)
{
    const kt_diff d = kt_compare(dt, got, want, n, rtol);
    cr_assert(d.first_bad < 0 || !isnan(d.got), "%s: element %lld is NaN (not written?)", what,
              (long long)d.first_bad);
    cr_assert(d.first_bad < 0, "%s: element %lld is %.7g, want %.7g (rel err > %.3g)", what,
              (long long)d.first_bad, d.got, d.want, rtol);
    return d.worst;
}
