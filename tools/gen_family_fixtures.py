#!/usr/bin/env python3
"""Generate the llama.cpp parity fixtures of each model family and quantisation type.

Dev-time only: needs `llama-cpp-python` (0.3.36), `gguf` and `numpy`, and a built
`serval-synth` (build/bin/).  Serval never depends on any of them; the tests only
read the small files this script commits (tests/fixtures/families/).

For every parity preset of serval-synth (llama-parity, deepseek-coder-parity,
qwen2-parity, starcoder-parity, starcoder2-parity):

 1. serval-synth writes the F16 file of the preset (seeded weights, the
    4096-token vocabulary below).
 2. llama.cpp quantises it (llama_model_quantize, no importance matrix,
    params.pure = True so that every matrix gets the type) into each type of
    TYPES[preset]; for llama-parity also the mixed presets Q4_K_M and Q5_K_M
    (pure = False: llama.cpp picks a type per tensor, recorded as
    "tensor_types").
 3. The sha256 of every tensor's data in llama.cpp's file is recorded, and
    serval-synth's own file for the same preset, seed and type
    (`--dtype T --from-f16`, plus `--tensor-type` for the mixed ones) must
    have the same bytes: the script stops if one tensor differs.
 4. llama.cpp evaluates PROMPT (Llama(logits_all=True, n_threads=2), one
    batch) and records, per position, a 16-hex-digit prefix of the sha256 of
    the whole float32 logit row ("row_sha"), and at POSITIONS the top-32
    [id, logit] pairs (logits exact: float32 values printed as Python floats)
    and the mean / population std of the row (float64, 9 digits).
 5. A greedy continuation of GREEDY_N tokens: each step re-evaluates the whole
    sequence in one batch and takes the argmax of the last row (lowest id on
    ties), as tests/fixtures/llamacpp/greedy.jsonl does (llama.cpp's
    single-token decode path is not bit-identical to its own batch path;
    Serval's results never depend on batching).

The vocabulary: the first 4096 tokens of the default model's (SmolLM2,
byte-level BPE, pre-tokenizer smollm) with the merges among them, written to
tests/fixtures/families/vocab-smollm-4096.gguf (vocab only).  4096 rows keep
the models small (~2.5M parameters) and, like every real code model's
vocabulary, a multiple of 8: llama.cpp's x86 build repacks Q4_0 and Q4_K
matrices whose row count is a multiple of 8 (ggml-cpu/repack.cpp) and
computes them with other kernels, so a vocabulary of 4022 tokens would give
the output matrix different arithmetic from the rest.

Which kernels that exercises (llama.cpp 0.3.36's x86 build, a 44-token batch): Q8_0 and Q5_0
through tinyBLAS (llamafile sgemm), Q4_1 and Q5_1 through ggml_vec_dot_*, Q4_0 and Q4_K through
the repacked 8x8 gemm (four tokens at a time; PROMPT is a multiple of four tokens so no row
comes from the single-token gemv, which rounds Q4_K differently), Q5_K and Q6_K through the
tiled K-quant matmul (eight tokens or more; GGML_CPU_TILED_MM unset).  Each greedy step
re-evaluates 44 + k tokens, so for k not a multiple of four llama.cpp's last Q4_K row comes
from gemv (tests/engine/test_families.c allows a near tie to flip there).

Which llama.cpp: the fixtures hold llama.cpp's x86 AVX2 arithmetic (what
tests/fixtures/llamacpp/ holds too): llama-cpp-python built with
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF
-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" into a directory given by
--llama-cpp-path (default /work/ref/lcp-avx2 when it exists).  A native
build on an AVX-512/AMX machine runs other kernels (AMX tiles, AVX-512
repacks) whose sums round differently; the script refuses one unless
--allow-native.

Output (tests/fixtures/families/):
  parity.jsonl  one line per (preset, type): {"preset", "seed", "type",
                "ftype", "pure", "tensor_types" (mixed only: {name: type} of
                the matrices), "tensors": {name: [ggml type, sha256]},
                "prompt_ids", "row_sha", "positions": [{"pos", "top", "mean",
                "std"}], "greedy": {"tokens", "margins"}}
  meta.json     versions, llama.cpp's system_info, settings, consistency
                checks (threads 1 vs 2; llama.cpp's extra buffer types off).

Rerun (from the repository root, after building serval-synth; about a minute):

    python3 tools/gen_family_fixtures.py [--llama-cpp-path DIR]

The output is deterministic for a given llama.cpp build (meta.json's "date"
aside).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # speed only; see gen_llamacpp_fixtures.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTDIR = os.path.join(ROOT, "tests", "fixtures", "families")
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
SYNTH = os.path.join(ROOT, "build", "bin", "serval-synth")
AVX2_LIB = "/work/ref/lcp-avx2"
VOCAB_NAME = "vocab-smollm-4096.gguf"
VOCAB_N = 4096

# llama.cpp's llama_ftype numbers, and the serval-synth --dtype of each pure type.
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K_M": 15,
          "Q5_K_M": 17, "Q6_K": 18}
PURE = {"Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1",
        "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6_K": "Q6_K"}
ALL = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"]
PRESETS = [
    # (preset, seed, pure types, mixed llama.cpp presets, feed-forward width override or None)
    ("llama-parity", 11, ALL, ["Q4_K_M", "Q5_K_M"], None),
    ("qwen2-parity", 12, ALL, [], None),
    ("deepseek-coder-parity", 13, ["Q8_0", "Q4_K", "Q6_K"], [], None),
    # DeepSeek-Coder's real ffn width (5504) is not a multiple of 256: llama.cpp's Q4_K_M
    # then stores ffn_down as Q5_0/Q8_0 beside Q4_K matrices (352 has the same property).
    ("deepseek-coder-parity", 16, [], ["Q4_K_M"], 352),
    ("starcoder-parity", 14, ["Q8_0", "Q4_0", "Q5_0", "Q4_K", "Q5_K", "Q6_K"], [], None),
    ("starcoder2-parity", 15, ["Q8_0", "Q4_0", "Q5_0", "Q4_K", "Q5_K", "Q6_K"], [], None),
]
PROMPT = (b"def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
          b"    a, b = 0, 1\n    for _ in range(n):\n")
GREEDY_N = 16
N_CTX = 256


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def g9(x: float) -> float:
    return float(f"{float(x):.9g}")


# ------------------------------------------------------------------ vocabulary

def write_vocab(model_path: str, out_path: str) -> None:
    """Vocab-only GGUF: the model's tokenizer.* keys, its first VOCAB_N tokens and the merges
    whose two parts and result are all among them."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(model_path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()[:VOCAB_N]
    kept = set(tokens)
    merges = [m for m in r.fields["tokenizer.ggml.merges"].contents()
              if (lambda a, b: a in kept and b in kept and a + b in kept)(*m.split(" ", 1))]
    w = GGUFWriter(out_path, "llama")
    w.add_name("SmolLM2 vocabulary, first 4096 tokens (serval parity fixtures)")
    for key, field in r.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        vtype = field.types[0]
        val = field.contents()
        if key == "tokenizer.ggml.tokens":
            val = tokens
        elif key == "tokenizer.ggml.token_type":
            val = val[:VOCAB_N]
        elif key == "tokenizer.ggml.merges":
            val = merges
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(key, val, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, val, vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ------------------------------------------------------------------- llama.cpp

def import_llama(path: str | None, allow_native: bool):
    if path:
        sys.path.insert(0, path)
    import llama_cpp  # noqa: E402
    info = llama_cpp.llama_print_system_info().decode().strip()
    if not allow_native and ("AVX512 = 1" in info or "AMX" in info):
        sys.exit(f"llama.cpp at {os.path.dirname(llama_cpp.__file__)} is a native AVX-512/AMX "
                 f"build ({info}); pass --llama-cpp-path to an AVX2 build (see the docstring) "
                 "or --allow-native")
    return llama_cpp, info


def quantize(llama_cpp, src: str, dst: str, ftype: int, pure: bool) -> None:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.pure = pure
    p.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), p)
    if rc != 0:
        sys.exit(f"llama_model_quantize({src} -> {dst}, ftype {ftype}) failed: {rc}")


