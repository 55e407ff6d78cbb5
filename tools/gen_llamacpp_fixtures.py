#!/usr/bin/env python3
"""Generate llama.cpp reference fixtures for Serval's CPU engine tests.

Dev-time only: needs `llama-cpp-python`, `gguf` and `numpy` in the Python
that runs it.  Serval itself never depends on any of these; the tests only
read the small files this script commits.

What it writes (all under tests/fixtures/llamacpp/):

  tokenize.jsonl  One JSON object per line:
                    {"pre", "name", "text_b64", "parse_special", "ids"}
                  llama.cpp's tokenization (Llama.tokenize(raw_bytes,
                  add_bos=False, special=parse_special)) of pieces of
                  tests/fixtures/corpus/ (whole files, single lines, seeded
                  random substrings) plus the inline EDGE_CASES below.  Every
                  text is tokenized with parse_special=false, and texts that
                  contain a special-token string also with parse_special=true.
                  Repeated for each pre-tokenizer in PRES: "smollm" uses the
                  default model as is; the others use a vocab-only GGUF copy
                  of its metadata (no tensors) with `tokenizer.ggml.pre`
                  replaced, written to a temp dir.
  greedy.jsonl    {"name", "prompt_b64", "prompt_ids", "tokens", "text_b64",
                   "stopped", "margins"}: GREEDY_N greedy tokens (argmax of
                  raw logits, no sampler, no penalties) after each prompt in
                  GREEDY_PROMPTS.  Prompts are tokenized with special=True and
                  add_bos as the model says (SmolLM2: false).  Generation stops
                  early only at an end-of-generation token, which is recorded
                  and "stopped" is true.  text_b64 is the detokenization of
                  "tokens" with special=True.  "margins" is the top1 - top2
                  logit gap at each step (small gaps = fragile comparisons).
                  Each step's logits come from one batch evaluation of the
                  whole sequence (llama.cpp's single-token decode path is not
                  bit-identical to its own batch path); the walk with
                  single-token decodes is kept as "tokens_decode",
                  "stopped_decode", "margins_decode".
  logits.jsonl    {"name", "prompt_ids", "positions": [{"pos", "top", "mean",
                   "std"}]}: for LOGIT_PROMPTS, at up to 8 positions, the
                  top-32 [id, logit] pairs (descending logit, ties by id) and
                  the mean / population std of the full-vocab logits there.
                  Floats are rounded to 6 significant digits.
  meta.json       Versions, model sha256, settings and how each file was made.

The script also checks that (a) tokenization does not depend on anything but
the bytes (it is repeated after a full model load), (b) greedy tokens and
logits are the same with n_threads 1 vs 2 and n_batch 512 vs 7, and measures
(c) how much llama.cpp's flash-attention path (not used for the fixtures)
would move them (all recorded in meta.json, "consistency").

Rerun (from the repository root; takes a minute or two on 2 cores):

    python3 tools/gen_llamacpp_fixtures.py [--model PATH] [--threads 2]

The output is deterministic for a given llama.cpp build: running it twice
gives byte-identical *.jsonl files (meta.json differs only in "date").
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import random
import sys
import tempfile

import numpy as np

# llama-cpp-python's wheel is built with OpenMP; with the default (spinning)
# wait policy a busy machine makes --threads 2 runs ~30x slower.  Waiting
# passively changes speed only, never results.  Must be set before libgomp
# is loaded (i.e. before `import llama_cpp`).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fixtures", "corpus")
OUTDIR = os.path.join(ROOT, "tests", "fixtures", "llamacpp")
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

PRES = ["smollm", "starcoder", "qwen2", "llama-bpe"]
SEED = 20240315
GREEDY_N = 48
N_CTX = 2048
N_BATCH = 512

# Strings that must be tokenized whatever the corpus holds.
EDGE_CASES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("space", b" "),
    ("two_spaces", b"  "),
    ("newline", b"\n"),
    ("tab", b"\t"),
    ("crlf", b"\r\n"),
    ("crlf_x3", b"a\r\n\r\n\r\nb"),
    ("spaces_100", b" " * 100),
    ("spaces_then_word", b"          word"),
    ("tabs_then_word", b"\t\t\tword"),
    ("newlines_spaces", b"x\n\n   \n\ty"),
    ("digits_1234567", b"1234567"),
    ("digits_space_1234567", b" 1234567"),
    ("digits_long", b"12345678901234567890"),
    ("pi", b"3.14159"),
    ("hex_0xFF", b"0xFF"),
    ("mixed_digits", b"abc123def 4.5e-6 v1.2.3 1,000,000"),
    ("dont", b"don't"),
    ("IM_upper", b"I'M"),
    ("contractions", b"I'm you're they've we'll she'd it's can't WON'T"),
    ("hello", b"Hello world"),
    ("hello_space", b" Hello world"),
    ("long_word", b"a" * 300),
    ("long_punct", b"!" * 64 + b"?" * 7),
    ("code_punct_newline", b"});\n}\n"),
    ("dot_method", b"obj.method().field"),
    ("chatml", b"<|im_start|>user\nhi<|im_end|>"),
    ("chatml_full", b"<|im_start|>system\nYou are helpful.<|im_end|>\n"
                    b"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
    ("fim_prefix", b"<fim_prefix>"),
    ("fim_full", b"<fim_prefix>def fib(n):\n    <fim_suffix>\n    return a<fim_middle>"),
    ("endoftext", b"<|endoftext|>"),
    ("endoftext_text", b"end.<|endoftext|>Start"),
    ("special_space_before", b" <|im_end|>"),
    ("special_space_after", b"<|im_end|> "),
    ("special_adjacent", b"<|im_start|><|im_end|><|endoftext|><file_sep>"),
    ("special_broken", b"<|im_start <|im_end|x <|endoftext|>>"),
    ("cjk", "机器学习是人工智能的一个分支".encode()),
    ("japanese", "吾輩は猫である。名前はまだ無い。".encode()),
    ("cyrillic", "Съешь же ещё этих мягких французских булок".encode()),
    ("arabic", "مرحبا بالعالم".encode()),
    ("accented", "café naïve Größe Œuvre ñ".encode()),
    ("combining", "e\u0301 a\u0300 o\u0308 n\u0303 Z\u0351\u0363a\u0352".encode()),
    ("math", "∀x ∈ ℝ: x² ≥ 0, ∑ᵢ aᵢ ≤ ∞, 𝔽₂".encode()),
    ("emoji", "😀👍🔥🚀".encode()),
    ("emoji_zwj_family", "👨\u200d👩\u200d👧\u200d👦".encode()),
    ("emoji_skin_zwj", "🧑🏽\u200d💻".encode()),
    ("emoji_flags", "🇺🇸🇯🇵🇺🇦".encode()),
    ("emoji_tag_flag", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f".encode()),
    ("emoji_keycap", "1\ufe0f\u20e3#\ufe0f\u20e3".encode()),
    ("bom", "\ufeffhello".encode()),
    ("nbsp", "a\u00a0b\u3000c\u2009d".encode()),
    # Not valid UTF-8.  llama.cpp decodes with its own lenient decoder:
    # bytes that do not start a well-formed sequence become U+FFFD (one per
    # byte); overlong forms and surrogates are NOT rejected (decoded as is).
    ("bad_lone_cont", b"\x80"),
    ("bad_lone_cont_text", b"ab\x80cd"),
    ("bad_two_cont", b"x\xbf\xbfy"),
    ("bad_trunc2", b"\xc3"),
    ("bad_trunc2_text", b"caf\xc3 ok"),
    ("bad_trunc3", b"\xe4\xb8"),
    ("bad_trunc3_text", b"a\xe4\xb8b"),
    ("bad_trunc4", b"\xf0\x9f\x98"),
    ("bad_trunc4_text", b"smile \xf0\x9f\x98!"),
    ("bad_ff", b"\xff"),
    ("bad_fffe", b"\xff\xfe"),
    ("bad_ff_text", b"A\xffB \xff C"),
    ("bad_overlong_slash", b"\xc0\xaf"),
    ("bad_overlong_text", b"a\xc0\xafb"),
    ("bad_overlong3", b"\xe0\x80\xaf"),
    ("bad_overlong_c1", b"\xc1\xbf"),
    ("bad_overlong_nul", b"\xc0\x80"),
    ("bad_surrogate", b"\xed\xa0\x80"),
    ("bad_surrogate_pair", b"\xed\xa0\xbd\xed\xb8\x80"),
    ("bad_5byte", b"\xf8\x88\x80\x80\x80"),
    ("bad_latin1", b"caf\xe9 na\xefve"),
    ("bad_all_high", bytes(range(0x80, 0x100))),
    ("bad_mixed_emoji", "ok 😀".encode() + b" \xf0\x9f" + " 😀".encode()),
    ("nul", b"a\x00b"),
    ("control_chars", bytes(range(1, 32)) + b"\x7f"),
]

GREEDY_PROMPTS: list[tuple[str, bytes]] = [
    ("py_def", b"def is_prime(n):\n    \"\"\"Return True if n is a prime number.\"\"\"\n"),
    ("py_class", b"import json\n\n\nclass Config:\n    def __init__(self, path):\n"
                 b"        self.path = path\n\n    def load(self):\n"),
    ("c_func", b"#include <stdio.h>\n#include <string.h>\n\n"
               b"/* Reverse a string in place. */\nvoid reverse(char *s)\n{\n"),
    ("c_struct", b"typedef struct node {\n    int value;\n    struct node *next;\n} node_t;\n\n"
                 b"node_t *list_push(node_t *head, int value)\n{\n"),
    ("js_fetch", b"async function getUser(id) {\n  const res = await fetch(`/api/users/${id}`);\n"),
    ("js_arrow", b"const sum = (arr) => arr.reduce("),
    ("fim", b"<fim_prefix>def fib(n):\n    <fim_suffix>\n    return a<fim_middle>"),
    ("chat_haiku", b"<|im_start|>user\nWrite a haiku about the sea<|im_end|>\n<|im_start|>assistant\n"),
    ("chat_code", b"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                  b"Hugging Face<|im_end|>\n<|im_start|>user\nWrite a Python function that "
                  b"checks if a string is a palindrome.<|im_end|>\n<|im_start|>assistant\n"),
    ("prose", b"The history of the printing press begins in the fifteenth century, when"),
    ("prose_list", b"Three tips for writing clean code:\n1."),
    ("one_token", b"The"),
]

LOGIT_PROMPTS = ["py_class", "chat_haiku", "prose"]


# ----------------------------------------------------------------- helpers

def b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def g6(x: float) -> float:
    """Round to 6 significant digits (as a float that prints compactly)."""
    return float(f"{float(x):.6g}")


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_lines(data: bytes) -> list[bytes]:
    """Split on b"\\n", keeping it (a CR stays with its line)."""
    out, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end])
        start = end
    return out


def build_texts(special_strings: list[bytes]) -> list[tuple[str, bytes]]:
    """The tokenizer corpus: (name, raw bytes) in a fixed order."""
    rng = random.Random(SEED)
    files = sorted(f for f in os.listdir(CORPUS) if not f.startswith("."))
    contents = {f: open(os.path.join(CORPUS, f), "rb").read() for f in files}
    texts: list[tuple[str, bytes]] = []
    texts += [(f"edge:{n}", b) for n, b in EDGE_CASES]
    for f in files:
        texts.append((f"file:{f}", contents[f]))
    # Individual lines: every line of the short "edge-case" files, a seeded
    # sample of the others.
    full_line_files = {"contractions.txt", "crlf_windows.txt", "emoji.txt",
                       "invalid_utf8.bin", "numbers.txt", "special_tokens.txt",
                       "unicode_multilingual.txt", "whitespace_tabs.txt"}
    for f in files:
        lines = split_lines(contents[f])
        idx = list(range(len(lines)))
        if f not in full_line_files:
            idx = sorted(rng.sample(idx, min(len(idx), 6)))
        for i in idx:
            texts.append((f"line:{f}:{i}", lines[i]))
    # Random substrings of varied size.  Most are cut on character
    # boundaries; "bytesub" ones are cut on arbitrary bytes (so they may start
    # or end inside a UTF-8 sequence).
    sizes = [1, 2, 3, 5, 8, 13, 21, 40, 80, 160, 400, 1000]
    for k in range(72):
        f = files[rng.randrange(len(files))]
        data = contents[f]
        n = sizes[rng.randrange(len(sizes))]
        if k % 4 == 3 or f.endswith(".bin"):
            if len(data) <= n:
                start, n = 0, len(data)
            else:
                start = rng.randrange(len(data) - n)
            texts.append((f"bytesub:{f}:{start}:{n}", data[start:start + n]))
        else:
            s = data.decode("utf-8")
            if len(s) <= n:
                start, n = 0, len(s)
            else:
                start = rng.randrange(len(s) - n)
            texts.append((f"sub:{f}:{start}:{n}", s[start:start + n].encode("utf-8")))
    seen: set[str] = set()
    uniq = []
    for name, data in texts:
        if name not in seen:
            seen.add(name)
            uniq.append((name, data))
    return uniq


def subset_for_other_pre(texts):
    """Smaller set for the non-default pre-tokenizers (keeps the fixture file
    small): no whole files, every 4th sampled line, everything else."""
    out, nline = [], 0
    for name, data in texts:
        kind = name.split(":", 1)[0]
        if kind == "file":
            continue
        if kind == "line":
            nline += 1
            if nline % 4 != 1:
                continue
        out.append((name, data))
    return out


# --------------------------------------------------------- llama.cpp glue

def import_llama():
    try:
        import llama_cpp  # noqa: F401
        from llama_cpp import Llama
    except ImportError:
        sys.exit("llama-cpp-python is not installed (pip install llama-cpp-python)")
    return llama_cpp, Llama


def write_pre_variant(model_path: str, pre: str, out_path: str) -> None:
    """Vocab-only copy of the model's metadata with tokenizer.ggml.pre := pre."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(model_path)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(out_path, arch)
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        val = field.contents()
        if key == "tokenizer.ggml.pre":
            val = pre
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(key, val, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(key, val, vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class VocabTokenizer:
    """llama.cpp tokenizer of a model file, loaded vocab-only."""

    def __init__(self, path: str):
        llama_cpp, Llama = import_llama()
        self.llm = Llama(model_path=path, vocab_only=True, verbose=False)

    def tokenize(self, text: bytes, special: bool) -> list[int]:
        return list(self.llm.tokenize(text, add_bos=False, special=special))


def tokenize_fixtures(model_path: str, tmpdir: str, texts, special_strings):
    rows = []
    per_pre: dict[str, dict[tuple[str, bool], list[int]]] = {}
    for pre in PRES:
        if pre == "smollm":
            path = model_path
        else:
            path = os.path.join(tmpdir, f"vocab-{pre}.gguf")
            write_pre_variant(model_path, pre, path)
        tok = VocabTokenizer(path)
        got = per_pre.setdefault(pre, {})
        for name, data in (texts if pre == "smollm" else subset_for_other_pre(texts)):
            modes = [False]
            if any(s in data for s in special_strings):
                modes.append(True)
            for ps in modes:
                ids = tok.tokenize(data, ps)
                got[(name, ps)] = ids
                rows.append({"pre": pre, "name": name, "text_b64": b64(data),
                             "parse_special": ps, "ids": ids})
        del tok
    # Negative control: an unknown pre name must make llama.cpp refuse the
    # file, which shows it really reads tokenizer.ggml.pre from our copies.
    bogus = os.path.join(tmpdir, "vocab-bogus.gguf")
    write_pre_variant(model_path, "no-such-pre-tokenizer", bogus)
    try:
        VocabTokenizer(bogus)
        bogus_rejected = False
    except Exception:
        bogus_rejected = True
    return rows, per_pre, bogus_rejected


def eog_checker(llama_cpp, llm):
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    return lambda t: bool(llama_cpp.llama_vocab_is_eog(vocab, t))


def run_model(model_path: str, threads: int, n_batch: int, flash_attn: bool = False):
    """Greedy continuations + logit snapshots with one (threads, n_batch)."""
    llama_cpp, Llama = import_llama()
    llm = Llama(model_path=model_path, n_ctx=N_CTX, n_threads=threads,
                n_threads_batch=threads, n_batch=n_batch, n_ubatch=n_batch,
                flash_attn=flash_attn, logits_all=True, seed=1234, verbose=False)
    is_eog = eog_checker(llama_cpp, llm)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(
        llama_cpp.llama_model_get_vocab(llm._model.model)))
    greedy, logits = [], []
    for name, prompt in GREEDY_PROMPTS:
        ids = list(llm.tokenize(prompt, add_bos=add_bos, special=True))
        llm.reset()
        llm.eval(ids)
        if name in LOGIT_PROMPTS:
            n = len(ids)
            cand = [0, 1, 2, 3, n // 4, n // 2, (3 * n) // 4, n - 1]
            positions = sorted({p for p in cand if 0 <= p < n})[-8:]
            if n - 1 not in positions:
                positions[-1] = n - 1
            snap = []
            for p in positions:
                row = np.array(llm.scores[p], dtype=np.float32)
                order = np.lexsort((np.arange(row.size), -row))[:32]
                row64 = row.astype(np.float64)
                snap.append({"pos": p,
                             "top": [[int(i), g6(row[i])] for i in order],
                             "mean": g6(row64.mean()), "std": g6(row64.std())})
            logits.append({"name": name, "prompt_ids": ids, "positions": snap})
        out, margins, stopped = [], [], False
        for _ in range(GREEDY_N):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            t = int(np.argmax(row))
            top2 = np.partition(row, -2)[-2:]
            margins.append(round(float(top2[1] - top2[0]), 4))
            out.append(t)
            if is_eog(t):
                stopped = True
                break
            llm.eval([t])
        # The same greedy walk with every step's logits from one batch evaluation of the whole
        # sequence so far. llama.cpp's single-token decode path is not bit-identical to its own
        # batch path (the hidden state of the 2nd decoded token already differs by ~1e-2
        # relative), while Serval's results never depend on how tokens are batched; Serval
        # matches the batch path bit for bit, so "tokens" holds this walk and the
        # decode-mode walk is kept as "tokens_decode" for reference.
        out_b, margins_b, stopped_b = [], [], False
        for _ in range(GREEDY_N):
            llm.reset()
            llm.eval(ids + out_b)
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            t = int(np.argmax(row))
            top2 = np.partition(row, -2)[-2:]
            margins_b.append(round(float(top2[1] - top2[0]), 4))
            out_b.append(t)
            if is_eog(t):
                stopped_b = True
                break
        greedy.append({"name": name, "prompt_b64": b64(prompt), "prompt_ids": ids,
                       "tokens": out_b, "text_b64": b64(llm.detokenize(out_b, special=True)),
                       "stopped": stopped_b, "margins": margins_b,
                       "tokens_decode": out, "stopped_decode": stopped,
                       "margins_decode": margins})
    full_tok = [list(llm.tokenize(d, add_bos=False, special=s))
                for _, d in EDGE_CASES for s in (False, True)]
    del llm
    return greedy, logits, add_bos, full_tok


def compare_runs(a, b):
    """Largest logit difference and whether greedy tokens agree."""
    same_tokens = all(x["tokens"] == y["tokens"] for x, y in zip(a[0], b[0]))
    max_diff = 0.0
    for x, y in zip(a[1], b[1]):
        for px, py in zip(x["positions"], y["positions"]):
            dx = dict((i, v) for i, v in px["top"])
            dy = dict((i, v) for i, v in py["top"])
            for i in set(dx) & set(dy):
                max_diff = max(max_diff, abs(dx[i] - dy[i]))
    return {"greedy_tokens_identical": same_tokens, "max_top32_logit_diff": g6(max_diff)}


def llama_cpp_build_info(llama_cpp) -> dict:
    info = {"llama_cpp_python": getattr(llama_cpp, "__version__", "unknown")}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except Exception:  # pragma: no cover
        pass
    # The PyPI sdist ships vendor/llama.cpp without git metadata, so the
    # llama.cpp commit is normally not discoverable from the install.
    info["llama_cpp_commit"] = os.environ.get("LLAMA_CPP_COMMIT", "unknown (PyPI sdist, no git metadata)")
    return info


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=OUTDIR)
    ap.add_argument("--skip-consistency", action="store_true",
                    help="skip the n_threads / n_batch cross-check runs")
    ap.add_argument("--only-tokenize", action="store_true",
                    help="write tokenize.jsonl only (meta.json is left alone)")
    args = ap.parse_args()

    llama_cpp, _ = import_llama()
    sha = sha256_file(args.model)
    if sha != MODEL_SHA256:
        print(f"warning: model sha256 {sha} != expected {MODEL_SHA256}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)

    from gguf import GGUFReader
    r = GGUFReader(args.model)
    tf = r.fields["tokenizer.ggml.tokens"]
    ttf = r.fields["tokenizer.ggml.token_type"]
    toks = [bytes(tf.parts[i]) for i in tf.data]
    types = [int(ttf.parts[i][0]) for i in ttf.data]
    special_strings = [t for t, ty in zip(toks, types) if ty in (3, 4)]  # CONTROL, USER_DEFINED
    del r

    texts = build_texts(special_strings)
    with tempfile.TemporaryDirectory(prefix="serval-llamacpp-") as tmp:
        rows, per_pre, bogus_rejected = tokenize_fixtures(args.model, tmp, texts,
                                                          special_strings)
    with open(os.path.join(args.out, "tokenize.jsonl"), "w") as f:
        for row in rows:
            f.write(dumps(row) + "\n")

    # How much do the pre-tokenizers disagree?  (Sanity check that the
    # replaced tokenizer.ggml.pre was honoured.)
    pre_diff = {"unknown_pre_name_rejected_by_llama_cpp": bogus_rejected}
    for pre in PRES[1:]:
        keys = per_pre[pre].keys()
        ndiff = sum(per_pre[pre][k] != per_pre["smollm"][k] for k in keys)
        diff_q = sum(per_pre[pre][k] != per_pre["qwen2"][k] for k in keys)
        pre_diff[pre] = {"rows": len(keys), "differing_from_smollm": ndiff,
                         "differing_from_qwen2": diff_q}
    probe = {pre: {n: " ".join(map(str, per_pre[pre][(f"edge:{n}", False)]))
                   for n in ("digits_1234567", "digits_long", "IM_upper", "code_punct_newline",
                             "dot_method")}
             for pre in PRES}
    print(json.dumps({"tokenize_rows": len(rows), "pre_tokenizer_disagreement": pre_diff},
                     indent=1))
    if args.only_tokenize:
        return 0

    greedy, logits, add_bos, full_tok = run_model(args.model, args.threads, N_BATCH)
    with open(os.path.join(args.out, "greedy.jsonl"), "w") as f:
        for row in greedy:
            f.write(dumps(row) + "\n")
    with open(os.path.join(args.out, "logits.jsonl"), "w") as f:
        for row in logits:
            f.write(dumps(row) + "\n")

    # Tokenization with a fully loaded model must equal the vocab-only one.
    vo = [per_pre["smollm"].get((f"edge:{n}", s)) for n, _ in EDGE_CASES for s in (False, True)]
    tok_consistent = all(a == b for a, b in zip(vo, full_tok) if a is not None)

    consistency = {"tokenize_vocab_only_vs_full_model_identical": tok_consistent}
    if not args.skip_consistency:
        base = (greedy, logits)
        other_threads = 1 if args.threads != 1 else 2
        r1 = run_model(args.model, other_threads, N_BATCH)
        consistency[f"threads_{args.threads}_vs_{other_threads}"] = compare_runs(base, r1[:2])
        r2 = run_model(args.model, args.threads, 7)
        consistency["n_batch_512_vs_7"] = compare_runs(base, r2[:2])
        # Not a setting of the fixtures: how far llama.cpp's own flash-attention
        # path (f16 Q, online softmax) moves the logits, for scale.
        r3 = run_model(args.model, args.threads, N_BATCH, flash_attn=True)
        consistency["flash_attn_off_vs_on"] = compare_runs(base, r3[:2])

    meta = {
        "generator": "tools/gen_llamacpp_fixtures.py",
        "date": datetime.date.today().isoformat(),
        **llama_cpp_build_info(llama_cpp),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "model": os.path.basename(args.model),
        "model_sha256": sha,
        "model_add_bos": add_bos,
        "threads": args.threads,
        "n_ctx": N_CTX,
        "n_batch": N_BATCH,
        "n_ubatch": N_BATCH,
        "flash_attn": False,
        "kv_cache_type": "f16 K and V (llama.cpp default)",
        "seed": SEED,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "pre_tokenizers": PRES,
        "greedy_first_small_margin": {
            g["name"]: next((i for i, m in enumerate(g["margins"]) if m < 0.1), None)
            for g in greedy},
        "pre_tokenizer_disagreement": pre_diff,
        "pre_tokenizer_probe_ids": probe,
        "consistency": consistency,
        "files": {
            "tokenize.jsonl": (
                "Llama(model_path, vocab_only=True).tokenize(raw_bytes, add_bos=False, "
                "special=parse_special) for each pre; pre != smollm use a vocab-only GGUF copy "
                "(metadata only, no tensors) with tokenizer.ggml.pre replaced. Texts: inline edge "
                "cases, whole corpus files, single lines, seeded random substrings "
                "(sub: char-aligned, bytesub: byte-aligned). parse_special=true rows only for "
                "texts containing a CONTROL/USER_DEFINED token string."),
            "greedy.jsonl": (
                f"Llama(n_ctx={N_CTX}, n_threads={args.threads}, n_batch={N_BATCH}, "
                "flash_attn=False, logits_all=True); prompt tokenized special=True with the model's add_bos; "
                "reset(); eval(prompt); then repeat: argmax(scores[n_tokens-1]) (first index on "
                f"ties), eval([tok]); {GREEDY_N} tokens or up to and including the first EOG "
                "token (llama_vocab_is_eog). text_b64 = detokenize(tokens, special=True)."),
            "logits.jsonl": (
                "Same run as greedy.jsonl, scores after eval(prompt) (one batch): top-32 "
                "(id, logit) per position sorted by logit desc then id; mean and population "
                "std over all n_vocab logits in float64; 6 significant digits."),
        },
        "notes": [
            "SmolLM2-135M has no <fim_prefix>/<fim_suffix>/<fim_middle> tokens: the FIM "
            "prompt is tokenized as plain text even with special=True.",
            "llama.cpp decodes invalid UTF-8 leniently: a byte that does not begin a "
            "well-formed (by lead/continuation bit pattern only) sequence becomes U+FFFD, "
            "one per byte; overlong encodings and surrogates are accepted as code points.",
            "A 4-byte form decoding above U+10FFFF (e.g. F4 90 80 80) makes llama.cpp abort "
            "(uncaught std::invalid_argument 'invalid codepoint' from unicode_regex_split); no "
            "fixture contains one.",
            "smollm and starcoder share one regex set in llama.cpp (identical rows); qwen2 and "
            "llama-bpe differ from them but not from each other, since this vocabulary has "
            "single-digit number tokens only (\\p{N} vs \\p{N}{1,3} gives the same ids).",
            "OMP_WAIT_POLICY=PASSIVE is set by default (speed only; llama.cpp's OpenMP "
            "barriers spin otherwise, which is pathological on a busy 2-core machine).",
        ],
    }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(json.dumps({"consistency": consistency}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
