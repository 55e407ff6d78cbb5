#!/usr/bin/env python3
# gen_tokenizer_fixtures.py — llama.cpp's tokenizations of the corpus with each family vocabulary (dev-time only).
"""Writes tests/fixtures/llamacpp/tokenize_families.jsonl.

Dev-time only: needs `llama-cpp-python` (and what tools/gen_llamacpp_fixtures.py imports).
For every vocabulary in tests/fixtures/vocab/ (see its README), loaded with
Llama(model_path, vocab_only=True), one JSON object per line:

    {"vocab", "name", "text_b64", "parse_special", "ids"[, "detok_b64"]}

  ids        llama_tokenize(raw bytes, add_special=false, parse_special) — the bytes are passed
             as they are, invalid UTF-8 included.
  detok_b64  present only when it differs from the text: what llama.cpp turns the ids back
             into, llama_token_to_piece(id, special=true) of each id concatenated, the first
             one with lstrip=1 when the vocabulary has add_space_prefix (SentencePiece) — that
             is llama_detokenize(remove_special=false, unparse_special=true) without the
             clean_spaces pass that llama_detokenize runs for some byte-level vocabularies
             (llama.cpp's server streams pieces, never cleans spaces).

Texts: tools/gen_llamacpp_fixtures.py's corpus set (its EDGE_CASES, whole files of
tests/fixtures/corpus/, lines, seeded substrings, byte-cut substrings) plus FAMILY_CASES below.
Every text is tokenized with parse_special=false, and texts that hold a special or user-defined
token's text also with parse_special=true.  `codellama-spm`, `deepseek-coder` and
`deepseek-coder-probe` (new tokenizer code paths; the probe's merges cross every word boundary,
so it shows the pre-tokenizer's exact split) get the whole set; `qwen2.5-coder` and `starcoder`
(pre-tokenizers already covered by tokenize.jsonl) the smaller one without whole files.

Rerun (from the repository root; under a minute):

    python3 tools/gen_vocabs.py            # only if the vocabularies change
    python3 tools/gen_tokenizer_fixtures.py

The output is deterministic for a given llama.cpp build.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_llamacpp_fixtures as base  # noqa: E402

ROOT = base.ROOT
VOCAB_DIR = os.path.join(ROOT, "tests", "fixtures", "vocab")
OUT = os.path.join(ROOT, "tests", "fixtures", "llamacpp", "tokenize_families.jsonl")

VOCABS = [("codellama-spm", True), ("deepseek-coder", True), ("deepseek-coder-probe", True),
          ("qwen2.5-coder", False), ("starcoder", False)]

BOS_DS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>".encode()
FIM_DS = ("<\uff5cfim\u2581begin\uff5c>def f(x):\n    <\uff5cfim\u2581hole\uff5c>\n    return y"
          "<\uff5cfim\u2581end\uff5c>").encode()

FAMILY_CASES: list[tuple[str, bytes]] = [
    # SentencePiece: the leading space, spaces, U+2581 in the input, text around specials.
    ("spm_x", b"x"),
    ("spm_space_x", b" x"),
    ("spm_two_spaces_x", b"  x"),
    ("spm_trailing_space", b"x "),
    ("spm_only_spaces", b"    "),
    ("spm_newline_indent", b"\n    return 0;\n"),
    ("spm_lower_block", "\u2581x \u2581\u2581y\u2581".encode()),
    ("spm_bos_text", b"<s>int main"),
    ("spm_bos_space_text", b"<s> int main"),
    ("spm_eos_newline", b"done</s>\n"),
    ("spm_unk_text", b"a<unk>b"),
    ("spm_s_adjacent", b"<s></s><s>"),
    ("spm_inst", b"<s>[INST] Write a function [/INST]"),
    ("spm_inst_sys", b"<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s>"),
    ("spm_infill", "\u2581<PRE> def f(x):\n \u2581<SUF>\n    return y \u2581<MID>".encode()),
    ("spm_infill_bare", b"<PRE> x <SUF> y <MID>"),
    ("spm_infill_eot", "pass\u2581<EOT>".encode()),
    ("spm_byte_fallback", "\u0fff\u2ffb\U0001f9ec\U00010348 \u1f00".encode()),
    ("spm_control_bytes", b"\x01\x02\x1b[0m\x7f"),
    ("spm_hex_like", b"<0x41><0x0A>"),
    ("spm_long_digits", b"x = 1234567890123"),
    # DeepSeek-Coder: its regexes (newlines, \s?\p{L}+, \s?\p{P}+, the CJK ranges, digits).
    ("ds_crlf_words", b"a\r\nb\n\nc\r"),
    ("ds_space_letters", b"  hello  world\t\tfoo"),
    ("ds_space_punct", b"x = (a, b); y = [c]; z = {d}"),
    ("ds_symbols", b"a+b-c*d/e$f^g|h~i`j<k>l=m"),
    ("ds_cjk_space", " \u4e2d\u6587  \u65e5\u672c\u8a9e\u3002 \ud55c\uad6d\uc5b4".encode()),
    ("ds_cjk_mixed", "abc\u4e2d\u6587def123\u4e00\u9fa5\u9fa6".encode()),
    ("ds_range_edges", "\u07ff\u0800\u0801 \u0915\u094d\u0937 \u0e44\u0e17\u0e22".encode()),
    ("ds_hangul_edges", "\uabff\uac00\ud7a3\ud7ff".encode()),
    ("ds_ws_in_range", "a\u2003b\u3000c\u2028d\u1680e".encode()),
    ("ds_digits", b"v1.2.3 1234 \xd9\xa1\xd9\xa2"),
    ("ds_bos", BOS_DS + b"def f():"),
    ("ds_fim", FIM_DS),
    ("ds_instruct", b"### Instruction:\nHi\n### Response:\nHello\n<|EOT|>\n"),
    ("ds_user_defined", b"<|User|> hi <|Assistant|> yo"),
    ("ds_pad", b"<pad><pad>x"),
    # Qwen2.5-Coder and StarCoder special and user-defined tokens.
    ("qwen_fim", b"<|fim_prefix|>def f():\n    <|fim_suffix|>\n    return 1<|fim_middle|>"),
    ("qwen_repo", b"<|repo_name|>serval\n<|file_sep|>main.c\nint x;<|endoftext|>"),
    ("qwen_tool_call", b"<tool_call>\n{\"name\": \"f\"}\n</tool_call>"),
    ("qwen_chat", b"<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"),
    ("starcoder_fim", b"<fim_prefix>def f():\n    <fim_suffix>\n    return 1<fim_middle>"),
    ("starcoder_meta", b"<reponame>serval<filename>a.py<gh_stars>100\nx<file_sep>y<|endoftext|>"),
    ("starcoder_jupyter", b"<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>"),
]


def special_strings(llm) -> list[bytes]:
    """Texts of the tokens parse_special can split out (control, user-defined, unknown)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    mask = (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED |
            llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN)
    out = []
    for i in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_get_attr(vocab, i) & mask:
            out.append(llama_cpp.llama_vocab_get_text(vocab, i))
    return out