def tensor_table(path: str) -> dict:
    """{name: [ggml type name, sha256 of the data]} in file order."""
    from gguf import GGUFReader
    r = GGUFReader(path)
    out = {}
    for t in r.tensors:
        out[t.name] = [t.tensor_type.name, hashlib.sha256(t.data.tobytes()).hexdigest()]
    return out


class Runner:
    def __init__(self, llama_cpp, path: str, threads: int = 2, extra_bufts: bool = True):
        from llama_cpp import Llama
        orig = llama_cpp.llama_model_default_params
        if not extra_bufts:
            def no_extra():
                p = orig()
                p.use_extra_bufts = False
                return p
            llama_cpp.llama_model_default_params = no_extra
            llama_cpp.llama.llama_cpp.llama_model_default_params = no_extra
        try:
            self.llm = Llama(model_path=path, n_ctx=N_CTX, n_threads=threads,
                             n_threads_batch=threads, n_batch=N_CTX, n_ubatch=N_CTX,
                             logits_all=True, flash_attn=False, seed=1, verbose=False)
        finally:
            llama_cpp.llama_model_default_params = orig
            llama_cpp.llama.llama_cpp.llama_model_default_params = orig

    def rows(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[:len(ids)], dtype=np.float32)

    def close(self):
        self.llm.close()


