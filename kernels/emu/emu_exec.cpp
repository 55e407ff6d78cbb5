// emu_exec.cpp — the CPU emulator's block executor: every CUDA thread of a block is a fiber
// on the device thread, run round-robin; __syncthreads and the warp intrinsics are barriers
// that park a fiber until every thread they name has arrived. Blocks run one after another.
// Deadlocks (threads parked at different barriers) and undefined warp-intrinsic use (a mask
// naming an exited lane, lanes meeting at different intrinsics) stop the launch with a
// diagnosis instead of hanging or silently computing.
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <random>
#include <string>

#include "emu_impl.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define KN_EMU_ASAN 1
#else
#define KN_EMU_ASAN 0
#endif

// ---- context switch ------------------------------------------------------------------------
// kn_emu_switch(save, load): saves the callee-saved registers and FP control words on the
// current stack, stores its pointer in *save, and resumes the context whose stack is load.
// A new fiber's stack is laid out so that the first switch "returns" into fiber_start, which
// calls r13(r12).
#if defined(__x86_64__)
extern "C" void kn_emu_switch(void **save, void *load);
extern "C" void kn_emu_fiber_start(void);
asm(R"(
    .text
    .p2align 4
    .globl kn_emu_switch
    .hidden kn_emu_switch
    .type kn_emu_switch, @function
kn_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size kn_emu_switch, .-kn_emu_switch
    .globl kn_emu_fiber_start
    .hidden kn_emu_fiber_start
    .type kn_emu_fiber_start, @function
kn_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size kn_emu_fiber_start, .-kn_emu_fiber_start
)");
#else
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

