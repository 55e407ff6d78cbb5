/* quant_fewtok.h — private to quant_avx2.c and quant_fewtok_avx2.c: the few-token row kernels
 * (2, 3 or 4 tokens against each weight block unpacked once), which quant_avx2_matmul runs for
 * the 2-7 tokens a decode step with several requests has (and for the 1-7 left after the
 * 8-token groups). Same per-(row, token) arithmetic as every other tile (quant_impl.h), so the
 * choice changes speed only. */
#ifndef SERVAL_QUANT_FEWTOK_H
#define SERVAL_QUANT_FEWTOK_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

#if defined(__x86_64__) || defined(__i386__)

/* Rows [ra, rb) of W (wrow bytes a row, nb blocks) against T (2..4) activation rows starting at
 * act (arow bytes apart; tail_off: the scale tail's offset inside a row, quant_impl.h); y points
 * at token 0, row 0, tokens ldy apart. */
typedef void (*quant_fewtok_fn)(const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,
                                const uint8_t *act, size_t arow, int T, size_t tail_off, float *y, int64_t ldy);

/* The few-token kernel of wtype for this CPU (AVX2 checked by the caller), or NULL: a type
 * without one, or SERVAL_QUANT_NO_FEWTOK=1 in the environment (benchmarks and tests compare
 * both paths on one machine; probed once). */
quant_fewtok_fn quant_fewtok_avx2_pick(gguf_dtype wtype);

/* Runs tokens [t, te) in groups of 2-4 through f (7 = 4 + 3, 6 = 3 + 3, 5 = 3 + 2); returns
 * the first token not done (te, or te - 1 when one token is left for the single-token tile). */
int64_t quant_fewtok_avx2_run(quant_fewtok_fn f, const uint8_t *W, size_t wrow, int64_t nb, int64_t ra, int64_t rb,
                              const uint8_t *act, size_t arow, size_t tail_off, int64_t t, int64_t te, float *y,
                              int64_t ldy);

#endif

#endif
