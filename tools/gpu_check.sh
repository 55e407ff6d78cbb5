#!/usr/bin/env bash
# tools/gpu_check.sh — what a session with a GPU runs first: builds the engine-only `gpu`
# preset with the kernel tests (standalone runner, no Criterion needed), runs every kernel
# test against its CPU reference, optionally under compute-sanitizer, then the kernel
# benchmarks. Writes logs under $OUT (default ./gpu-check-out). Run from the repo root:
#   OUT=/tmp/out tools/gpu_check.sh            # build + tests + bench
#   SANITIZE=1 tools/gpu_check.sh              # also compute-sanitizer memcheck on the tests
#   ARCHS=90a tools/gpu_check.sh               # build only for Hopper (faster)
set -u
OUT=${OUT:-$PWD/gpu-check-out}
ARCHS=${ARCHS:-90a}
BUILD=${BUILD:-build-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
nvcc --version | tail -2

echo "== configure ($BUILD, CUDA archs $ARCHS)"
cmake --preset gpu -B "$BUILD" -DSERVAL_KERNEL_TESTS=ON -DSERVAL_WERROR=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" > "$OUT/configure.log" 2>&1 || {
    tail -30 "$OUT/configure.log"; echo "configure failed"; exit 1; }

echo "== build kernels, kernel tests, bench_kernels"
TESTS=$(cd tests/kernels && ls test_*.c | sed 's/\.c$//')
ninja -C "$BUILD" -j "$(nproc)" serval_kernels bench_kernels $TESTS > "$OUT/build.log" 2>&1 || {
    tail -40 "$OUT/build.log"; echo "build failed"; exit 1; }

echo "== kernel tests"
fail=0
for t in $TESTS; do
    echo "-- $t"
    if ! timeout 300 "$BUILD/bin/$t" > "$OUT/$t.log" 2>&1; then
        fail=1
    fi
    grep -E "^\[(PASS|FAIL|CRASH|SKIP)\]|Synthesis|assertion|skipped" "$OUT/$t.log" | sed 's/^/   /'
done

if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer > /dev/null; then
    echo "== compute-sanitizer memcheck"
    for t in $TESTS; do
        case $t in test_ref_*) continue ;; esac
        timeout 300 compute-sanitizer --tool memcheck --leak-check no "$BUILD/bin/$t" \
            > "$OUT/$t.memcheck.log" 2>&1 || fail=1
        grep -E "ERROR SUMMARY|Synthesis" "$OUT/$t.memcheck.log" | sed "s/^/   $t: /"
    done
fi

echo "== bench_kernels"
timeout 300 "$BUILD/bin/bench_kernels" 2>&1 | tee "$OUT/bench_kernels.txt" || fail=1

echo "== result: $([ $fail = 0 ] && echo ALL PASSED || echo FAILURES, see $OUT)"
exit $fail
