#!/usr/bin/env bash
# tools/gpu_check.sh — what a session with a GPU runs first, in one go and within 10 minutes
# including the build: builds the engine-only `gpu` preset with the kernel tests (standalone
# runner, no Criterion needed), runs every kernel test against its CPU reference, optionally
# under compute-sanitizer, records ptxas' registers/spills/shared memory per kernel, then the
# kernel workbench (bench_kernels: every model-sized case validated against kernels/ref, then
# timed with an L2 flush, as a fraction of the device's ceilings). Writes logs and results
# under $OUT (default ./gpu-check-out): gpu_check.log, <test>.log, resources.txt,
# bench_kernels.txt (and with ENGINE=1 cuda_check*.txt, engine_bench.txt). From the repo root:
#   OUT=/tmp/out tools/gpu_check.sh            # build + tests + bench
#   SANITIZE=1 tools/gpu_check.sh              # also compute-sanitizer memcheck on the tests
#   ARCHS=90a tools/gpu_check.sh               # build only for Hopper (faster)
#   SPEC=1 tools/gpu_check.sh                  # speculative decoding on/off, batch 1-8
#                                              # (bench_spec: spec_bench.txt)
#   ENGINE=1 tools/gpu_check.sh                # then the CUDA backend end to end (serval-cuda-check:
#                                              # vs the CPU backend; on the default model too when
#                                              # it is there; starcoder, starcoder2 and linear
#                                              # RoPE scaling, tiny and real shapes) + engine
#                                              # benchmarks (StarCoder-1B, StarCoder2-3B too);
#                                              # with 2+ GPUs, tensor parallelism vs one GPU
#                                              # (kt-tp-cuda: tp_check.txt)
# ENGINE=1 needs a GGUF to copy a vocabulary from (the real default model is too big to travel):
# make one here with `build/bin/serval-synth --preset tiny --vocab-from models/SmolLM2-135M-
# Instruct.Q4_1.gguf --out models/vocab.gguf` and name models/vocab.gguf in the device call's carry.
set -u
OUT=${OUT:-$PWD/gpu-check-out}
ARCHS=${ARCHS:-90a}
BUILD=${BUILD:-build-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
nvcc --version | tail -2

echo "== configure ($BUILD, CUDA archs $ARCHS)"
cmake --preset gpu -B "$BUILD" -DSERVAL_TESTS=KERNELS -DSERVAL_WERROR=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" > "$OUT/configure.log" 2>&1 || {
    tail -30 "$OUT/configure.log"; echo "configure failed"; exit 1; }

echo "== build kernels, kernel tests, bench_kernels"
# Only the test targets this configure defines: test_emu exists in emulator builds only,
# test_comm_nccl where NCCL was found (a missing target would fail the whole build).
KNOWN=$(ninja -C "$BUILD" -t targets all 2>/dev/null | sed -n 's/^\(test_[A-Za-z0-9_]*\): .*/\1/p')
TESTS=""
for t in $(cd tests/kernels && ls test_*.c | sed 's/\.c$//'); do
    if grep -qx "$t" <<< "$KNOWN"; then TESTS="$TESTS $t"; else echo "   ($t: not a target of this build, skipped)"; fi
done
ninja -C "$BUILD" -j "$(nproc)" serval_kernels bench_kernels $TESTS > "$OUT/build.log" 2>&1 || {
    tail -40 "$OUT/build.log"; echo "build failed"; exit 1; }

echo "== kernel tests"
fail=0
for t in $TESTS; do
    echo "-- $t"
    if ! timeout 300 "$BUILD/bin/$t" > "$OUT/$t.log" 2>&1; then
        fail=1
    fi
    grep -E "^\[(PASS|FAIL|CRASH|SKIP)\]|Synthesis|assertion|skipped" "$OUT/$t.log" | sed 's/^/   /'
done

if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer > /dev/null; then
    echo "== compute-sanitizer memcheck"
    for t in $TESTS; do
        case $t in test_ref_*) continue ;; esac
        timeout 300 compute-sanitizer --tool memcheck --leak-check no "$BUILD/bin/$t" \
            > "$OUT/$t.memcheck.log" 2>&1 || fail=1
        grep -E "ERROR SUMMARY|Synthesis" "$OUT/$t.memcheck.log" | sed "s/^/   $t: /"
    done
fi

echo "== kernel resources (ptxas: registers, spills, shared memory; sm_90a and sm_80)"
JOBS=$(nproc) timeout 300 tools/kernel_resources.sh > "$OUT/resources.txt" 2>&1 || fail=1
tail -1 "$OUT/resources.txt"

echo "== bench_kernels (validate each case against kernels/ref, then time)"
timeout 420 "$BUILD/bin/bench_kernels" 2>&1 | tee "$OUT/bench_kernels.txt"
[ "${PIPESTATUS[0]}" = 0 ] || fail=1

