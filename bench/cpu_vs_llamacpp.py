#!/usr/bin/env python3
"""Serval's CPU engine against llama.cpp on the same GGUF, prompt, thread count and machine.

Runs `serval complete` (prompt and decode tok/s from its stderr) and tools/bench_llamacpp.py
(llama.cpp through llama-cpp-python, dev-time only) back to back, and prints both with their
ratio, plus the machine's copy bandwidth for the decode ceiling. Record what it prints in
bench/RESULTS.md.

    python3 bench/cpu_vs_llamacpp.py --threads 2 --prompt-tokens 512 --gen-tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_serval(binary, model, prompt_file, gen, threads, speculate="off"):
    cmd = [binary, "complete", "--model", model, "--prompt-file", prompt_file,
           "--max-tokens", str(gen), "--ignore-eos", "--threads", str(threads),
           "--speculate", speculate]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    pm = re.search(r"prompt: (\d+) tokens in ([\d.]+) ms \(([\d.]+) tok/s\)", p.stderr)
    dm = re.search(r"decode: (\d+) tokens in ([\d.]+) ms \(([\d.]+) tok/s\)", p.stderr)
    if not pm or not dm:
        sys.exit(f"cannot parse serval's summary:\n{p.stderr}")
    return int(pm.group(1)), float(pm.group(3)), float(dm.group(3))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(TOP, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--serval", default=os.path.join(TOP, "build/bin/serval"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--extra-bufts", action="store_true",
                    help="pass --extra-bufts to tools/bench_llamacpp.py (llama.cpp's REPACK/AMX "
                         "buffer types; they crash the native AVX-512 wheel on this machine)")
    ap.add_argument("--speculate", default="off", choices=["off", "on", "auto"],
                    help="serval's speculative decoding (default off: llama.cpp's peer decodes one "
                         "token per pass, so both sides do the same work)")
    args = ap.parse_args()

    peer = os.path.join(TOP, "tools/bench_llamacpp.py")
    with tempfile.TemporaryDirectory() as tmp:
        prompt = os.path.join(tmp, "prompt.txt")
        p = subprocess.run([sys.executable, peer, "--model", args.model, "--threads", str(args.threads),
                            "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens),
                            "--repeats", str(args.repeats), "--write-prompt", prompt,
                            *(["--extra-bufts"] if args.extra_bufts else [])],
                           capture_output=True, text=True, check=True)
        peer_rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
        peer_by = {r["metric"]: r for r in peer_rows}
        run_serval(args.serval, args.model, prompt, args.gen_tokens, args.threads,
                   args.speculate)  # warm-up
        runs = [run_serval(args.serval, args.model, prompt, args.gen_tokens, args.threads,
                           args.speculate)
                for _ in range(args.repeats)]
        bw = subprocess.run([sys.executable, peer, "--membw"], capture_output=True, text=True, check=True)
        bw_row = next(json.loads(l) for l in bw.stdout.splitlines() if l.startswith("{"))

    sp = statistics.median(r[1] for r in runs)
    sd = statistics.median(r[2] for r in runs)
    lp = next(v["median"] for k, v in peer_by.items() if "prompt" in k)
    ld = next(v["median"] for k, v in peer_by.items() if "decode" in k)
    out = {
        "threads": args.threads, "prompt_tokens": runs[0][0], "gen_tokens": args.gen_tokens,
        "serval_prompt_tok_s": round(sp, 1), "llamacpp_prompt_tok_s": round(lp, 1),
        "prompt_ratio": round(sp / lp, 3),
        "serval_decode_tok_s": round(sd, 1), "llamacpp_decode_tok_s": round(ld, 1),
        "decode_ratio": round(sd / ld, 3),
        "serval_prompt_runs": [r[1] for r in runs], "serval_decode_runs": [r[2] for r in runs],
        "memcpy_gb_s": bw_row.get("median"), "load_avg": os.getloadavg()[0],
        "llamacpp_system_info": peer_by.get("decode_tok_per_s", {}).get("system_info", ""),
        "llamacpp_extra_bufts": args.extra_bufts, "serval_speculate": args.speculate,
    }
    print(json.dumps(out))
    print(f"threads {args.threads}: prompt {sp:.1f} vs llama.cpp {lp:.1f} tok/s ({sp / lp:.2f}x), "
          f"decode {sd:.1f} vs {ld:.1f} tok/s ({sd / ld:.2f}x)", file=sys.stderr)


if __name__ == "__main__":
    main()
