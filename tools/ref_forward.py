#!/usr/bin/env python3
"""ref_forward.py — dev-time float64 reference of a llama or qwen2 GGUF model (numpy and the
`gguf` package; never a run-time dependency). Weights are dequantised to float64 and every
activation stays float64: no activation quantisation, no fp16 cache.

Teacher-forced over the llama.cpp greedy fixture, it says where exact arithmetic picks a
different argmax than llama.cpp (whose quantised-activation CPU path Serval's CPU backend
reproduces bit for bit), so a GPU backend that disagrees with llama.cpp can be judged against
the exact answer instead:

    pip install gguf numpy
    python3 tools/ref_forward.py models/SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/fixtures/llamacpp/greedy.jsonl [--limit N] [--top1-out FILE]

--top1-out writes one JSON line per fixture: the exact argmax at every predicted position
(prompt end onwards), for comparing with another backend's.

For a family llama.cpp's fixtures do not cover (qwen2), --arch-fixture writes the reference
logits of a synthetic model over a few token sequences, which tests/engine/test_arch.c
compares with the CPU backend after regenerating the same model with serval-synth:

    build/bin/serval-synth --preset qwen2-tiny --seed 7 \
        --vocab-from models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/qwen2-tiny.gguf
    python3 tools/ref_forward.py /tmp/qwen2-tiny.gguf --arch-fixture \
        tests/fixtures/arch/qwen2_tiny_ref.jsonl --preset qwen2-tiny --seed 7
"""
import argparse
import json
import sys

import numpy as np

try:
    import gguf
    from gguf import quants
except ImportError:
    sys.exit("ref_forward.py needs the gguf package: pip install gguf numpy")


def field(reader, key):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return v.tolist()[0] if hasattr(v, "tolist") else v


def load(path):
    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    if arch not in ("llama", "qwen2"):
        sys.exit(f"ref_forward.py: architecture {arch}, only llama and qwen2 are written")
    hp = {k: field(r, f"{arch}.{k}") for k in
          ("embedding_length", "block_count", "attention.head_count", "attention.head_count_kv",
           "attention.layer_norm_rms_epsilon")}
    key = f"{arch}.rope.freq_base"
    hp["rope_base"] = field(r, key) if key in r.fields else 10000.0
    # llama.cpp: LLAMA_ROPE_TYPE_NORM (adjacent pairs) for llama, NEOX (halves) for qwen2
    hp["neox"] = arch == "qwen2"
    hp["arch"] = arch
    w = {}
    for t in r.tensors:
        a = quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = [int(x) for x in t.shape][::-1]  # GGUF lists ne0 first; rows are ne1
        w[t.name] = a.reshape(shape)
    if "output.weight" not in w:
        w["output.weight"] = w["token_embd.weight"]
    return hp, w


def rmsnorm(x, g, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x, pos, base):
    # llama.cpp's "normal" mode: adjacent pairs (x[2i], x[2i+1]) rotate by pos * base^(-2i/hd)
    hd = x.shape[-1]
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None, None] * inv[None, None, :]
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_neox(x, pos, base):
    # llama.cpp's NeoX mode (qwen2): pairs (x[i], x[i + hd/2]) rotate by pos * base^(-2i/hd)
    hd = x.shape[-1]
    h = hd // 2
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None, None] * inv[None, None, :]
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., :h], x[..., h:]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)


def linear(h, w, p, name):
    y = h @ w[p + name + ".weight"].T
    b = w.get(p + name + ".bias")
    return y if b is None else y + b


