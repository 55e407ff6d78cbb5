// spin_wait.cuh — KN_SPIN_WAIT, for the few kernels that wait on a flag another GPU writes
// into this one's memory (peer-to-peer collectives: allreduce_p2p.cu). Include after
// common.cuh.
#ifndef SERVAL_KN_SPIN_WAIT_CUH
#define SERVAL_KN_SPIN_WAIT_CUH

// Waits until `cond` holds. On the emulator, where one kernel of one device runs at a time,
// an unmet condition abandons the launch, the other devices run, and the launch starts again
// from the top: a kernel that waits must do nothing before its last wait that a second run
// would do differently.
#ifdef SERVAL_CUDA_EMU
#define KN_SPIN_WAIT(cond)                                                                   \
    do {                                                                                     \
        if (!(cond))                                                                         \
            kn_emu::spin_retry();                                                            \
    } while (0)
#else
#define KN_SPIN_WAIT(cond)                                                                   \
    do {                                                                                     \
        while (!(cond))                                                                      \
            __nanosleep(64);                                                                 \
    } while (0)
#endif

#endif
