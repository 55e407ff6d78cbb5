#!/usr/bin/env python3
"""Peer measurement: llama.cpp (via llama-cpp-python) prompt and decode speed.

Dev-time only (needs `llama-cpp-python` and `numpy`).  Measures what
`serval complete` reports on stderr ("prompt: X tok/s, decode: Y tok/s") so
the two can be compared in the same run on the same machine:

  prompt tok/s  N prompt tokens evaluated in one llama_decode pass per
                n_batch (512) chunk, fresh context each repeat (KV cache
                cleared), timed around Llama.eval(prompt).
  decode tok/s  M greedy tokens after that prompt, one eval of one token per
                step (argmax of the last logits, no sampler), timed over the
                M evals.

The prompt is the first N tokens of the text files in tests/fixtures/corpus/
(concatenated in name order, special tokens not parsed), or the tokenized
contents of --prompt-file (give Serval the same file).  --write-prompt writes
the exact text of the N-token prompt so it can be fed to `serval complete`.

Output: one JSON line per metric on stdout ({"metric", "median", "min",
"max", "stdev", "values", ...}), a human summary on stderr.  An untimed warm-up
repeat runs first.  Contention is recorded: the load average, and per repeat
the CPUs kept busy by other processes (from /proc/stat minus this process's
own CPU time).  On a busy machine llama.cpp's OpenMP barriers spin, so
--threads > 1 numbers collapse; --omp-passive makes them degrade gracefully.

    python3 tools/bench_llamacpp.py --threads 2 --repeats 5
    python3 tools/bench_llamacpp.py --threads 1 --prompt-file p.txt --gen-tokens 64
    python3 tools/bench_llamacpp.py --membw     # numpy memcpy bandwidth only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fixtures", "corpus")
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT_FILES_EXCLUDE = {"invalid_utf8.bin", "special_tokens.txt"}


def summarize(metric: str, values: list[float], **extra) -> dict:
    return {
        "metric": metric,
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
        "values": [round(v, 3) for v in values],
        **extra,
    }


def cpu_snapshot():
    """(busy CPU-seconds of the whole machine incl. steal, own CPU-seconds, wall)."""
    import resource
    busy = 0.0
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) \
            / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return busy, ru.ru_utime + ru.ru_stime, time.perf_counter()


def others_cpus(a, b) -> float:
    """CPUs kept busy by other processes (or the hypervisor) between snapshots."""
    dt = b[2] - a[2]
    return round(max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / dt), 2) if dt > 0 else 0.0


def loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def membw(size_mb: int = 256, repeats: int = 5) -> dict:
    """numpy copy of a size_mb array: bytes read + bytes written per second."""
    n = size_mb * (1 << 20)
    src = np.ones(n, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    vals = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        dt = time.perf_counter() - t
        vals.append(2 * n / dt / 1e9)  # read + write
    return summarize("memcpy_GBps", vals, size_mb=size_mb,
                     note="numpy copyto, counts read+write bytes (copy rate = half)",
                     loadavg=loadavg())


def corpus_text() -> bytes:
    parts = []
    for f in sorted(os.listdir(CORPUS)):
        if f in PROMPT_FILES_EXCLUDE or f.startswith("."):
            continue
        with open(os.path.join(CORPUS, f), "rb") as fh:
            parts.append(fh.read())
    return b"\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=None,
                    help="prompt length N (default 512; with --prompt-file: the whole file)")
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt-file", help="use this file's text as the prompt")
    ap.add_argument("--parse-special", action="store_true",
                    help="parse special-token strings in the prompt text")
    ap.add_argument("--write-prompt", help="write the exact prompt text used to this path")
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--membw", action="store_true",
                    help="only measure memory copy bandwidth (numpy, 256 MB, median of 5)")
    ap.add_argument("--extra-bufts", action="store_true",
                    help="let llama.cpp use its extra CPU buffer types (REPACK, AMX); off by "
                         "default: llama-cpp-python 0.3.36 built natively on an AVX-512/AMX Xeon "
                         "segfaults on the first eval with them (seen 2026-12-05, Q4_0/Q4_1/Q8_0)")
    ap.add_argument("--omp-passive", action="store_true",
                    help="set OMP_WAIT_POLICY=PASSIVE (llama.cpp's wheel uses OpenMP; its "
                         "default spinning barriers collapse on a busy machine)")
    args = ap.parse_args()
    if args.omp_passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # before libgomp is loaded

    if args.membw:
        r = membw()
        print(json.dumps(r))
        print(f"memcpy: {r['median']:.1f} GB/s (read+write; copy rate {r['median'] / 2:.1f} GB/s)",
              file=sys.stderr)
        return 0

    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        sys.exit("llama-cpp-python is not installed (pip install llama-cpp-python)")
    if not args.extra_bufts:
        default_params = llama_cpp.llama_model_default_params

        def no_extra_bufts():
            p = default_params()
            p.use_extra_bufts = False
            return p

        llama_cpp.llama_model_default_params = no_extra_bufts
        llama_cpp.llama.llama_cpp.llama_model_default_params = no_extra_bufts
    print(f"llama.cpp: {llama_cpp.llama_print_system_info().decode().strip()}; extra buffer "
          f"types {'on' if args.extra_bufts else 'off'}", file=sys.stderr)

    if args.prompt_file:
        with open(args.prompt_file, "rb") as f:
            text = f.read()
    else:
        text = corpus_text()

    # Tokenize with a vocab-only load first so n_ctx can be sized.
    tok = Llama(model_path=args.model, vocab_only=True, verbose=False)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(
        llama_cpp.llama_model_get_vocab(tok._model.model)))
    ids = list(tok.tokenize(text, add_bos=add_bos, special=args.parse_special))
    n_prompt = args.prompt_tokens
    if n_prompt is None:
        n_prompt = len(ids) if args.prompt_file else 512
    while len(ids) < n_prompt:  # short file: repeat it
        ids += ids
    prompt = ids[:n_prompt]
    if args.write_prompt:
        with open(args.write_prompt, "wb") as f:
            f.write(tok.detokenize(prompt, special=True))
    del tok

    n_ctx = n_prompt + args.gen_tokens + 16
    llm = Llama(model_path=args.model, n_ctx=n_ctx, n_threads=args.threads,
                n_threads_batch=args.threads, n_batch=args.n_batch, n_ubatch=args.n_batch,
                logits_all=False, seed=1234, verbose=False)
    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx

    def clear_kv():
        llm.reset()
        mem = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_clear(mem, True)

    def last_argmax() -> int:
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    def one_repeat():
        clear_kv()
        s0 = cpu_snapshot()
        llm.eval(prompt)
        s1 = cpu_snapshot()
        t = last_argmax()
        gen = []
        for _ in range(args.gen_tokens):
            llm.eval([t])
            gen.append(t)
            t = last_argmax()
        s2 = cpu_snapshot()
        return (n_prompt / (s1[2] - s0[2]), args.gen_tokens / (s2[2] - s1[2]), gen,
                others_cpus(s0, s1), others_cpus(s1, s2))

    s_idle = cpu_snapshot()
    time.sleep(1.0)
    busy_before = others_cpus(s_idle, cpu_snapshot())
    load0 = loadavg()
    one_repeat()  # warm-up (page in weights, start threads)
    pp, tg, gens, opp, otg = [], [], [], [], []
    for _ in range(args.repeats):
        a, b, g, oa, ob = one_repeat()
        pp.append(a)
        tg.append(b)
        gens.append(g)
        opp.append(oa)
        otg.append(ob)
    load1 = loadavg()
    deterministic = all(g == gens[0] for g in gens)

    common = {
        "engine": "llama.cpp",
        "llama_cpp_python": getattr(llama_cpp, "__version__", "unknown"),
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "extra_bufts": args.extra_bufts,
        "model": os.path.basename(args.model),
        "threads": args.threads,
        "n_batch": args.n_batch,
        "prompt_tokens": n_prompt,
        "gen_tokens": args.gen_tokens,
        "repeats": args.repeats,
        "prompt_source": args.prompt_file or "tests/fixtures/corpus",
        "loadavg_start": load0,
        "loadavg_end": load1,
        "ncpu": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    common["other_cpus_busy_before"] = busy_before
    rp = summarize("prompt_tok_per_s", pp, **common, other_cpus_busy=opp)
    rd = summarize("decode_tok_per_s", tg, **common, other_cpus_busy=otg,
                   greedy_deterministic=deterministic)
    print(json.dumps(rp))
    print(json.dumps(rd))
    sys.stdout.flush()
    print(f"llama.cpp {common['llama_cpp_python']} threads={args.threads} "
          f"prompt={n_prompt} gen={args.gen_tokens} repeats={args.repeats} "
          f"(load avg {load0} -> {load1}, {os.cpu_count()} cpus; other processes kept "
          f"{busy_before} cpus busy before, up to {max(opp + otg)} during)\n"
          f"prompt: {rp['median']:.1f} tok/s (min {rp['min']:.1f}, max {rp['max']:.1f}), "
          f"decode: {rd['median']:.1f} tok/s (min {rd['min']:.1f}, max {rd['max']:.1f})",
          file=sys.stderr)
    if max(opp + otg) > 0.25:
        print("warning: other processes used the CPUs during the run; numbers are unreliable "
              "(see other_cpus_busy per repeat)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
