#!/usr/bin/env bash
# tools/fuzz.sh — builds the libFuzzer targets (cmake --preset fuzz) and runs each one.
#
# usage: tools/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  how long to run each target (default 120)
#   TARGET   names like fuzz_gguf (default: every build-fuzz/bin/fuzz_* binary)
# Each target starts from tests/fuzz/corpus_<name>/ when that folder exists (fuzz_gguf reads
# tests/fuzz/corpus_gguf/) and keeps what it finds in build-fuzz/corpus/<name>/, which
# persists between runs. A crash leaves its input in build-fuzz/artifacts/ and fails the run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-120}"
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]]; then
    echo "fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2
    exit 2
fi

cd "$root"
cmake --preset fuzz >/dev/null
cmake --build build-fuzz

targets=()
if [ "$#" -gt 0 ]; then
    for t in "$@"; do targets+=("build-fuzz/bin/$t"); done
else
    for b in build-fuzz/bin/fuzz_*; do [ -x "$b" ] && targets+=("$b"); done
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz.sh: no fuzz targets in build-fuzz/bin" >&2
    exit 1
fi

failed=0
mkdir -p build-fuzz/artifacts
for bin in "${targets[@]}"; do
    name="$(basename "$bin")"
    short="${name#fuzz_}"
    work="build-fuzz/corpus/$short"
    mkdir -p "$work"
    seeds=()
    [ -d "tests/fuzz/corpus_$short" ] && seeds+=("tests/fuzz/corpus_$short")
    echo "== $name: ${secs}s (seeds: ${seeds[*]:-none})"
    if ! "$bin" -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="build-fuzz/artifacts/$name-" "$work" "${seeds[@]}" \
        >"build-fuzz/$name.log" 2>&1; then
        echo "!! $name failed: see build-fuzz/$name.log and build-fuzz/artifacts/" >&2
        tail -n 40 "build-fuzz/$name.log" >&2
        failed=1
    else
        grep -E '^stat::(number_of_executed_units|new_units_added)' "build-fuzz/$name.log" || true
    fi
done
exit "$failed"
