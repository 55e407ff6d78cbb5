#!/usr/bin/env bash
# tools/kernel_resources.sh — registers, spills and shared memory of every kernel in kernels/*.cu
# for sm_90a and sm_80, from ptxas (`nvcc --resource-usage`), with no GPU needed. Prints one
# table row per kernel instantiation; fails when any kernel spills or uses more registers than
# the budget. The ctest `kernel_resources` runs it; kernels/resources.txt is its committed output.
#   tools/kernel_resources.sh                      # table on stdout, exit 1 on a spill
#   tools/kernel_resources.sh --write kernels/resources.txt
#   REG_BUDGET=200 tools/kernel_resources.sh       # the register ceiling (default 255: none spills)
# Exit 77 (ctest: skipped) when nvcc is not installed.
set -u
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
# 206 registers is the largest today (decode attention, head size 256, 8 query heads per CTA):
# the budget leaves room for one tuning step but flags a kernel that creeps towards 255.
REG_BUDGET=${REG_BUDGET:-232}
WRITE=""
[ "${1:-}" = "--write" ] && WRITE=${2:?--write needs a file}
if [ ! -x "$NVCC" ]; then
    echo "kernel_resources: no nvcc, skipped"
    exit 77
fi
FILT=$(dirname "$NVCC")/cu++filt
[ -x "$FILT" ] || FILT=c++filt
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# One nvcc per file, both architectures, two at a time (the CI machines have two cores).
ls kernels/*.cu | xargs -P "${JOBS:-2}" -I{} sh -c '
    f={}; b=$(basename "$f" .cu)
    "$0" -O3 -std=c++17 --resource-usage -Ikernels \
        --generate-code=arch=compute_90a,code=sm_90a --generate-code=arch=compute_80,code=sm_80 \
        -c "$f" -o /dev/null > "$1/$b.log" 2>&1 || echo "FAILED" >> "$1/$b.log"' "$NVCC" "$TMP"

fail=0
for log in "$TMP"/*.log; do
    if grep -q '^FAILED' "$log"; then
        echo "kernel_resources: nvcc failed on kernels/$(basename "$log" .log).cu:" >&2
        grep -v '^ptxas' "$log" | head -20 >&2
        fail=1
    fi
done
[ $fail = 0 ] || exit 1

# ptxas prints, per entry function and architecture:
#   Compiling entry function '<mangled>' for 'sm_90a'
#   ... N bytes stack frame, S bytes spill stores, L bytes spill loads
#   Used R registers, ... B bytes smem, ...
for log in "$TMP"/*.log; do
    src=$(basename "$log" .log)
    awk -v src="$src" '
        /Compiling entry function/ { fn = $0; sub(/.*function \047/, "", fn); sub(/\047.*/, "", fn);
                                     arch = $0; sub(/.*for \047/, "", arch); sub(/\047.*/, "", arch);
                                     stack = st = ld = 0; next }
        fn != "" && /bytes stack frame/ { stack = $1; st = $5; ld = $9; next }
        fn != "" && /Used [0-9]+ registers/ {
            regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs);
            smem = 0; if ($0 ~ /bytes smem/) { smem = $0; sub(/ bytes smem.*/, "", smem); sub(/.*, /, "", smem) }
            print src "\t" arch "\t" regs "\t" st "\t" ld "\t" stack "\t" smem "\t" fn; fn = "" }
    ' "$log"
done > "$TMP/rows.tsv"

# demangle the names, shorten the template arguments
cut -f8 "$TMP/rows.tsv" | "$FILT" | sed -e 's/__nv_bfloat16/bf16/g; s/__half/f16/g' \
    -e 's/^void //' -e 's/(.*//' -e 's/ //g' > "$TMP/names.txt"
paste <(cut -f1-7 "$TMP/rows.tsv") "$TMP/names.txt" | sort -k1,1 -k8,8 -k2,2 > "$TMP/table.tsv"

{
    echo "# kernels/resources.txt — ptxas resource usage of every kernel (tools/kernel_resources.sh,"
    echo "# $("$NVCC" --version | tail -1 | sed 's/^Build //'), -O3). regs: registers per thread; spill: bytes"
    echo "# stored/loaded per thread; stack: bytes of stack frame; smem: static shared memory per CTA"
    echo "# (dynamic shared memory, e.g. the tensor-core prefill's, is not included)."
    printf "%-20s %-7s %5s %11s %6s %7s  %s\n" "# file" "arch" "regs" "spill st/ld" "stack" "smem" "kernel"
    awk -F'\t' '{ printf "%-20s %-7s %5s %5s/%-5s %6s %7s  %s\n", $1 ".cu", $2, $3, $4, $5, $6, $7, $8 }' \
        "$TMP/table.tsv"
} > "$TMP/resources.txt"
cat "$TMP/resources.txt"
[ -n "$WRITE" ] && cp "$TMP/resources.txt" "$WRITE"

n=$(wc -l < "$TMP/table.tsv")
[ "$n" -gt 0 ] || { echo "kernel_resources: no kernels parsed from ptxas output" >&2; exit 1; }
bad=$(awk -F'\t' -v budget="$REG_BUDGET" '$4 > 0 || $5 > 0 || $3 > budget {
        print "  " $1 ".cu " $2 " " $8 ": " $3 " registers, spill " $4 "/" $5 " bytes" }' "$TMP/table.tsv")
if [ -n "$bad" ]; then
    echo "kernel_resources: FAIL — spills or more than $REG_BUDGET registers:"
    echo "$bad"
    exit 1
fi
echo "kernel_resources: $n kernel instantiations (sm_90a and sm_80), no spills, at most" \
     "$(awk -F'\t' 'BEGIN{m=0} $3>m{m=$3} END{print m}' "$TMP/table.tsv") registers (budget $REG_BUDGET)"
