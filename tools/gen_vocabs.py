#!/usr/bin/env python3
# gen_vocabs.py — trains the small family vocabularies under tests/fixtures/vocab/ (dev-time only).
"""Writes vocab-only GGUF files that carry each code-model family's tokenizer.

Dev-time only: needs `sentencepiece`, `tokenizers`, `gguf` and `numpy`.  Serval never depends on
them; the tests read the committed .gguf files.

Every file holds general.architecture, the family's hyper-parameters (the real model's values:
llama.cpp's vocab_only loader still reads them) and the tokenizer.* keys the real converted model
has, with a vocabulary of a few thousand tokens trained here on code instead of the real one:

  codellama-spm.gguf    SentencePiece BPE (`sentencepiece`, byte_fallback, Llama's options),
                        tokenizer.ggml.model "llama", <unk>=0 <s>=1 </s>=2, the 256 <0xXX> byte
                        tokens, then CodeLlama's infill tokens "▁<PRE>" "▁<SUF>" "▁<MID>" "▁<EOT>"
                        appended (CONTROL, as CodeLlama's tokenizer marks them special) with the
                        prefix/suffix/middle/eot id keys llama.cpp's converter writes for
                        CodeLlama, and CodeLlama-Instruct's [INST] chat template.
  deepseek-coder.gguf   byte-level BPE (HF `tokenizers`) with DeepSeek-Coder's pre-tokenizer,
                        model "gpt2", pre "deepseek-coder", DeepSeek-Coder's added tokens after
                        the trained ones in their real order, its instruct chat template.
  qwen2.5-coder.gguf    byte-level BPE, Qwen2's split regex, pre "qwen2", Qwen2.5-Coder's 22
                        added tokens after the trained ones, its ChatML template, add_bos false.
  starcoder.gguf        byte-level BPE, digits split then GPT-2 regex, pre "starcoder",
                        StarCoder's 19 special tokens at ids 0-18 as the real vocabulary has
                        them plus StarCoder2's <file_sep> at 19, no chat template (base model).
  deepseek-coder-probe.gguf
                        not a family: deepseek-coder.gguf's metadata with a byte-level BPE trained
                        on whole lines (no pre-tokenizer; tests/fixtures/corpus weighted four
                        times), so its merges cross every boundary the
                        deepseek-coder regexes draw and a pre-tokenizer that splits one place
                        differently from llama.cpp changes the ids (with the real pre-tokenizer's
                        training, a wrong split is often invisible).

Training text (sorted, so the result is deterministic for a given machine image): the top-level
*.py files of this Python's standard library, /usr/include/*.h and tests/fixtures/corpus/*, each
capped (see CORPUS_CAPS).  sentencepiece runs single-threaded with a fixed seed; `tokenizers`
with RAYON_NUM_THREADS=1.  Running the script twice gives byte-identical files.

Rerun (from the repository root, about a minute on 2 cores):

    python3 tools/gen_vocabs.py [--out tests/fixtures/vocab]
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import sysconfig

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DEFAULT = os.path.join(ROOT, "tests", "fixtures", "vocab")
TEMPLATES = os.path.join(OUT_DEFAULT, "templates")

SPM_VOCAB = 4000  # including <unk>, <s>, </s> and the 256 byte tokens
BPE_VOCAB = 4000  # trained tokens (256 byte characters included), before the added ones

# (glob, byte cap): files are read in sorted order until the cap is reached.
CORPUS_CAPS = [
    (os.path.join(sysconfig.get_paths()["stdlib"], "*.py"), 2_500_000),
    ("/usr/include/*.h", 1_000_000),
    (os.path.join(ROOT, "tests", "fixtures", "corpus", "*"), 200_000),
]

# Token types (llama.cpp's llama_token_type / gguf's TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def corpus_texts(caps=None) -> list[str]:
    texts = []
    for pattern, cap in caps or CORPUS_CAPS:
        used = 0
        for path in sorted(glob.glob(pattern)):
            if used >= cap or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            if path.endswith("invalid_utf8.bin"):
                continue
            texts.append(data.decode("utf-8", errors="replace"))
            used += len(data)
    return texts


def template(name: str) -> str:
    with open(os.path.join(TEMPLATES, name), encoding="utf-8") as f:
        return f.read()


# ---- the GGUF side --------------------------------------------------------------------------

def write_gguf(path: str, arch: str, hparams: dict, tok: dict) -> None:
    """tok: model, pre (or None), tokens (list[str]), token_type (list[int]), scores (or None),
    merges (or None), ids (name -> id for tokenizer.ggml.<name>_token_id), add_bos, add_eos,
    add_space_prefix (or None), chat_template (or None)."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_name(os.path.splitext(os.path.basename(path))[0] + " (Serval test vocabulary)")
    for key, (kind, value) in hparams.items():
        getattr(w, "add_" + kind)(key.format(arch=arch), value)
    w.add_tokenizer_model(tok["model"])
    if tok.get("pre"):
        w.add_tokenizer_pre(tok["pre"])
    w.add_token_list(tok["tokens"])
    if tok.get("scores") is not None:
        w.add_token_scores(tok["scores"])
    w.add_token_types(tok["token_type"])
    if tok.get("merges") is not None:
        w.add_token_merges(tok["merges"])
    for name, value in tok["ids"].items():
        w.add_uint32("tokenizer.ggml.%s_token_id" % name, value)
    for key in ("add_bos", "add_eos"):
        if tok.get(key) is not None:
            w.add_bool("tokenizer.ggml.%s_token" % key, tok[key])
    if tok.get("add_space_prefix") is not None:
        w.add_bool("tokenizer.ggml.add_space_prefix", tok["add_space_prefix"])
    if tok.get("chat_template"):
        w.add_chat_template(tok["chat_template"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_hparams(ctx, embd, layers, ff, heads, heads_kv, eps, rope_base, rope_scale=None):
    h = {
        "{arch}.context_length": ("uint32", ctx),
        "{arch}.embedding_length": ("uint32", embd),
        "{arch}.block_count": ("uint32", layers),
        "{arch}.feed_forward_length": ("uint32", ff),
        "{arch}.rope.dimension_count": ("uint32", embd // heads),
        "{arch}.attention.head_count": ("uint32", heads),
        "{arch}.attention.head_count_kv": ("uint32", heads_kv),
        "{arch}.attention.layer_norm_rms_epsilon": ("float32", eps),
        "{arch}.rope.freq_base": ("float32", rope_base),
    }
    if rope_scale:
        h["{arch}.rope.scaling.type"] = ("string", "linear")
        h["{arch}.rope.scaling.factor"] = ("float32", rope_scale)
    return h


# ---- SentencePiece (CodeLlama) ----------------------------------------------------------------

def build_codellama(texts: list[str], out: str) -> None:
    import sentencepiece as spm

    sentences = [line for t in texts for line in t.split("\n") if line.strip()]
    model = io.BytesIO()
    spm.set_random_generator_seed(1234)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model,
        model_type="bpe", vocab_size=SPM_VOCAB, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", add_dummy_prefix=True,
        character_coverage=0.9995, max_sentencepiece_length=16, max_sentence_length=8192,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i)
                     else UNUSED if sp.is_unused(i) else BYTE if sp.is_byte(i) else NORMAL)
    assert tokens[:3] == ["<unk>", "<s>", "</s>"], tokens[:3]
    assert sum(t == BYTE for t in types) == 256
    # CodeLlama's infill tokens (ids 32007-32010 in the real 32016-token vocabulary), appended.
    infill = {}
    for name, text in (("prefix", "\u2581<PRE>"), ("suffix", "\u2581<SUF>"),
                       ("middle", "\u2581<MID>"), ("eot", "\u2581<EOT>")):
        assert text not in tokens
        infill[name] = len(tokens)
        tokens.append(text)
        scores.append(0.0)
        types.append(CONTROL)

    hp = llama_hparams(16384, 4096, 32, 11008, 32, 32, 1e-5, 1e6)  # CodeLlama-7B
    write_gguf(out, "llama", hp, {
        "model": "llama", "pre": "default", "tokens": tokens, "scores": scores,
        "token_type": types,
        "ids": {"bos": 1, "eos": 2, "unknown": 0, **infill},
        "add_bos": True, "add_eos": False, "add_space_prefix": True,
        "chat_template": template("codellama-instruct.jinja"),
    })


# ---- byte-level BPE (DeepSeek-Coder, Qwen2.5-Coder, StarCoder) --------------------------------

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def pre_tokenizer(kind: str):
    from tokenizers import Regex, pre_tokenizers as pt

    byte_level = pt.ByteLevel(add_prefix_space=False, use_regex=False)
    if kind == "deepseek-coder":
        splits = ["[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
                  r"\p{N}"]
        return pt.Sequence([pt.Split(Regex(r), behavior="isolated") for r in splits] + [byte_level])
    if kind == "qwen2":
        return pt.Sequence([pt.Split(Regex(QWEN2_REGEX), behavior="isolated"), byte_level])
    if kind == "lines":
        return byte_level
    if kind == "starcoder":
        return pt.Sequence([pt.Digits(individual_digits=True),
                            pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    raise ValueError(kind)


def train_bpe(texts: list[str], kind: str) -> tuple[list[str], list[str]]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "lines":  # every line (newline included) is one word
        texts = [line for t in texts for line in t.splitlines(keepends=True)]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizer(kind)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer=trainer)
    state = json.loads(tk.to_str())["model"]
    vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    return tokens, merges


def bpe_vocab(trained: list[str], before: list[tuple[str, int]], after: list[tuple[str, int]]):
    tokens = [t for t, _ in before] + trained + [t for t, _ in after]
    types = [ty for _, ty in before] + [NORMAL] * len(trained) + [ty for _, ty in after]
    assert len(set(tokens)) == len(tokens)
    return tokens, types


def build_deepseek(texts: list[str], out: str, kind: str = "deepseek-coder") -> None:
    trained, merges = train_bpe(texts, kind)
    # deepseek-coder-*-instruct: ids 32013.. in the real vocabulary (after 13 byte characters
    # the real one adds as plain tokens; here the trained vocabulary has every byte already).
    B, E = "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"
    after = [(B, CONTROL), (E, CONTROL),
             ("<\uff5cfim\u2581hole\uff5c>", CONTROL), ("<\uff5cfim\u2581begin\uff5c>", CONTROL),
             ("<\uff5cfim\u2581end\uff5c>", CONTROL), ("<pad>", CONTROL),
             ("<|User|>", USER_DEFINED), ("<|Assistant|>", USER_DEFINED), ("<|EOT|>", CONTROL)]
    tokens, types = bpe_vocab(trained, [], after)
    hp = llama_hparams(16384, 2048, 24, 5504, 16, 16, 1e-6, 1e5, rope_scale=4.0)
    write_gguf(out, "llama", hp, {
        "model": "gpt2", "pre": "deepseek-coder", "tokens": tokens, "token_type": types,
        "merges": merges,
        "ids": {"bos": tokens.index(B), "eos": tokens.index("<|EOT|>"),
                "padding": tokens.index(E)},
        "add_bos": True, "add_eos": False,
        "chat_template": template("deepseek-coder-instruct.jinja"),
    })


# Boundaries the deepseek-coder regexes draw that code rarely shows: non-ASCII spaces inside the
# CJK range's span, the range's edges, marks, full-width punctuation.
PROBE_EXTRA = ("a\u2003b\u3000c\u2028d\u1680e\u205ff\u00a0g\n"
               "\u07ff\u0800\u0801 \u0915\u094d\u0937 \u0e44\u0e17\u0e22\n"
               "\uabff\uac00\ud7a3\ud7ff \u9fa5\u9fa6 \u4e00\n"
               " \u4e2d\u6587\u3002 \uff08x\uff09\u3001y\n")


def build_probe(texts: list[str], out: str) -> None:
    # The test corpus four times over, so that its lines' own boundaries (a space before CJK,
    # a combining mark, a non-ASCII space) become merges.
    corpus = [t for t in corpus_texts(CORPUS_CAPS[2:])]
    build_deepseek(texts + 4 * corpus + 300 * [PROBE_EXTRA], out, kind="lines")


def build_qwen(texts: list[str], out: str) -> None:
    trained, merges = train_bpe(texts, "qwen2")
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
             "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
             "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
             "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
             "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
    after = [(n, USER_DEFINED if "tool_call" in n else CONTROL) for n in names]
    tokens, types = bpe_vocab(trained, [], after)
    hp = {
        "{arch}.context_length": ("uint32", 32768),
        "{arch}.embedding_length": ("uint32", 1536),
        "{arch}.block_count": ("uint32", 28),
        "{arch}.feed_forward_length": ("uint32", 8960),
        "{arch}.attention.head_count": ("uint32", 12),
        "{arch}.attention.head_count_kv": ("uint32", 2),
        "{arch}.attention.layer_norm_rms_epsilon": ("float32", 1e-6),
        "{arch}.rope.freq_base": ("float32", 1e6),
    }
    eot = tokens.index("<|endoftext|>")
    write_gguf(out, "qwen2", hp, {  # Qwen2.5-Coder-1.5B-Instruct
        "model": "gpt2", "pre": "qwen2", "tokens": tokens, "token_type": types,
        "merges": merges,
        "ids": {"eos": tokens.index("<|im_end|>"), "padding": eot, "bos": eot},
        "add_bos": False,
        "chat_template": template("qwen2.5-coder-instruct.jinja"),
    })


def build_starcoder(texts: list[str], out: str) -> None:
    trained, merges = train_bpe(texts, "starcoder")
    names = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
             "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
             "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
             "<empty_output>", "<commit_before>", "<commit_msg>", "<commit_after>", "<reponame>",
             "<file_sep>"]
    tokens, types = bpe_vocab(trained, [(n, CONTROL) for n in names], [])
    # The merges name tokens by text, so prepending the specials needs no renumbering.
    hp = {
        "{arch}.context_length": ("uint32", 8192),
        "{arch}.embedding_length": ("uint32", 2048),
        "{arch}.block_count": ("uint32", 24),
        "{arch}.feed_forward_length": ("uint32", 8192),
        "{arch}.attention.head_count": ("uint32", 16),
        "{arch}.attention.head_count_kv": ("uint32", 1),
        "{arch}.attention.layer_norm_epsilon": ("float32", 1e-5),
    }
    write_gguf(out, "starcoder", hp, {  # StarCoder-1B (starcoderbase-1b)
        "model": "gpt2", "pre": "starcoder", "tokens": tokens, "token_type": types,
        "merges": merges,
        "ids": {"bos": 0, "eos": 0, "unknown": 0},
    })


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT_DEFAULT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    texts = corpus_texts()
    print("corpus: %d files, %d chars" % (len(texts), sum(len(t) for t in texts)))
    for name, build in (("codellama-spm.gguf", build_codellama),
                        ("deepseek-coder.gguf", build_deepseek),
                        ("qwen2.5-coder.gguf", build_qwen),
                        ("starcoder.gguf", build_starcoder),
                        ("deepseek-coder-probe.gguf", build_probe)):
        path = os.path.join(args.out, name)
        build(texts, path)
        print("%s: %d bytes" % (path, os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