namespace kn_emu {

thread_ctx *cur;
uint3 cur_block;
dim3 cur_block_dim, cur_grid_dim;

namespace {

enum tstate { T_NEW, T_RUN, T_BAR, T_WARP, T_DONE };

// SERVAL_EMU_SCHED: how threads advance between barriers. A real GPU gives no order, and a
// missing barrier only shows under an order that lets someone run ahead:
//   warp          (default) each warp runs as far as it can before the next one starts
//   warp-reverse  the same from the last warp and lane down
//   thread        one step of every thread in turn (warps advance in lockstep)
//   shuffle       warps and lanes in a random order, fresh each round
enum sched_mode { SCHED_WARP, SCHED_WARP_REVERSE, SCHED_THREAD, SCHED_SHUFFLE };

struct stack {
    uint8_t *lo; // lowest usable byte (a guard page sits below)
    size_t size;
};

struct fiber {
    thread_ctx ctx;
    void *sp;
    stack stk;
    bool has_stack;
    int state;
    void *fake; // AddressSanitizer's fake stack while switched out
};

struct warp_state {
    unsigned arrived, mask, live, exists;
    int buf;
    const char *what;
    uint64_t slot[2][32];
};

// The executor's state: device-thread only.
struct executor {
    std::vector<fiber> th;
    std::vector<warp_state> warps;
    std::vector<stack> free_stacks;
    std::vector<int> order;  // thread indices in scheduling order
    std::vector<int> groups; // order[groups[i] .. groups[i + 1]) run until stuck, in turn
    int n = 0, live = 0, bar_arrived = 0;
    fiber *running = nullptr;
    void *sched_sp = nullptr;
    const void *sched_lo = nullptr; // the device thread's stack, for AddressSanitizer
    size_t sched_size = 0;
    const kernel_launch *k = nullptr;
    bool faulted = false;
    bool retry = false; // the launch stopped at a KN_SPIN_WAIT (faulted is set too)
    std::vector<uint8_t> dyn_raw; // dynamic shared memory, 1024-byte aligned like the GPU's
    uint8_t *dyn = nullptr;
    size_t dyn_size = 0;
    uint8_t *tls_lo = nullptr; // the zero-initialised TLS of the module holding the kernels
    size_t tls_size = 0;
    std::thread::id tls_thread; // whose TLS that is: each device has its own thread
    size_t stack_bytes = 64 << 10;
    int sched = SCHED_WARP;
    bool poison_each_block = false;
    std::mt19937 rng{12345};
};
executor X;

thread_local char tls_probe; // locates the kernels' module TLS block (shared memory)

void asan_start(void **save, const void *lo, size_t size)
{
#if KN_EMU_ASAN
    __sanitizer_start_switch_fiber(save, lo, size);
#else
    (void)save, (void)lo, (void)size;
#endif
}
void asan_finish(void *save, const void **lo, size_t *size)
{
#if KN_EMU_ASAN
    __sanitizer_finish_switch_fiber(save, lo, size);
#else
    (void)save, (void)lo, (void)size;
#endif
}

stack stack_get()
{
    if (!X.free_stacks.empty()) {
        stack s = X.free_stacks.back();
        X.free_stacks.pop_back();
        return s;
    }
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *m = mmap(nullptr, X.stack_bytes + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        say("cannot map a %zu-byte fiber stack", X.stack_bytes);
        abort();
    }
    mprotect(m, page, PROT_NONE); // overflow faults instead of corrupting the neighbour
    return stack{(uint8_t *)m + page, X.stack_bytes};
}

void stack_put(stack s)
{
#if KN_EMU_ASAN
    // frames abandoned at a fiber's last switch leave their redzones poisoned
    __asan_unpoison_memory_region(s.lo, s.size);
#endif
    X.free_stacks.push_back(s);
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield_to_sched(bool exiting)
{
    fiber *f = X.running;
    asan_start(exiting ? nullptr : &f->fake, X.sched_lo, X.sched_size);
    kn_emu_switch(&f->sp, X.sched_sp);
    asan_finish(f->fake, &X.sched_lo, &X.sched_size);
}

std::string where_str()
{
    char b[256];
    const fiber *f = X.running;
    snprintf(b, sizeof b, "%s (%s:%d), block (%u,%u,%u)", X.k->where.kernel, X.k->where.file,
             X.k->where.line, cur_block.x, cur_block.y, cur_block.z);
    std::string s = b;
    if (f) {
        snprintf(b, sizeof b, ", thread (%u,%u,%u)", f->ctx.tid.x, f->ctx.tid.y, f->ctx.tid.z);
        s += b;
    }
    return s;
}

// Stops the launch from inside a fiber: the scheduler sees `faulted` and abandons the block.
// (a C string: the fiber's frames are abandoned, nothing on them may own memory)
[[noreturn]] void fault_here(const char *msg)
{
    say("%s: %s", where_str().c_str(), msg);
    X.faulted = true;
    X.running->state = T_DONE;
    yield_to_sched(true);
    abort(); // not reached: a faulted launch never resumes its fibers
}

// Wakes the threads parked in `state`: the whole block, or one warp's lanes.
void release(int state, int warp)
{
    const int i0 = warp < 0 ? 0 : warp * 32, i1 = warp < 0 ? X.n : std::min(X.n, i0 + 32);
    for (int i = i0; i < i1; i++)
        if (X.th[i].state == state)
            X.th[i].state = T_RUN;
}

void thread_exit()
{
    fiber *f = X.running;
    const unsigned lane = f->ctx.lin % 32, w = f->ctx.lin / 32;
    f->state = T_DONE;
    X.live--;
    warp_state &W = X.warps[w];
    W.live &= ~(1u << lane);
    if (W.arrived && (W.mask >> lane & 1u)) {
        char b[160];
        snprintf(b, sizeof b, "exited while lanes 0x%08x of its warp wait in %s with mask 0x%08x",
                 W.arrived, W.what, W.mask);
        fault_here(b);
    }
    if (X.bar_arrived > 0 && X.bar_arrived == X.live) { // exited threads do not hold a barrier
        X.bar_arrived = 0;
        release(T_BAR, -1);
    }
    yield_to_sched(true);
}

void fiber_main(void *arg)
{
    (void)arg;
    asan_finish(nullptr, &X.sched_lo, &X.sched_size);
    X.k->body();
    thread_exit();
}

void fiber_init(fiber &f)
{
    if (!f.has_stack) {
        f.stk = stack_get();
        f.has_stack = true;
    }
    // [fp control][r15 r14 r13 r12 rbx rbp][return: fiber_start], popped by kn_emu_switch
    uintptr_t top = ((uintptr_t)(f.stk.lo + f.stk.size)) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 8 * 8);
    uint32_t fp[2];
    asm volatile("stmxcsr %0" : "=m"(fp[0]));
    asm volatile("fnstcw %0" : "=m"(fp[1]));
    memcpy(&sp[0], fp, 8);
    sp[1] = 0;
    sp[2] = 0;
    sp[3] = (uint64_t)(uintptr_t)&fiber_main;
    sp[4] = 0;
    sp[5] = 0;
    sp[6] = 0;
    sp[7] = (uint64_t)(uintptr_t)&kn_emu_fiber_start;
    f.sp = sp;
    f.fake = nullptr;
}

void run_fiber(fiber &f)
{
    X.running = &f;
    cur = &f.ctx;
    void *fake = nullptr;
    asan_start(&fake, f.stk.lo, f.stk.size);
    kn_emu_switch(&X.sched_sp, f.sp);
    asan_finish(fake, nullptr, nullptr);
    X.running = nullptr;
    if (f.state == T_DONE && f.has_stack) {
        stack_put(f.stk);
        f.has_stack = false;
    }
}

std::string deadlock_report()
{
    std::string s = "deadlock: ";
    int bar = 0;
    for (int i = 0; i < X.n; i++)
        bar += X.th[i].state == T_BAR;
    char b[200];
    if (bar) {
        snprintf(b, sizeof b, "%d of %d live threads wait at __syncthreads; ", bar, X.live);
        s += b;
    }
    for (size_t w = 0; w < X.warps.size(); w++) {
        const warp_state &W = X.warps[w];
        if (W.arrived) {
            snprintf(b, sizeof b, "warp %zu: lanes 0x%08x wait in %s (mask 0x%08x, live 0x%08x); ",
                     w, W.arrived, W.what, W.mask, W.live);
            s += b;
        }
    }
    return s + "the threads they wait for are parked elsewhere or exited";
}

void poison_shared()
{
    if (X.tls_lo)
        memset(X.tls_lo, 0xff, X.tls_size);
    if (X.dyn_size)
        memset(X.dyn, 0xff, X.dyn_size);
}

void make_order(int sched, int n_warps)
{
    X.order.clear();
    X.groups.assign(1, 0);
    std::vector<int> w((size_t)n_warps);
    for (int i = 0; i < n_warps; i++)
        w[i] = sched == SCHED_WARP_REVERSE ? n_warps - 1 - i : i;
    if (sched == SCHED_SHUFFLE)
        std::shuffle(w.begin(), w.end(), X.rng);
    for (int wi : w) {
        const size_t at = X.order.size();
        const int lanes = std::min(32, X.n - wi * 32);
        for (int l = 0; l < lanes; l++)
            X.order.push_back(wi * 32 + (sched == SCHED_WARP_REVERSE ? lanes - 1 - l : l));
        if (sched == SCHED_SHUFFLE)
            std::shuffle(X.order.begin() + (long)at, X.order.end(), X.rng);
        if (sched != SCHED_THREAD)
            X.groups.push_back((int)X.order.size());
    }
    if (sched == SCHED_THREAD)
        X.groups.push_back(X.n);
}

bool run_block()
{
    for (int i = 0; i < X.n; i++)
        X.th[i].state = T_NEW;
    for (warp_state &W : X.warps) {
        W.arrived = 0;
        W.live = W.exists;
        W.buf = 0;
    }
    X.live = X.n;
    X.bar_arrived = 0;
    const int n_warps = (int)X.warps.size();
    while (X.live > 0) {
        bool progress = false;
        if (X.sched == SCHED_SHUFFLE) // a fresh random order every round
            make_order(X.sched, n_warps);
        // SCHED_THREAD takes one round over everyone; the others repeat a warp's round
        // until none of its lanes can move, then go to the next warp
        for (size_t g = 0; g + 1 < X.groups.size() && !X.faulted; g++) {
            const int g0 = X.groups[g], g1 = X.groups[g + 1];
            for (bool ran = true; ran && !X.faulted;) {
                ran = false;
                for (int j = g0; j < g1 && !X.faulted; j++) {
                    fiber &f = X.th[X.order[j]];
                    if (f.state == T_NEW) {
                        fiber_init(f);
                        f.state = T_RUN;
                    }
                    if (f.state == T_RUN) {
                        run_fiber(f);
                        ran = progress = true;
                    }
                }
                if (X.sched == SCHED_THREAD)
                    break;
            }
        }
        if (X.faulted)
            break;
        if (!progress) {
            say("%s: %s", where_str().c_str(), deadlock_report().c_str());
            X.faulted = true;
            break;
        }
    }
    for (int i = 0; i < X.n; i++) { // a faulted block abandons its parked fibers
        fiber &f = X.th[i];
        if (f.has_stack) {
            stack_put(f.stk);
            f.has_stack = false;
        }
    }
    return !X.faulted;
}

int find_tls(struct dl_phdr_info *info, size_t, void *)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) &ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_TLS || !info->dlpi_tls_data)
            continue;
        uint8_t *base = (uint8_t *)info->dlpi_tls_data;
        if ((uint8_t *)&tls_probe >= base && (uint8_t *)&tls_probe < base + ph.p_memsz) {
            // only the zero-initialised part (.tbss): shared memory lives there
            X.tls_lo = base + ph.p_filesz;
            X.tls_size = ph.p_memsz - ph.p_filesz;
            return 1;
        }
    }
    return 0;
}

