/* backend_cuda_tp.h — the CUDA backend's tensor parallelism (engine-internal): one rank of a
 * group as a backend of its own (backend_cuda.c), and the group as one backend of cfg->tp
 * ranks, one host thread and one GPU each (backend_cuda_tp.c). See "Tensor parallelism" in
 * ../shared/DESIGN.md and model/shard.h for the split. */
#ifndef SERVAL_BACKEND_CUDA_TP_H
#define SERVAL_BACKEND_CUDA_TP_H

#include "backend.h"
#include "comm.h"
#include "shard.h"

/* ENG_OK when CUDA device dev exists; ENG_ERR_UNSUPPORTED without any visible device,
 * ENG_ERR_INVALID naming the ids that exist otherwise. */
eng_status eng_backend_cuda_gpu_check(int dev, eng_err *err);

/* Rank sm->shard.rank of the group comm on device dev: sm (the rank's model, borrowed; it
 * must outlive the backend) loaded onto dev, a KV pool of cfg->kv_bytes (this rank's share;
 * 0: 90% of dev's free memory), logits rows the whole vocabulary wide. Its forward joins the
 * group's collectives and must be called on every rank with the same batch, each from its own
 * thread (the calls block one another until all arrive); each samples the same tokens. The
 * calling thread's current device is unchanged. *out: free with be->ops->free(be), from the
 * rank's thread, before the group. */
eng_status eng_backend_cuda_rank_create(const eng_shard_model *sm, eng_comm *comm, int dev,
                                        const eng_backend_config *cfg, eng_backend **out,
                                        eng_err *err);

/* cfg->tp ranks of m on cfg->gpus (or 0 .. tp-1), over eng_comm_nccl_create; the engine sees
 * one backend whose forward runs the batch on every rank. Errors: the degree the model does
 * not split into (model/shard.h), a GPU that does not exist or is named twice, a GPU count
 * other than tp, ENG_ERR_UNSUPPORTED in a build without NCCL. */
eng_status eng_backend_cuda_tp_create(const eng_model *m, const eng_backend_config *cfg,
                                      eng_backend **out, eng_err *err);

#endif
