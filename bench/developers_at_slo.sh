#!/usr/bin/env bash
# developers_at_slo.sh — one server configuration's "developers at SLO", the way bench/RESULTS.md
# compares Serval with llama.cpp's llama-server (Tabby's engine): start the server, wait for it,
# run serval-bench --search with the fixed workload below, stop the server, keep the command.
#
#   bench/developers_at_slo.sh NAME OUT -- SERVER COMMAND ...
#
# The server command must listen on http://127.0.0.1:$PORT (PORT below; put "$PORT" in it).
# Results land in OUT/NAME/: search.json (per repetition, mean, 95% CI), search.png, every
# trial's requests.jsonl/summary.json, server.log, command.txt (the exact commands, the CPU, the
# commit). Everything below can be overridden from the environment:
#   PORT=19030 TARGET=llamacpp STREAM=1 MAX_TOKENS=64 SLO_MS=2000 DURATION=15 REPEATS=3
#   START=4 SEARCH_MAX=64 REPOS=<source dir> SEED=1 BENCH=build/bin/serval-bench EXTRA=""
#   METRICS_TOKEN=<admin token, for OUT/NAME/metrics_end.txt when the server checks tokens>
# TARGET llamacpp sends llama.cpp's POST /completion {prompt, n_predict, stream, temperature 0,
# cache_prompt}: the same request to Serval's route of that shape and to llama-server, so both
# compute the same tokens (the prefix window as the prompt, MAX_TOKENS greedy tokens).
set -euo pipefail

if [ $# -lt 4 ] || [ "$3" != "--" ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
name=$1 out=$2
shift 3
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-19030} TARGET=${TARGET:-llamacpp} STREAM=${STREAM:-1} MAX_TOKENS=${MAX_TOKENS:-64}
SLO_MS=${SLO_MS:-2000} DURATION=${DURATION:-15} REPEATS=${REPEATS:-3} START=${START:-4}
SEARCH_MAX=${SEARCH_MAX:-64} SEED=${SEED:-1} REPOS=${REPOS:-$top/engine}
BENCH=${BENCH:-$top/build/bin/serval-bench} EXTRA=${EXTRA:-}
dir="$out/$name"
mkdir -p "$dir"

cmd=("$@")
for i in "${!cmd[@]}"; do cmd[$i]=${cmd[$i]//\$PORT/$PORT}; done
"${cmd[@]}" >"$dir/server.log" 2>&1 &
pid=$!
stop() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; }
trap stop EXIT
probe=/health
[ "$TARGET" = tabby ] && probe=/v1/health
for _ in $(seq 1 600); do
  kill -0 "$pid" 2>/dev/null || { echo "developers_at_slo: the server exited:" >&2;
                                  tail -5 "$dir/server.log" >&2; exit 1; }
  curl -sf "http://127.0.0.1:$PORT$probe" >/dev/null 2>&1 && break
  sleep 0.1
done
# One warm-up request (llama.cpp's /completion shape, which both servers serve), so that
# neither server's first trial pays for its cold start.
curl -s -o /dev/null -H 'Content-Type: application/json' \
  -d '{"prompt":"int main(void)\n{\n    return 0;\n}\n","n_predict":8,"temperature":0}' \
  "http://127.0.0.1:$PORT/completion" || true
sleep 1

args=(--target "$TARGET" --url "http://127.0.0.1:$PORT" --repos "$REPOS" --out "$dir"
      --search --slo-ms "$SLO_MS" --duration "$DURATION" --search-repeats "$REPEATS"
      --search-start "$START" --search-max "$SEARCH_MAX" --max-tokens "$MAX_TOKENS"
      --grace 5 --seed "$SEED" --plot)
[ "$STREAM" = 1 ] && args+=(--stream)
# shellcheck disable=SC2206
[ -n "$EXTRA" ] && args+=($EXTRA)
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')," \
       "family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')" \
       "model $(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), $(nproc) cores," \
       "$(grep -o -w 'avx512f\|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "commit: $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "server: ${cmd[*]}"
  echo "bench: $BENCH ${args[*]}"
} >"$dir/command.txt"
"$BENCH" "${args[@]}" | tee "$dir/headline.txt"
# The server's counters over the whole search (speculation drafted/accepted/passes, supersedes,
# prefix hits, wasted tokens): Serval's /metrics; servers without it leave an empty file.
# METRICS_TOKEN: a token with the admin scope when the server checks tokens.
curl -s ${METRICS_TOKEN:+-H "Authorization: Bearer $METRICS_TOKEN"} \
  "http://127.0.0.1:$PORT/metrics" >"$dir/metrics_end.txt" 2>/dev/null || true
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$dir/command.txt"
