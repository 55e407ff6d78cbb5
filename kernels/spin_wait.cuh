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

// Waits until `cond` holds, or gives up: `why` (an int lvalue) = 0 when cond held, 1 when
// `stop` held (read once per 32 spins: a host-mapped flag costs a bus read), 2 when
// `limit_ns` (0: none) nanoseconds of the GPU's global timer passed. cond met on the first try
// costs nothing more than KN_SPIN_WAIT. On the emulator `stop` is read on every retry and the
// limit is the emulator's own (a wait not satisfied in 60 s fails the launch).
#ifdef SERVAL_CUDA_EMU
#define KN_SPIN_WAIT_BOUNDED(cond, stop, limit_ns, why)                                      \
    do {                                                                                     \
        (why) = 0;                                                                           \
        if (!(cond)) {                                                                       \
            if (stop)                                                                        \
                (why) = 1;                                                                   \
            else                                                                             \
                kn_emu::spin_retry();                                                        \
        }                                                                                    \
    } while (0)
#else
static __device__ __forceinline__ unsigned long long kn_globaltimer_ns()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#define KN_SPIN_WAIT_BOUNDED(cond, stop, limit_ns, why)                                      \
    do {                                                                                     \
        (why) = 0;                                                                           \
        if (!(cond)) {                                                                       \
            const unsigned long long t0_ = kn_globaltimer_ns();                              \
            for (unsigned n_ = 1; !(cond); n_++) {                                           \
                if ((n_ & 31u) == 0) {                                                       \
                    if (stop) {                                                              \
                        (why) = 1;                                                           \
                        break;                                                               \
                    }                                                                        \
                    if ((limit_ns) && kn_globaltimer_ns() - t0_ > (limit_ns)) {              \
                        (why) = 2;                                                           \
                        break;                                                               \
                    }                                                                        \
                }                                                                            \
                __nanosleep(64);                                                             \
            }                                                                                \
        }                                                                                    \
    } while (0)
#endif

#endif