#if !KN_EMU_ASAN
void on_segv(int sig, siginfo_t *si, void *)
{
    if (X.k) {
        char b[512];
        int n = snprintf(b, sizeof b,
                         "serval-emu: %s at address %p in kernel %s (%s:%d), block (%u,%u,%u)",
                         sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", si->si_addr, X.k->where.kernel,
                         X.k->where.file, X.k->where.line, cur_block.x, cur_block.y, cur_block.z);
        if (X.running && n > 0 && n < (int)sizeof b)
            n += snprintf(b + n, sizeof b - (size_t)n, ", thread (%u,%u,%u)", X.running->ctx.tid.x,
                          X.running->ctx.tid.y, X.running->ctx.tid.z);
        if (n > 0 && n < (int)sizeof b - 1) {
            b[n++] = '\n';
            ssize_t w = write(2, b, (size_t)n);
            (void)w;
        }
    }
    signal(sig, SIG_DFL); // returning re-runs the access, which now kills the process
}
#endif

} // namespace

void exec_thread_init()
{
    dl_iterate_phdr(find_tls, nullptr);
    if (const char *e = getenv("SERVAL_EMU_STACK_KB"))
        X.stack_bytes = (size_t)atol(e) << 10;
    if (X.stack_bytes < (16 << 10))
        X.stack_bytes = 16 << 10;
    if (const char *e = getenv("SERVAL_EMU_SCHED")) {
        X.sched = !strcmp(e, "warp-reverse") ? SCHED_WARP_REVERSE
                  : !strcmp(e, "thread")     ? SCHED_THREAD
                  : !strcmp(e, "shuffle")    ? SCHED_SHUFFLE
                                             : SCHED_WARP;
        if (strcmp(e, "warp") && X.sched == SCHED_WARP)
            say("SERVAL_EMU_SCHED=%s: unknown, using warp", e);
    }
    if (const char *e = getenv("SERVAL_EMU_POISON"))
        X.poison_each_block = !strcmp(e, "block");
#if !KN_EMU_ASAN
    // fiber stacks end in guard pages: report overflows on a stack of our own
    static uint8_t altstack[64 << 10];
    stack_t ss = {};
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    sigaltstack(&ss, nullptr);
    struct sigaction sa = {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
#endif
}

cudaError_t run_kernel(const kernel_launch &k)
{
    if (X.tls_thread != std::this_thread::get_id()) { // launches of devices run one at a time
        X.tls_thread = std::this_thread::get_id();
        dl_iterate_phdr(find_tls, nullptr);
    }
    X.k = &k;
    X.faulted = false;
    X.retry = false;
    cur_grid_dim = k.grid;
    cur_block_dim = k.block;
    X.n = (int)(k.block.x * k.block.y * k.block.z);
    X.th.assign((size_t)X.n, fiber{});
    for (int i = 0; i < X.n; i++) {
        fiber &f = X.th[i];
        const unsigned bx = k.block.x, by = k.block.y;
        f.ctx.tid = uint3{(unsigned)i % bx, (unsigned)i / bx % by, (unsigned)i / (bx * by)};
        f.ctx.lin = (unsigned)i;
    }
    X.warps.assign((size_t)(X.n + 31) / 32, warp_state{});
    for (size_t w = 0; w < X.warps.size(); w++) {
        const int lanes = std::min(32, X.n - (int)w * 32);
        X.warps[w].exists = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    }
    make_order(X.sched, (int)X.warps.size());
    X.dyn_size = k.smem;
    if (X.dyn_raw.size() < k.smem + 1024)
        X.dyn_raw.resize(k.smem + 1024);
    X.dyn = (uint8_t *)(((uintptr_t)X.dyn_raw.data() + 1023) & ~(uintptr_t)1023);
    poison_shared();
    bool ok = true;
    for (unsigned z = 0; z < k.grid.z && ok; z++)
        for (unsigned y = 0; y < k.grid.y && ok; y++)
            for (unsigned x = 0; x < k.grid.x && ok; x++) {
                cur_block = uint3{x, y, z};
                if (X.poison_each_block && (x | y | z))
                    poison_shared();
                ok = run_block();
            }
    X.k = nullptr;
    cur = nullptr;
    return ok ? cudaSuccess : X.retry ? retry_launch : cudaErrorLaunchFailure;
}

// ---- what kernels call ---------------------------------------------------------------------

void syncthreads()
{
    if (++X.bar_arrived == X.live) { // the last to arrive releases the others and goes on
        X.bar_arrived = 0;
        release(T_BAR, -1);
        return;
    }
    X.running->state = T_BAR;
    yield_to_sched(false);
}

const uint64_t *warp_exchange(unsigned mask, uint64_t v, const char *what)
{
    fiber *f = X.running;
    const unsigned lane = f->ctx.lin % 32, w = f->ctx.lin / 32;
    warp_state &W = X.warps[w];
    char b[200];
    if (!(mask >> lane & 1u)) {
        snprintf(b, sizeof b, "%s with mask 0x%08x, which does not name the calling lane %u", what,
                 mask, lane);
        fault_here(b);
    }
    if (mask & ~W.live) {
        snprintf(b, sizeof b, "%s with mask 0x%08x names lanes 0x%08x that %s", what, mask,
                 mask & ~W.live,
                 (mask & ~W.exists) ? "do not exist (the block is not a whole warp)" : "exited");
        fault_here(b);
    }
    if (W.arrived == 0) {
        W.mask = mask;
        W.what = what;
    } else if (W.mask != mask || W.what != what) {
        snprintf(b, sizeof b,
                 "%s with mask 0x%08x while lanes 0x%08x of the warp wait in %s with mask 0x%08x",
                 what, mask, W.arrived, W.what, W.mask);
        fault_here(b);
    }
    const int buf = W.buf; // double-buffered: the next exchange writes the other half
    W.slot[buf][lane] = v;
    W.arrived |= 1u << lane;
    if (W.arrived == mask) {
        W.arrived = 0;
        W.buf ^= 1;
        release(T_WARP, (int)w);
        return W.slot[buf];
    }
    f->state = T_WARP;
    yield_to_sched(false);
    return W.slot[buf];
}

unsigned live_lanes() { return X.warps[cur->lin / 32].live; }

void *dyn_smem() { return X.dyn_size ? X.dyn : nullptr; }

void trap(const char *what) { fault_here(what); }

void spin_retry()
{
    X.retry = true;
    X.faulted = true; // abandons the launch like a fault, quietly
    X.running->state = T_DONE;
    yield_to_sched(true);
    abort(); // not reached
}

} // namespace kn_emu
