#!/usr/bin/env bash
# run.sh — sets everything up (tools/setup.sh) and runs Serval's main job: `serval serve` on the
# default model (gRPC 127.0.0.1:50051, HTTP 127.0.0.1:8080). Arguments go to `serval serve`.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
tools/setup.sh
exec build/bin/serval serve "$@"
