#!/usr/bin/env python3
"""ref_forward.py — dev-time float64 reference of a llama, qwen2, starcoder or starcoder2 GGUF
model (numpy and the `gguf` package; never a run-time dependency). Weights are dequantised to
float64 and every activation stays float64: no activation quantisation, no fp16 cache, exact
GELU (tanh form), LayerNorm and RoPE formulas (written from the models' definitions, not from
llama.cpp): linear RoPE scaling multiplies positions by 1/factor, StarCoder adds learned
position rows, StarCoder2's sliding window W lets position p see keys (p - W, p].

Teacher-forced over the llama.cpp greedy fixture, it says where exact arithmetic picks a
different argmax than llama.cpp (whose quantised-activation CPU path Serval's CPU backend
reproduces bit for bit), so a GPU backend that disagrees with llama.cpp can be judged against
the exact answer instead:

    pip install gguf numpy
    python3 tools/ref_forward.py models/SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/fixtures/llamacpp/greedy.jsonl [--limit N] [--top1-out FILE]

--top1-out writes one JSON line per fixture: the exact argmax at every predicted position
(prompt end onwards), for comparing with another backend's.

For a family llama.cpp's fixtures do not cover (qwen2, starcoder, starcoder2, llama with
linear RoPE scaling), --arch-fixture writes the reference logits of a synthetic model over a
few token sequences, which tests/engine/test_arch.c compares with the CPU backend after
regenerating the same model with serval-synth (tests/fixtures/arch/README.md lists them all):

    build/bin/serval-synth --preset qwen2-tiny --seed 7 \
        --vocab-from models/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/qwen2-tiny.gguf
    python3 tools/ref_forward.py /tmp/qwen2-tiny.gguf --arch-fixture \
        tests/fixtures/arch/qwen2_tiny_ref.jsonl --preset qwen2-tiny --seed 7

--long adds a sequence of 80 tokens (well past starcoder2-tiny's 32-token sliding window).
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


def field_str(reader, key):
    return bytes(reader.fields[key].parts[-1]).decode()


def load(path):
    r = gguf.GGUFReader(path)
    arch = field_str(r, "general.architecture")
    if arch not in ("llama", "qwen2", "starcoder", "starcoder2"):
        sys.exit(f"ref_forward.py: architecture {arch}: llama, qwen2, starcoder, starcoder2 "
                 "are written")
    hp = {k: field(r, f"{arch}.{k}") for k in
          ("embedding_length", "block_count", "attention.head_count")}
    key = f"{arch}.attention.head_count_kv"
    hp["attention.head_count_kv"] = field(r, key) if key in r.fields else \
        hp["attention.head_count"]
    hp["layernorm"] = arch in ("starcoder", "starcoder2")
    hp["eps"] = field(r, f"{arch}.attention." +
                      ("layer_norm_epsilon" if hp["layernorm"] else "layer_norm_rms_epsilon"))
    key = f"{arch}.rope.freq_base"
    hp["rope_base"] = field(r, key) if key in r.fields else 10000.0
    # Positions: RoPE on adjacent pairs (llama), on halves (qwen2, starcoder2), or learned rows
    # added to the token embedding (starcoder).
    hp["pos"] = {"llama": "rope", "qwen2": "neox", "starcoder": "learned",
                 "starcoder2": "neox"}[arch]
    # Linear RoPE scaling: the rotation angle of position p is that of p / factor.
    hp["pos_scale"] = 1.0
    key = f"{arch}.rope.scaling.type"
    if key in r.fields and field_str(r, key) == "linear":
        hp["pos_scale"] = 1.0 / field(r, f"{arch}.rope.scaling.factor")
    key = f"{arch}.attention.sliding_window"
    hp["window"] = field(r, key) if key in r.fields else 0
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


def layernorm(x, g, b, eps):
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def gelu(x):
    # the tanh approximation (HF gelu_pytorch_tanh, what StarCoder and StarCoder2 use)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


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


def norm(hp, w, x, name):
    if hp["layernorm"]:
        return layernorm(x, w[name + ".weight"], w[name + ".bias"], hp["eps"])
    return rmsnorm(x, w[name + ".weight"], hp["eps"])


def forward(hp, w, ids, window=None):
    """Logits [n, n_vocab] of ids at positions 0..n-1. window: the sliding window (None: the
    model's; 0: none)."""
    d, nl = hp["embedding_length"], hp["block_count"]
    nh, nkv = hp["attention.head_count"], hp["attention.head_count_kv"]
    hd, n = d // nh, len(ids)
    pos = np.arange(n, dtype=np.float64)
    x = w["token_embd.weight"][ids]
    if hp["pos"] == "learned":
        x = x + w["position_embd.weight"][:n]
    # mask[i, j]: query i sees key j when j <= i (and i - j < window)
    window = hp["window"] if window is None else window
    see = np.tril(np.ones((n, n), dtype=bool))
    if window:
        see &= ~np.tril(np.ones((n, n), dtype=bool), -window)
    mask = np.where(see, 0.0, -np.inf)
    for l in range(nl):
        p = f"blk.{l}."
        h = norm(hp, w, x, p + "attn_norm")
        if p + "attn_qkv.weight" in w:  # starcoder: one fused product, then split
            qkv = linear(h, w, p, "attn_qkv")
            q = qkv[:, :d].reshape(n, nh, hd)
            k = qkv[:, d:d + nkv * hd].reshape(n, nkv, hd)
            v = qkv[:, d + nkv * hd:].reshape(n, nkv, hd)
        else:
            q = linear(h, w, p, "attn_q").reshape(n, nh, hd)
            k = linear(h, w, p, "attn_k").reshape(n, nkv, hd)
            v = linear(h, w, p, "attn_v").reshape(n, nkv, hd)
        if hp["pos"] != "learned":
            rp = rope_neox if hp["pos"] == "neox" else rope
            ps = pos * hp["pos_scale"]
            q, k = rp(q, ps, hp["rope_base"]), rp(k, ps, hp["rope_base"])
        g = nh // nkv
        att = np.empty((n, nh, hd))
        for hh in range(nh):
            s = q[:, hh] @ k[:, hh // g].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hh] = (s / s.sum(axis=1, keepdims=True)) @ v[:, hh // g]
        x = x + linear(att.reshape(n, d), w, p, "attn_output")
        h = norm(hp, w, x, p + "ffn_norm")
        if p + "ffn_gate.weight" in w:
            gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        else:
            x = x + linear(gelu(linear(h, w, p, "ffn_up")), w, p, "ffn_down")
    return norm(hp, w, x, "output_norm") @ w["output.weight"].T


# Token sequences of the architecture fixtures: fixed, spread over the vocabulary, lengths
# that cross the CPU path's 16-position KV blocks.
ARCH_SEQS = [
    [1, 504, 3120, 17, 905, 28, 44, 9127, 331, 2048, 77, 15, 6001, 283, 12, 49000, 7, 1034, 88,
     260, 3, 999, 41234, 58, 1200, 61, 30, 4096, 5, 314, 2718, 100],
    [(i * 7919 + 13) % 40000 + 100 for i in range(40)],
    [(i * 104729 + 11) % 45000 + 50 for i in range(24)],
    [42] * 8 + [(i * 31 + 7) % 49152 for i in range(20)],
]
# --long: past a 32-token sliding window and the CPU path's 64-token chunks.
ARCH_LONG = [(i * 15485863 + 101) % 48000 + 60 for i in range(80)]


def arch_fixture(hp, w, a):
    """One JSON line of provenance, then one per sequence: at every position the reference's
    top-k (id, logit) and the row's rms (the scale for relative errors)."""
    seqs = ARCH_SEQS + ([ARCH_LONG] if a.long else [])
    with open(a.arch_fixture, "w") as out:
        out.write(json.dumps({"arch": hp["arch"], "preset": a.preset, "seed": a.seed,
                              "dtype": a.dtype, "vocab_from": "default model",
                              "generator": "tools/ref_forward.py --arch-fixture" +
                              (" --long" if a.long else ""),
                              "sliding_window": hp["window"],
                              "rope_scaling_factor": 1.0 / hp["pos_scale"],
                              "top_k": a.top_k}) + "\n")
        for ids in seqs:
            logits = forward(hp, w, np.array(ids))
            rows = []
            for p, row in enumerate(logits):
                order = np.argsort(-row)[:a.top_k]
                rows.append({"pos": p, "rms": float(np.sqrt(np.mean(row * row))),
                             "top": [[int(i), float(row[i])] for i in order]})
            out.write(json.dumps({"ids": ids, "positions": rows}) + "\n")
    print(f"wrote {a.arch_fixture}: {len(seqs)} sequences")


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
    ap.add_argument("--long", action="store_true",
                    help="--arch-fixture: add an 80-token sequence (sliding windows, chunks)")
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
