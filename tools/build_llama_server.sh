#!/usr/bin/env bash
# build_llama_server.sh — builds llama.cpp's llama-server (Tabby's engine, serval-bench's peer)
# from the llama-cpp-python source distribution, CPU only, outside the git tree. Dev time only.
#
#   tools/build_llama_server.sh              build (or say where the existing build is)
#   tools/build_llama_server.sh --print      print the binary's path, build nothing
#
# Where things go (override with the variables):
#   SERVAL_LLAMA_SDIST    the sdist tarball; default: the pip cache copy, else /work/ref's,
#                         else `pip download --no-binary :all: --no-deps` (the only network use)
#   SERVAL_LLAMA_VERSION  llama-cpp-python version (default 0.3.36, the one the repo's
#                         llama.cpp fixtures and tools/bench_llamacpp.py were made with)
#   SERVAL_LLAMA_HOME     output root (default ~/.cache/serval/llama-server): src/ build/ bin/
#   SERVAL_LLAMA_NATIVE   ON (default): -march=native; OFF: portable AVX2 build
#   SERVAL_LLAMA_JOBS     parallel compile jobs (default 2)
#
# The binary lands in $SERVAL_LLAMA_HOME/bin/llama-server. Re-running is a no-op when the binary
# exists and was built from the same version with the same options (a stamp file records them).
# No web UI is fetched (LLAMA_USE_PREBUILT_UI=OFF), no OpenSSL, no tests or examples.
# Run it under `nice -n 10` on a shared machine: it compiles for several minutes.
set -euo pipefail

version=${SERVAL_LLAMA_VERSION:-0.3.36}
home=${SERVAL_LLAMA_HOME:-$HOME/.cache/serval/llama-server}
native=${SERVAL_LLAMA_NATIVE:-ON}
jobs=${SERVAL_LLAMA_JOBS:-2}
bin="$home/bin/llama-server"

log() { printf 'build_llama_server: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "${1:-}" in
  --print) echo "$bin"; exit 0 ;;
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac
case "$native" in ON|OFF) ;; *) die "SERVAL_LLAMA_NATIVE must be ON or OFF, not '$native'" ;; esac

stamp_want="llama-cpp-python=$version native=$native"
if [ -x "$bin" ] && [ "$(cat "$home/bin/STAMP" 2>/dev/null)" = "$stamp_want" ]; then
  log "up to date: $bin ($stamp_want)"
  echo "$bin"
  exit 0
fi

for tool in cmake tar c++; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (tools/setup.sh installs it)"
done

# ---- the sdist ------------------------------------------------------------------------------
mkdir -p "$home"
sdist=${SERVAL_LLAMA_SDIST:-}
if [ -z "$sdist" ]; then
  for cand in "$home/llama_cpp_python-$version.tar.gz" "/work/ref/llama_cpp_python-$version.tar.gz"; do
    if [ -f "$cand" ]; then sdist=$cand; break; fi
  done
fi
if [ -z "$sdist" ]; then
  command -v pip >/dev/null || command -v pip3 >/dev/null || die "no sdist and no pip to fetch it"
  log "downloading the llama-cpp-python $version sdist from the package registry"
  "$(command -v pip || command -v pip3)" download --no-binary :all: --no-deps \
      --dest "$home" "llama-cpp-python==$version" >&2
  sdist=$(ls "$home"/llama_cpp_python-"$version".tar.gz 2>/dev/null | head -1)
  [ -n "$sdist" ] || die "pip download did not leave llama_cpp_python-$version.tar.gz in $home"
fi
[ -f "$sdist" ] || die "sdist '$sdist' does not exist"

src="$home/src/llama_cpp_python-$version"
if [ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]; then
  log "unpacking $sdist"
  mkdir -p "$home/src"
  tar -xzf "$sdist" -C "$home/src"
  [ -f "$src/vendor/llama.cpp/CMakeLists.txt" ] ||
    die "$sdist has no vendor/llama.cpp (is it the llama-cpp-python sdist?)"
fi

# ---- configure and build llama-server only --------------------------------------------------
build="$home/build-native-$native"
log "configuring in $build (GGML_NATIVE=$native)"
extra=()
if [ "$native" = OFF ]; then extra+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON); fi
cmake -S "$src/vendor/llama.cpp" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_NATIVE="$native" -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_OPENSSL=OFF "${extra[@]}" >&2
log "building llama-server with $jobs jobs (several minutes on 2 cores)"
cmake --build "$build" -j "$jobs" --target llama-server >&2

built="$build/bin/llama-server"
[ -x "$built" ] || die "the build finished without $built"
mkdir -p "$home/bin"
cp -f "$built" "$bin.tmp" && mv -f "$bin.tmp" "$bin"
echo "$stamp_want" >"$home/bin/STAMP"
"$bin" --version >&2 2>&1 || die "$bin does not run on this machine"
log "built $bin"
echo "$bin"