def detok(llm, ids: list[int], lstrip_first: bool) -> bytes:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    buf = ctypes.create_string_buffer(256)
    out = b""
    for k, t in enumerate(ids):
        n = llama_cpp.llama_token_to_piece(vocab, t, buf, 256, 1 if (k == 0 and lstrip_first) else 0,
                                           True)
        assert 0 <= n <= 256, n
        out += buf.raw[:n]
    return out


def main() -> int:
    _, Llama = base.import_llama()
    texts = base.build_texts([])
    texts += [(f"family:{n}", b) for n, b in FAMILY_CASES]
    rows, counts = [], {}
    for name, full in VOCABS:
        path = os.path.join(VOCAB_DIR, name + ".gguf")
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        specials = special_strings(llm)
        spm = llm.metadata.get("tokenizer.ggml.model") == "llama"
        lstrip = spm and llm.metadata.get("tokenizer.ggml.add_space_prefix", "true") == "true"
        chosen = texts if full else base.subset_for_other_pre(texts)
        for tname, data in chosen:
            modes = [False] + ([True] if any(s in data for s in specials) else [])
            for ps in modes:
                ids = list(llm.tokenize(data, add_bos=False, special=ps))
                row = {"vocab": name, "name": tname, "text_b64": base.b64(data),
                       "parse_special": ps, "ids": ids}
                back = detok(llm, ids, lstrip)
                if back != data:
                    row["detok_b64"] = base.b64(back)
                rows.append(row)
                counts[name] = counts.get(name, 0) + 1
        del llm
    with open(OUT, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True, separators=(",", ":")) + "\n")
    print("%s: %d rows %s, %d bytes" % (OUT, len(rows), counts, os.path.getsize(OUT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
