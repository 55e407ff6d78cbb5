#!/usr/bin/env bash
# test.sh — sets everything up (tools/setup.sh) and runs the whole test suite with CTest.
#   tools/test.sh              release build, warnings as errors
#   tools/test.sh --asan       the AddressSanitizer + UBSan build instead
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
preset=release
if [ "${1:-}" = "--asan" ]; then preset=asan; fi
SERVAL_BUILD_PRESET=$preset tools/setup.sh
echo "test: running the suite (preset $preset)" >&2
ctest --preset "$preset"
