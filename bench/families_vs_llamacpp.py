#!/usr/bin/env python3
"""Per model family: Serval's CPU engine against llama.cpp on synthetic models of real shapes.

For each family preset of serval-synth (real layer shapes; --layers may cut the layer count
to keep a 2-core run short, which scales both engines alike) and each weight type:
  Q8_0    serval-synth writes it directly (its quantiser is llama.cpp's quantize_row_q8_0_ref);
  Q4_K_M  serval-synth writes F16, llama.cpp's own quantiser (llama-cpp-python) makes the
          mixed Q4_K_M file from it (llama.cpp's type choice per tensor).
Then bench/cpu_vs_llamacpp.py runs `serval complete` and llama.cpp back to back on the same
file, prompt, thread count and machine, and this script adds the decode ceiling: bytes read
per decoded token (every layer weight, the head, one embedding row) against the machine's
measured copy bandwidth. Dev-time only (llama-cpp-python, gguf, numpy). One JSON line per
model on stdout, a Markdown table on stderr for bench/RESULTS.md.

    python3 bench/families_vs_llamacpp.py --threads 2 --layers 8
    python3 bench/families_vs_llamacpp.py --only qwen2.5-coder-0.5b --types q8_0
    python3 bench/families_vs_llamacpp.py --workdir /tmp/fam --keep ...   # reuse the model files
    PYTHONPATH=/path/to/avx2-build python3 bench/families_vs_llamacpp.py --extra-bufts

The peer is whichever llama-cpp-python the Python finds (PYTHONPATH picks another build); its
system_info line is recorded per row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (serval-synth preset, family label). Full layer counts are used unless --layers cuts them.
FAMILIES = [
    ("qwen2.5-coder-0.5b", "qwen2 (Qwen2.5-Coder-0.5B)"),
    ("qwen2.5-coder-1.5b", "qwen2 (Qwen2.5-Coder-1.5B)"),
    ("starcoder-1b", "starcoder (StarCoder-1B)"),
    ("starcoder2-3b", "starcoder2 (StarCoder2-3B)"),
    ("deepseek-coder-1.3b", "llama (DeepSeek-Coder-1.3B)"),
    ("codellama-7b", "llama (CodeLlama-7B)"),
]


def decode_bytes(path: str) -> int:
    """Bytes one decoded token reads: all tensors except the embedding tables, of which one
    row each is read; a tied head reads the whole token embedding."""
    import gguf  # dev-time

    r = gguf.GGUFReader(path)
    total, tied = 0, True
    for t in r.tensors:
        n = int(t.n_bytes)
        if t.name == "output.weight":
            tied = False
        if t.name in ("token_embd.weight", "position_embd.weight"):
            rows = int(t.shape[1]) if len(t.shape) > 1 else 1
            total += n // max(rows, 1)
        else:
            total += n
    if tied:
        emb = next(t for t in r.tensors if t.name == "token_embd.weight")
        total += int(emb.n_bytes)
    return total


def quantize_llamacpp(src: str, dst: str, ftype_name: str) -> None:
    import llama_cpp  # dev-time

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype_name)
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        sys.exit(f"llama.cpp could not quantise {src} to {ftype_name} (rc {rc})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", default=os.path.join(TOP, "build/bin/serval-synth"))
    ap.add_argument("--serval", default=os.path.join(TOP, "build/bin/serval"))
    ap.add_argument("--vocab-from", default=os.path.join(TOP, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=0, help="cut every preset to N layers (0: real)")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", default="q8_0,q4_k_m")
    ap.add_argument("--only", default="", help="comma-separated presets (default: all)")
    ap.add_argument("--workdir", default="", help="keep model files here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true",
                    help="with --workdir: reuse the model files found there and keep them after "
                         "the run (same preset, type and --layers: the file name says which)")
    ap.add_argument("--extra-bufts", action="store_true",
                    help="let llama.cpp use REPACK/AMX buffer types (see tools/bench_llamacpp.py)")
    args = ap.parse_args()
    if args.keep and not args.workdir:
        sys.exit("--keep needs --workdir")

    only = {s for s in args.only.split(",") if s}
    types = [t for t in args.types.split(",") if t]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wd = args.workdir or tmp
        os.makedirs(wd, exist_ok=True)
        for preset, label in FAMILIES:
            if only and preset not in only:
                continue
            layer_args = ["--layers", str(args.layers)] if args.layers else []
            for ty in types:
                lsuf = f".l{args.layers}" if args.layers else ""
                path = os.path.join(wd, f"{preset}{lsuf}.{ty}.gguf")
                if args.keep and os.path.exists(path):
                    pass
                elif ty == "q8_0":
                    subprocess.run([args.synth, "--preset", preset, "--vocab-from", args.vocab_from,
                                    "--dtype", "q8_0", "--out", path, *layer_args],
                                   check=True, capture_output=True)
                elif ty == "q4_k_m":
                    f16 = os.path.join(wd, f"{preset}.f16.gguf")
                    subprocess.run([args.synth, "--preset", preset, "--vocab-from", args.vocab_from,
                                    "--dtype", "f16", "--out", f16, *layer_args],
                                   check=True, capture_output=True)
                    quantize_llamacpp(f16, path, "Q4_K_M")
                    os.unlink(f16)
                else:
                    sys.exit(f"unknown type {ty} (q8_0, q4_k_m)")
                p = subprocess.run([sys.executable, os.path.join(TOP, "bench/cpu_vs_llamacpp.py"),
                                    "--model", path, "--serval", args.serval,
                                    "--threads", str(args.threads),
                                    "--prompt-tokens", str(args.prompt_tokens),
                                    "--gen-tokens", str(args.gen_tokens),
                                    "--repeats", str(args.repeats),
                                    *(["--extra-bufts"] if args.extra_bufts else [])],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    print(f"{preset} {ty}: FAILED\n{p.stderr[-2000:]}", file=sys.stderr)
                    rows.append({"preset": preset, "type": ty, "error": p.stderr[-500:]})
                    continue
                row = json.loads(next(l for l in p.stdout.splitlines() if l.startswith("{")))
                nb = decode_bytes(path)
                bw = row.get("memcpy_gb_s") or 0.0
                row.update({"preset": preset, "family": label, "type": ty,
                            "layers": args.layers or "real", "decode_bytes": nb})
                if bw:
                    ceil = bw * 1e9 / nb
                    row["decode_ceiling_tok_s"] = round(ceil, 1)
                    row["serval_decode_of_ceiling"] = round(row["serval_decode_tok_s"] / ceil, 3)
                print(json.dumps(row), flush=True)
                rows.append(row)
                if not args.keep:
                    os.unlink(path)

    print("\n| family | type | layers | prompt tok/s serval / llama.cpp (ratio) | decode tok/s "
          "serval / llama.cpp (ratio) | MB/token | decode ceiling tok/s (serval's share) |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} | {r['type']} | | FAILED | | | |", file=sys.stderr)
            continue
        print(f"| {r['family']} | {r['type']} | {r['layers']} | {r['serval_prompt_tok_s']} / "
              f"{r['llamacpp_prompt_tok_s']} ({r['prompt_ratio']}x) | {r['serval_decode_tok_s']} / "
              f"{r['llamacpp_decode_tok_s']} ({r['decode_ratio']}x) | {r['decode_bytes'] / 1e6:.0f} | "
              f"{r.get('decode_ceiling_tok_s', '?')} ({r.get('serval_decode_of_ceiling', '?')}) |",
              file=sys.stderr)


if __name__ == "__main__":
    main()