def row_sha(row: np.ndarray) -> str:
    return hashlib.sha256(row.astype("<f4").tobytes()).hexdigest()[:16]


def evaluate(run: Runner, ids: list[int]) -> dict:
    rows = run.rows(ids)
    n = len(ids)
    positions = sorted({0, 1, n // 2, n - 1})
    snap = []
    for p in positions:
        row = rows[p]
        order = np.lexsort((np.arange(row.size), -row))[:32]
        r64 = row.astype(np.float64)
        snap.append({"pos": p, "top": [[int(i), float(row[i])] for i in order],
                     "mean": g9(r64.mean()), "std": g9(r64.std())})
    out, margins = [], []
    for _ in range(GREEDY_N):
        last = run.rows(ids + out)[-1]
        t = int(np.argmax(last))
        top2 = np.partition(last, -2)[-2:]
        margins.append(round(float(top2[1] - top2[0]), 5))
        out.append(t)
    return {"row_sha": [row_sha(r) for r in rows], "positions": snap,
            "greedy": {"tokens": out, "margins": margins}}


# ----------------------------------------------------------------- serval-synth

def synth(preset: str, seed: int, vocab: str, out: str, dtype: str, from_f16: bool,
          tensor_types: dict | None = None, ffn: int | None = None) -> None:
    cmd = [SYNTH, "--preset", preset, "--seed", str(seed), "--dtype", dtype.lower(),
           "--vocab-from", vocab, "--out", out]
    if ffn:
        cmd += ["--ffn", str(ffn)]
    if from_f16:
        cmd.append("--from-f16")
    for name, t in (tensor_types or {}).items():
        cmd += ["--tensor-type", f"{name}={t.lower()}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def compare_tensors(want: dict, got: dict) -> list[str]:
    bad = [n for n in want if n not in got or got[n] != want[n]]
    bad += [n for n in got if n not in want]
    return bad


# ------------------------------------------------------------------------- main

def main() -> int:
    global SYNTH
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp-path", default=AVX2_LIB if os.path.isdir(AVX2_LIB) else None,
                    help="directory holding an AVX2 build of the llama_cpp package")
    ap.add_argument("--allow-native", action="store_true")
    ap.add_argument("--out", default=OUTDIR)
    ap.add_argument("--only", help="comma-separated presets (debugging; writes nothing)")
    ap.add_argument("--synth", default=SYNTH, help="the serval-synth binary")
    args = ap.parse_args()
    SYNTH = args.synth

    llama_cpp, sysinfo = import_llama(args.llama_cpp_path, args.allow_native)
    if not os.access(SYNTH, os.X_OK):
        sys.exit(f"{SYNTH} is not built (cmake --build build --target serval-synth)")
    os.makedirs(args.out, exist_ok=True)
    vocab = os.path.join(args.out, VOCAB_NAME)
    write_vocab(DEFAULT_MODEL, vocab)

    from llama_cpp import Llama
    tok = Llama(model_path=vocab, vocab_only=True, verbose=False)
    prompt_ids = [int(t) for t in tok.tokenize(PROMPT, add_bos=False, special=False)]
    del tok
    if len(prompt_ids) % 4 != 0:
        sys.exit(f"PROMPT is {len(prompt_ids)} tokens; keep it a multiple of 4 (see the docstring)")

    lines, mismatches, consistency = [], [], {}
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="serval-families-") as tmp:
        for preset, seed, types, mixed, ffn in PRESETS:
            if only and preset not in only:
                continue
            f16 = os.path.join(tmp, f"{preset}-f16.gguf")
            synth(preset, seed, vocab, f16, "f16", False, ffn=ffn)
            for name in types + mixed:
                is_mixed = name in mixed
                ftype = FTYPES[name if is_mixed else PURE[name]]
                lc = os.path.join(tmp, f"{preset}-{name}-llamacpp.gguf")
                quantize(llama_cpp, f16, lc, ftype, pure=not is_mixed)
                tensors = tensor_table(lc)
                ttypes = None
                if is_mixed:
                    ttypes = {n: t for n, (t, _) in tensors.items()
                              if t not in ("F32",)}
                ours = os.path.join(tmp, f"{preset}-{name}-serval.gguf")
                synth(preset, seed, vocab, ours, "q8_0" if is_mixed else name, True, ttypes, ffn)
                bad = compare_tensors(tensors, tensor_table(ours))
                if bad:
                    mismatches.append(f"{preset} {name}: {', '.join(bad)}")
                run = Runner(llama_cpp, lc)
                ev = evaluate(run, prompt_ids)
                run.close()
                if name in ("Q8_0", "Q4_K", "Q4_0", "Q5_0") and preset == "llama-parity":
                    # Same bits with 1 thread, and what llama.cpp's extra buffer types
                    # (the Q4_0/Q4_K repacks) change.
                    r1 = Runner(llama_cpp, lc, threads=1)
                    consistency[f"{preset} {name} threads 2 vs 1 identical"] = (
                        [row_sha(r) for r in r1.rows(prompt_ids)] == ev["row_sha"])
                    r1.close()
                    r2 = Runner(llama_cpp, lc, extra_bufts=False)
                    consistency[f"{preset} {name} extra buffer types off: identical rows"] = sum(
                        a == b for a, b in zip([row_sha(r) for r in r2.rows(prompt_ids)],
                                               ev["row_sha"]))
                    r2.close()
                line = {"preset": preset, "seed": seed, "type": name, "ftype": ftype,
                        "pure": not is_mixed}
                if ffn:
                    line["ffn"] = ffn
                if ttypes:
                    line["tensor_types"] = ttypes
                line.update({"tensors": tensors, "prompt_ids": prompt_ids, **ev})
                lines.append(line)
                print(f"{preset:22s} {name:7s} tensors {'OK' if not bad else 'DIFFER'}; "
                      f"greedy {ev['greedy']['tokens'][:8]}...", flush=True)
    if mismatches:
        print("serval-synth's tensors differ from llama.cpp's:\n  " + "\n  ".join(mismatches),
              file=sys.stderr)
        return 1
    if only:
        return 0
    with open(os.path.join(args.out, "parity.jsonl"), "w") as f:
        for line in lines:
            f.write(dumps(line) + "\n")
    import llama_cpp as lcp
    meta = {
        "generator": "tools/gen_family_fixtures.py",
        "date": datetime.date.today().isoformat(),
        "llama_cpp_python": getattr(lcp, "__version__", "unknown"),
        "llama_cpp_path": os.path.dirname(lcp.__file__),
        "system_info": sysinfo,
        "vocab": VOCAB_NAME,
        "prompt": PROMPT.decode(),
        "prompt_ids": prompt_ids,
        "n_ctx": N_CTX, "n_batch": N_CTX, "threads": 2, "flash_attn": False,
        "greedy_n": GREEDY_N,
        "quantize": "llama_model_quantize(F16 file from serval-synth --dtype f16, "
                    "ftype, pure=True except the mixed presets, nthread=2, no imatrix)",
        "consistency": consistency,
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps(consistency, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
