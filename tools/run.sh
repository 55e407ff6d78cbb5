#!/usr/bin/env bash
# run.sh — sets everything up (tools/setup.sh) and runs Serval's main job on the default model.
# Until the network server lands this is `serval complete`; arguments are passed through.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
tools/setup.sh
if [ $# -eq 0 ]; then
  set -- complete --prompt $'<|im_start|>user\nWrite a Python function that returns the n-th Fibonacci number.<|im_end|>\n<|im_start|>assistant\n' --max-tokens 128
fi
exec build/bin/serval "$@"