if [ "${ENGINE:-0}" = 1 ]; then
    VOCAB=${VOCAB:-models/vocab.gguf}
    BW=${BW:-3000}        # measured copy bandwidth, GB/s (../shared/reference/performance.md)
    TF=${TF:-790}         # measured cuBLAS bf16 TFLOP/s
    echo "== engine: build serval-synth, serval-cuda-check, bench_engine"
    ninja -C "$BUILD" -j "$(nproc)" serval-synth serval-cuda-check bench_engine \
        > "$OUT/build_engine.log" 2>&1 || { tail -40 "$OUT/build_engine.log"; exit 1; }
    for p in smollm2-135m llama-1b; do
        [ -f "$BUILD/$p.gguf" ] || "$BUILD/bin/serval-synth" --preset $p --vocab-from "$VOCAB" \
            --dtype q8_0 --out "$BUILD/$p.gguf" > /dev/null || { echo "synth $p failed"; exit 1; }
    done
    echo "== engine: CUDA backend vs CPU backend (synthetic smollm2-135m)"
    timeout 300 "$BUILD/bin/serval-cuda-check" --model "$BUILD/smollm2-135m.gguf" 2>&1 \
        | tee "$OUT/cuda_check.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || fail=1
    # issue #13's families: the tiny presets the emulator checks (f16 weights: the fp16 run is
    # held to 1% of the CPU backend) and real shapes at 4 layers (Q8_0), on the committed
    # 4096-token vocabulary, which travels with the tree
    FAM_VOCAB=tests/fixtures/families/vocab-smollm-4096.gguf
    echo "== engine: CUDA backend vs CPU backend (starcoder, starcoder2, linear RoPE scaling)"
    for spec in starcoder-tiny:f16 starcoder2-tiny:f16 deepseek-coder-tiny:f16 \
                starcoder-1b:q8_0:4 starcoder2-3b:q8_0:4 deepseek-coder-1.3b:q8_0:4; do
        IFS=: read -r p dt nl <<< "$spec"
        f="$BUILD/fam-$p.gguf"
        [ -f "$f" ] || "$BUILD/bin/serval-synth" --preset "$p" --dtype "$dt" ${nl:+--layers $nl} \
            --vocab-from "$FAM_VOCAB" --out "$f" > /dev/null || { echo "synth $p failed"; fail=1; continue; }
        lim=""
        [ "$dt" = f16 ] && lim="--fp16-limit 0.01"
        timeout 300 "$BUILD/bin/serval-cuda-check" --model "$f" $lim 2>&1 | sed "s/^/$p: /" \
            | tee -a "$OUT/cuda_check_families.txt"
        [ "${PIPESTATUS[0]}" = 0 ] || fail=1
    done
    # what tests/engine/test_backend_cuda.c ran (it could only skip on the CPU machines)
    DEFAULT_MODEL=${DEFAULT_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
    if [ -f "$DEFAULT_MODEL" ]; then
        echo "== engine: CUDA backend vs CPU backend ($DEFAULT_MODEL)"
        timeout 300 "$BUILD/bin/serval-cuda-check" --model "$DEFAULT_MODEL" 2>&1 \
            | tee "$OUT/cuda_check_default.txt"
        [ "${PIPESTATUS[0]}" = 0 ] || fail=1
    fi
    # the bert encoder on CUDA vs the CPU encoder and a whole embedder on each (kt-encoder-cuda;
    # carry models/all-MiniLM-L6-v2.f16.gguf, 46 MB, for it to run)
    EMBED_MODEL=${EMBED_MODEL:-models/all-MiniLM-L6-v2.f16.gguf}
    if [ -f "$EMBED_MODEL" ] && ninja -C "$BUILD" kt-encoder-cuda > "$OUT/build_encoder.log" 2>&1; then
        echo "== engine: bert encoder on CUDA vs the CPU encoder ($EMBED_MODEL)"
        timeout 120 "$BUILD/bin/kt-encoder-cuda" --model "$EMBED_MODEL" 2>&1 \
            | tee "$OUT/encoder_check.txt"
        [ "${PIPESTATUS[0]}" = 0 ] || fail=1
    else
        echo "== engine: bert encoder check skipped (no $EMBED_MODEL, or $OUT/build_encoder.log)"
    fi
    # tensor parallelism over 2 and 4 GPUs against one (kt-tp-cuda; NCCL builds, 2+ GPUs)
    NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
    if [ "$NGPU" -ge 2 ] && ninja -C "$BUILD" kt-tp-cuda > "$OUT/build_tp.log" 2>&1; then
        echo "== engine: tensor parallelism, $NGPU GPUs (kt-tp-cuda, tiny presets)"
        for p in starcoder-tiny starcoder2-tiny deepseek-coder-tiny; do
            timeout 120 "$BUILD/bin/kt-tp-cuda" --model "$BUILD/fam-$p.gguf" 2>&1 \
                | sed "s/^/$p: /" | tee -a "$OUT/tp_check.txt"
            [ "${PIPESTATUS[0]}" = 0 ] || fail=1
        done
    else
        echo "== engine: tensor parallelism skipped ($NGPU GPUs, or no NCCL: $OUT/build_tp.log)"
    fi
    echo "== engine: decode and prefill throughput, then the HF Transformers peer"
    for p in smollm2-135m llama-1b; do
        for b in 1 8 64 256; do
            timeout 120 "$BUILD/bin/bench_engine" --backend cuda --model "$BUILD/$p.gguf" \
                --kv-mb 0 --max-running 256 --step-tokens 2048 --requests $b --prompt 128 \
                --output 128 --bandwidth-gbs "$BW" --tflops "$TF" 2>&1 | sed "s/^/$p b$b: /"
        done
        timeout 120 "$BUILD/bin/bench_engine" --backend cuda --model "$BUILD/$p.gguf" --kv-mb 0 \
            --max-running 64 --step-tokens 8192 --requests 16 --prompt 1536 --output 1 \
            --bandwidth-gbs "$BW" --tflops "$TF" 2>&1 | sed "s/^/$p prefill: /"
        # what the decode graphs buy: batch 64 again with every kernel launched each step
        timeout 120 "$BUILD/bin/bench_engine" --backend cuda --model "$BUILD/$p.gguf" \
            --kv-mb 0 --max-running 256 --step-tokens 2048 --requests 64 --prompt 128 \
            --output 128 --no-graphs --bandwidth-gbs "$BW" --tflops "$TF" 2>&1 \
            | sed "s/^/$p b64 no-graphs: /"
        timeout 300 python3 bench/hf_peer.py --preset $p --batches 1,8,64,256 --prompt 128 \
            --output 128 2>&1 | grep -v Warning
    done 2>&1 | tee "$OUT/engine_bench.txt"
    # StarCoder-1B whole, StarCoder2-3B at 8 of its 30 layers (the synthetic file of all 30 takes
    # minutes to write): decode at batch 1 and 64, one prefill run (LayerNorm, GELU and the bias
    # launches are what differs from the llama presets above)
    for spec in starcoder-1b:24 starcoder2-3b:8; do
        IFS=: read -r p nl <<< "$spec"
        f="$BUILD/$p-$nl.gguf"
        [ -f "$f" ] || "$BUILD/bin/serval-synth" --preset "$p" --layers "$nl" --vocab-from "$VOCAB" \
            --dtype q8_0 --out "$f" > /dev/null || { echo "synth $p failed"; continue; }
        for b in 1 64; do
            timeout 120 "$BUILD/bin/bench_engine" --backend cuda --model "$f" --kv-mb 0 \
                --max-running 256 --step-tokens 2048 --requests $b --prompt 128 --output 128 \
                --bandwidth-gbs "$BW" --tflops "$TF" 2>&1 | sed "s/^/$p-$nl b$b: /"
        done
        timeout 120 "$BUILD/bin/bench_engine" --backend cuda --model "$f" --kv-mb 0 \
            --max-running 64 --step-tokens 8192 --requests 16 --prompt 1536 --output 1 \
            --bandwidth-gbs "$BW" --tflops "$TF" 2>&1 | sed "s/^/$p-$nl prefill: /"
    done 2>&1 | tee -a "$OUT/engine_bench.txt"
fi

if [ "${SPEC:-0}" = 1 ]; then
    # Speculative decoding drafted from the prompt (engine/batch/spec.h): decode tokens/s with it
    # on and off at batch 1-8 on code prompts cut from this machine's Python standard library.
    # Drafts are only accepted by a trained model: the default model when it is here; the
    # synthetic models (random weights) show what drafting costs when nothing is accepted.
    VOCAB=${VOCAB:-models/vocab.gguf}
    DEFAULT_MODEL=${DEFAULT_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
    CODE_DIR=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])' 2>/dev/null)
    echo "== speculation: build bench_spec, serval-synth (code from ${CODE_DIR:-nowhere})"
    ninja -C "$BUILD" -j "$(nproc)" bench_spec serval-synth > "$OUT/build_spec.log" 2>&1 || {
        tail -40 "$OUT/build_spec.log"; exit 1; }
    models=""
    [ -f "$DEFAULT_MODEL" ] && models="$DEFAULT_MODEL"
    for p in smollm2-135m llama-1b; do
        [ -f "$BUILD/$p.gguf" ] || "$BUILD/bin/serval-synth" --preset $p --vocab-from "$VOCAB" \
            --dtype q8_0 --out "$BUILD/$p.gguf" > /dev/null || { echo "synth $p failed"; continue; }
        models="$models $BUILD/$p.gguf"
    done
    for mdl in $models; do
        for sst in 64 16; do # --spec-step-tokens: the backend's default, and a tighter cap
            timeout 240 "$BUILD/bin/bench_spec" --backend cuda --model "$mdl" --kv-mb 0 \
                --batch 1,2,4,8 --output 128 --repeat 3 --spec-step-tokens $sst \
                ${CODE_DIR:+--code-dir "$CODE_DIR"} 2>&1 | sed "s|^|$(basename "$mdl") sst$sst: |"
        done
    done 2>&1 | tee "$OUT/spec_bench.txt"
fi

echo "== result: $([ $fail = 0 ] && echo ALL PASSED || echo FAILURES, see $OUT)"
exit $fail
