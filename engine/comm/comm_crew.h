/* comm_crew.h — the host threads of a tensor-parallel group: one thread per rank, started and
 * stopped together, each running the job the caller hands every rank at once, the caller
 * waiting for all of them and told the first rank that failed on its own. The one rank-crew of
 * both backends: cpu/backend_cpu_tp.c (rank 0 on the engine's step thread, ranks 1.. on crew
 * threads) and cuda/backend_cuda_tp.c (every rank on a thread of its own, which makes its GPU
 * current and builds and frees its backend there). */
#ifndef SERVAL_ENG_COMM_CREW_H
#define SERVAL_ENG_COMM_CREW_H

#include <stdbool.h>

#include "comm.h"

typedef struct eng_comm_crew eng_comm_crew;

/* Rank `rank`'s part of a job (or of starting): returns its status, err filled on failure. */
typedef eng_status (*eng_comm_crew_fn)(void *arg, int rank, eng_err *err);
/* Rank `rank`'s last act on its own thread (freeing what its start made there). */
typedef void (*eng_comm_crew_stop_fn)(void *arg, int rank);

typedef struct eng_comm_crew_config {
    int n_ranks;             /* [1, 64] */
    bool rank0_on_caller;    /* rank 0 runs on the thread that calls create, run and free (no
                              * thread of its own); otherwise every rank has a crew thread */
    eng_comm_crew_fn start;  /* optional: each rank's first act, on its own thread */
    eng_comm_crew_stop_fn stop; /* optional: each rank's last act, on its own thread, whatever
                                 * its start returned */
    void *arg;               /* start's and stop's, borrowed */
    eng_comm *comm;          /* optional, borrowed: a rank whose job (not its start) fails with an error
                              * of its own (not ENG_ERR_CANCELLED, the group's echo of another
                              * rank's) aborts it with its message, so the ranks waiting for it
                              * in a collective return instead of timing out */
} eng_comm_crew_config;

/* Starts the crew: a thread per rank (rank 0 excepted with rank0_on_caller), each running
 * cfg->start, and returns once every rank has. ENG_ERR_INVALID for n_ranks outside [1, 64];
 * ENG_ERR_NOMEM "cannot start the thread of rank q" (*bad_rank -1); a rank's failed start:
 * its status and message, *bad_rank its rank (the first with an error of its own). On failure
 * the started ranks are stopped (cfg->stop) and joined, *out is NULL. bad_rank may be NULL.
 * *out: free with eng_comm_crew_free. */
eng_status eng_comm_crew_create(const eng_comm_crew_config *cfg, eng_comm_crew **out,
                                int *bad_rank, eng_err *err);

/* Runs job(arg, rank) on every rank at once, each on its thread (rank 0 on the caller's with
 * rank0_on_caller), and returns when all have. ENG_OK when every rank returned ENG_OK; else
 * the first rank with an error of its own (a rank's ENG_ERR_CANCELLED only when every failed
 * rank's was): its status and message verbatim, *bad_rank (may be NULL) its rank. One caller
 * at a time; arg is borrowed for the call. */
eng_status eng_comm_crew_run(eng_comm_crew *c, eng_comm_crew_fn job, void *arg, int *bad_rank,
                             eng_err *err);

/* Stops every rank (cfg->stop on its thread) and joins them. NULL does nothing. Not while a
 * run is in progress. */
void eng_comm_crew_free(eng_comm_crew *c);

#endif
