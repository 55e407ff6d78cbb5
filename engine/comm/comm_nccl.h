/* comm_nccl.h — the communicator (comm.h) of the CUDA backend's tensor parallelism: one NCCL
 * communicator per rank (one GPU each, one process), and where every pair of GPUs has peer
 * access, a one-shot peer-to-peer all-reduce for decode-sized messages
 * (kernels/allreduce_p2p.h). Built only with CUDA (or the emulator, whose NCCL is
 * kernels/emu/emu_nccl.cpp).
 *
 * Which path an all-reduce takes (eng_comm_nccl_path, one rule for every rank, so all ranks
 * agree): "p2p" when the group was created with peer access between every pair of its GPUs
 * (cudaDeviceCanAccessPeer), has 2..8 ranks, and the message is at most p2p_max_bytes; "nccl"
 * otherwise. The one-shot path costs three launches and one flag barrier, reads every peer's
 * whole message over NVLink and involves no NCCL channel set-up, so it wins where latency
 * dominates (decode: n_tokens x hidden x 2 bytes, 12 KiB to 512 KiB for 1.5B-7B models at
 * batch 1-64); NCCL's ring/tree wins where bandwidth does (prefill chunks). The default
 * threshold, ENG_COMM_P2P_DEFAULT_MAX_BYTES, is a starting point from published one-shot
 * all-reduce crossovers on NVLink, not measured: no session has had two GPUs. bench_kernels
 * times the summing step on one GPU (kt_p2p_sum_cases); the crossover itself needs a machine
 * with two or more GPUs with peer access, timing both paths (p2p_max_bytes 0 and large) at the
 * decode sizes above. */
#ifndef SERVAL_ENG_COMM_NCCL_H
#define SERVAL_ENG_COMM_NCCL_H

#include <stddef.h>

#include "comm.h"

enum { ENG_COMM_P2P_DEFAULT_MAX_BYTES = 256 << 10 };

/* Creates a group of n_ranks (1..64) ranks, rank r on CUDA device devices[r] (distinct), from
 * one thread (ncclCommInitAll), before the ranks' threads start. p2p_max_bytes: the largest
 * all-reduce the peer-to-peer path takes (0: NCCL always; it also needs peer access, which
 * this enables between every pair, and 2..8 ranks); its buffers take 2 x p2p_max_bytes on
 * every GPU. The calling thread's current device is unchanged on return.
 *
 * Calls then follow comm.h: rank r's thread, with devices[r] current (cudaSetDevice), passes
 * its own cudaStream_t; a call only enqueues work (it may be captured into a CUDA graph) and
 * buf is device memory of devices[r]. A failure NCCL reports (at the call or asynchronously,
 * seen at the next call) fails the group: that and every later call on every rank returns
 * ENG_ERR_CANCELLED with the reason, as after abort. A p2p all-reduce that cannot even be
 * launched (the rank's GPU lost) is that rank's own ENG_ERR_CUDA. Abort (or any failure of
 * the group) releases p2p barriers already enqueued on every GPU (a host-mapped flag they
 * watch), and a barrier gives up by itself after KN_P2P_DEFAULT_WAIT_NS (10 s); either way
 * the rank's stream finishes and eng_comm_nccl_rank_check says so. NCCL's own kernels are
 * released by ncclCommAbort as NCCL does it. */
eng_status eng_comm_nccl_create(int n_ranks, const int *devices, size_t p2p_max_bytes,
                                eng_comm **out, eng_err *err);

/* After rank `rank`'s stream has finished a step's work (its synchronize returned): ENG_OK
 * when the group is whole; ENG_ERR_CUDA naming the rank, its GPU and the wait when one of its
 * p2p barriers timed out (the group is failed from then on); ENG_ERR_CANCELLED with the
 * group's reason when a barrier was released by an abort or the group failed elsewhere (the
 * step's results are not to be used). Callers: the rank's host thread, once per step. */
eng_status eng_comm_nccl_rank_check(eng_comm *c, int rank, eng_err *err);

/* "p2p" or "nccl": the path an all-reduce of `bytes` takes in group c (made by
 * eng_comm_nccl_create). */
const char *eng_comm_nccl_path(const eng_comm *c, size_t bytes);

#endif
