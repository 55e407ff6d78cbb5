#!/usr/bin/env bash
# test.sh — sets everything up (tools/setup.sh) and runs the whole test suite with CTest.
#   tools/test.sh              release build, warnings as errors; then the CUDA emulator build
#   tools/test.sh --asan       the AddressSanitizer + UBSan builds instead (emulator included)
#   tools/test.sh --emu        only the CUDA emulator build (preset emu, build-emu/): the CUDA
#                              kernels and their GPU tests on the CPU (kernels/emu/)
#   tools/test.sh --tsan       ThreadSanitizer (preset tsan, build-tsan/): `serval` built with
#                              TSan, driven by the release build's test_grpc and test_http
#                              (Criterion cannot start under TSan); every report lands in
#                              build-tsan/tsan-report.<pid> and fails the run
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
case "${1:-}" in
"") presets="release emu" ;;
--asan) presets="asan emu-asan" ;;
--emu) presets="emu" ;;
--tsan) presets="tsan" ;;
*) echo "usage: tools/test.sh [--asan | --emu | --tsan]" >&2; exit 2 ;;
esac
# Tests only: Debian's Chromium, for test_status_page's headless-browser check (a big package,
# so setup.sh leaves it off serving machines). Without it that check skips; it does not fail.
install_chromium() {
  command -v chromium >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "test: installing chromium for the status page's browser test" >&2
  local apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get)
  "${apt[@]}" install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
    { "${apt[@]}" update -qq >/dev/null 2>&1 &&
      "${apt[@]}" install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } ||
    echo "test: chromium could not be installed: test_status_page's browser check will skip" >&2
}
for preset in $presets; do
  # the emulator needs the CUDA headers (not a GPU, not the CUDA libraries)
  if [[ $preset == emu* ]] && ! command -v nvcc >/dev/null &&
    [ ! -f /usr/local/cuda/include/cuda_runtime_api.h ]; then
    echo "test: no CUDA toolkit headers: skipping preset $preset" >&2
    continue
  fi
  SERVAL_BUILD_PRESET=$preset tools/setup.sh
  install_chromium
  echo "test: running the suite (preset $preset)" >&2
  if [ "$preset" = tsan ]; then
    # the Criterion runners come from the release build, uninstrumented
    [ -f build/build.ninja ] || SERVAL_BUILD_PRESET=release tools/setup.sh
    cmake --build build --target test_grpc test_http serval_py_stubs
    rm -f build-tsan/tsan-report.*
  fi
  ctest --preset "$preset"
done