def forward(hp, w, ids):
    d, nl = hp["embedding_length"], hp["block_count"]
    nh, nkv, eps = hp["attention.head_count"], hp["attention.head_count_kv"], \
        hp["attention.layer_norm_rms_epsilon"]
    hd, n = d // nh, len(ids)
    pos = np.arange(n, dtype=np.float64)
    x = w["token_embd.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(nl):
        p = f"blk.{l}."
        h = rmsnorm(x, w[p + "attn_norm.weight"], eps)
        q = linear(h, w, p, "attn_q").reshape(n, nh, hd)
        k = linear(h, w, p, "attn_k").reshape(n, nkv, hd)
        v = linear(h, w, p, "attn_v").reshape(n, nkv, hd)
        rp = rope_neox if hp["neox"] else rope
        q, k = rp(q, pos, hp["rope_base"]), rp(k, pos, hp["rope_base"])
        g = nh // nkv
        att = np.empty((n, nh, hd))
        for hh in range(nh):
            s = q[:, hh] @ k[:, hh // g].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hh] = (s / s.sum(axis=1, keepdims=True)) @ v[:, hh // g]
        x = x + att.reshape(n, d) @ w[p + "attn_output.weight"].T
        h = rmsnorm(x, w[p + "ffn_norm.weight"], eps)
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    return rmsnorm(x, w["output_norm.weight"], eps) @ w["output.weight"].T


# Token sequences of the architecture fixtures: fixed, spread over the vocabulary, lengths
# that cross the CPU path's 16-position KV blocks.
ARCH_SEQS = [
    [1, 504, 3120, 17, 905, 28, 44, 9127, 331, 2048, 77, 15, 6001, 283, 12, 49000, 7, 1034, 88,
     260, 3, 999, 41234, 58, 1200, 61, 30, 4096, 5, 314, 2718, 100],
    [(i * 7919 + 13) % 40000 + 100 for i in range(40)],
    [(i * 104729 + 11) % 45000 + 50 for i in range(24)],
    [42] * 8 + [(i * 31 + 7) % 49152 for i in range(20)],
]


def arch_fixture(hp, w, a):
    """One JSON line of provenance, then one per sequence: at every position the reference's
    top-k (id, logit) and the row's rms (the scale for relative errors)."""
    with open(a.arch_fixture, "w") as out:
        out.write(json.dumps({"arch": hp["arch"], "preset": a.preset, "seed": a.seed,
                              "dtype": a.dtype, "vocab_from": "default model",
                              "generator": "tools/ref_forward.py --arch-fixture",
                              "top_k": a.top_k}) + "\n")
        for ids in ARCH_SEQS:
            logits = forward(hp, w, np.array(ids))
            rows = []
            for p, row in enumerate(logits):
                order = np.argsort(-row)[:a.top_k]
                rows.append({"pos": p, "rms": float(np.sqrt(np.mean(row * row))),
                             "top": [[int(i), float(row[i])] for i in order]})
            out.write(json.dumps({"ids": ids, "positions": rows}) + "\n")
    print(f"wrote {a.arch_fixture}: {len(ARCH_SEQS)} sequences")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("fixture", nargs="?")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--top1-out")
    ap.add_argument("--arch-fixture", help="write reference logits over fixed sequences here")
    ap.add_argument("--preset", help="serval-synth preset of the model (recorded in the fixture)")
    ap.add_argument("--seed", type=int, help="serval-synth seed of the model (recorded)")
    ap.add_argument("--dtype", default="q8_0", help="serval-synth dtype of the model (recorded)")
    ap.add_argument("--top-k", type=int, default=16)
    a = ap.parse_args()
    hp, w = load(a.model)
    if a.arch_fixture:
        return arch_fixture(hp, w, a)
    if not a.fixture:
        ap.error("a fixture (or --arch-fixture) is needed")
    out = open(a.top1_out, "w") if a.top1_out else None
    agree = total = 0
    for i, line in enumerate(open(a.fixture)):
        if a.limit and i >= a.limit:
            break
        fx = json.loads(line)
        prompt, toks = fx["prompt_ids"], fx["tokens"]
        seq = prompt + toks[:-1]
        logits = forward(hp, w, np.array(seq))
        top1 = []
        for j, t in enumerate(toks):
            row = logits[len(prompt) - 1 + j]
            order = np.argsort(-row)
            top1.append(int(order[0]))
            agree += order[0] == t
            total += 1
            if order[0] != t:
                print(f"  {fx['name']} token {j}: exact argmax {order[0]} ({row[order[0]]:.3f}), "
                      f"llama.cpp {t} ({row[t]:.3f}), exact margin {row[order[0]] - row[t]:.3f}")
        if out:
            out.write(json.dumps({"name": fx["name"], "top1": top1}) + "\n")
    print(f"exact argmax equals llama.cpp's token at {agree}/{total} teacher-forced positions")


if __name__ == "__main__":
    main()
