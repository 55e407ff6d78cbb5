#!/usr/bin/env python3
"""Generate the prompt-builder fixtures: chat templates and FIM prompts per family.

Dev-time only: needs `llama-cpp-python` (its Jinja2ChatFormatter, the path
llama-cpp-python's create_chat_completion takes for a GGUF's
tokenizer.chat_template, with Transformers' settings: trim_blocks,
lstrip_blocks) and `gguf`.  Serval never runs it; tests read its output.

Writes tests/fixtures/prompt/chat_templates.jsonl, one JSON object per line:

  {"name", "kind", "template", "bos_token", "eos_token", "messages",
   "jinja", "llama_cpp", "llama_cpp_same"}

  name       where the template comes from (a Hugging Face repository, or a
             GGUF under tests/fixtures/vocab/ once those exist)
  kind       the chat kind Serval must detect ("chatml", "llama2", "llama3",
             "deepseek", or "none" for templates it must refuse)
  refusal    for "none": a word the refusal message must contain (the family)
  template   the real tokenizer.chat_template text
  messages   the conversation ([{"role", "content"}]); two per template:
             system+user+assistant+user, and user+assistant+user (so the
             template's default system prompt, if any, shows)
  jinja      the template rendered by Jinja with add_generation_prompt=true,
             bos_token/eos_token as given: the text the model was trained on
             and what Serval's `text` must equal (empty for "none" kinds)
  llama_cpp  llama.cpp's built-in rendering (llama_chat_apply_template with
             the template text, which llama.cpp matches to a built-in format
             by its markers); "" when llama.cpp does not recognise it.  Kept
             for comparison only: it drops the BOS text, leaves content
             untrimmed, and skips default system prompts, so it is not what
             Serval matches
  llama_cpp_same  whether the two agree
  vocab, ids for the three code families, the family vocabulary under
             tests/fixtures/vocab/ and llama.cpp's tokenization of `jinja` with it
             (vocab_only load, tokenize(add_bos=False, special=True): the template's
             special tokens as ids, as llama-cpp-python's chat path does); Serval's
             tokens must be these

and tests/fixtures/prompt/fim.jsonl, one JSON object per line:

  {"vocab", "family", "prefix", "suffix", "text", "ids", "llama_cpp_infill"}

  vocab      the family vocabulary under tests/fixtures/vocab/
  family     Serval's FIM kind for it
  text       Tabby's template for the family with BOS text first when the vocabulary adds
             BOS: <fim_prefix>P<fim_suffix>S<fim_middle> (StarCoder),
             <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|> (Qwen2.5-Coder),
             <｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜> (DeepSeek-Coder),
             <PRE> P <SUF>S <MID> (CodeLlama)
  ids        the tokens the model was trained on, from llama.cpp's tokenizer (vocab_only):
             BOS when add_bos, then for the three byte-level families `text` tokenized
             with special tokens parsed; for CodeLlama, Meta's infilling_prompt_tokens:
             ▁<PRE>, the prefix with SentencePiece's dummy-prefix space (the " " after
             <PRE> in the text form), ▁<SUF>, the suffix WITHOUT a dummy space (Meta's
             encode_infilling; here a copy of the vocabulary with add_space_prefix=false),
             ▁<MID> (the text form's " <SUF>" / " <MID>" spaces are the ▁ of those tokens)
  llama_cpp_infill  what llama.cpp's server /infill sends for the same prefix and suffix
             (format_prompt_infill: BOS, fim_pre, tokenize(prefix), fim_suf,
             tokenize(suffix), fim_mid, each fragment tokenized alone): equal to `ids` but
             for CodeLlama, where it gives the suffix a dummy-prefix space too; kept for
             comparison

Run:  python3 tools/gen_prompt_fixtures.py   (a few seconds; vocab-only loads)
"""
import ctypes
import json
import os
import sys

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENDOR = os.path.join(os.path.dirname(llama_cpp.__file__), "..", "..", "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "prompt", "chat_templates.jsonl")
FIM_OUT = os.path.join(ROOT, "tests", "fixtures", "prompt", "fim.jsonl")
VOCAB = os.path.join(ROOT, "tests", "fixtures", "vocab")

# Real templates, as their models' tokenizer_config.json ships them.
LLAMA2_CHAT = (  # meta-llama/Llama-2-7b-chat-hf
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
    "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
    "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
CODELLAMA_INSTRUCT = (  # codellama/CodeLlama-7b-Instruct-hf: the same with `| trim`
    LLAMA2_CHAT.replace("content.strip()", "content | trim"))
DEEPSEEK_CODER_INSTRUCT = (  # deepseek-ai/deepseek-coder-6.7b-instruct (and 1.3b, 33b)
    "{% if not add_generation_prompt is defined %}\n{% set add_generation_prompt = false %}\n"
    "{% endif %}\n{%- set ns = namespace(found=false) -%}\n{%- for message in messages -%}\n"
    "    {%- if message['role'] == 'system' -%}\n        {%- set ns.found = true -%}\n"
    "    {%- endif -%}\n{%- endfor -%}\n{{bos_token}}{%- if not ns.found -%}\n"
    "{{'You are an AI programming assistant, utilizing the Deepseek Coder model, developed "
    "by Deepseek Company, and you only answer questions related to computer science. For "
    "politically sensitive questions, security and privacy issues, and other non-computer "
    "science questions, you will refuse to answer\\n'}}\n{%- endif %}\n"
    "{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n"
    "{{ message['content'] }}\n    {%- else %}\n        {%- if message['role'] == 'user' %}\n"
    "{{'### Instruction:\\n' + message['content'] + '\\n'}}\n        {%- else %}\n"
    "{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n        {%- endif %}\n"
    "    {%- endif %}\n{%- endfor %}\n{% if add_generation_prompt %}\n"
    "{{'### Response:'}}\n{% endif %}")
LLAMA3 = (  # meta-llama/Meta-Llama-3-8B-Instruct
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL_V02 = (  # mistralai/Mistral-7B-Instruct-v0.2 (old): Serval must refuse it
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only "
    "user and assistant roles are supported!') }}{% endif %}{% endfor %}")
GEMMA = (  # google/gemma-7b-it: refused
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role "
    "not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
    "alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
    "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\n'}}{% endif %}")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def gguf_template(path):
    import gguf
    r = gguf.GGUFReader(path)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


CONVERSATIONS = [
    [{"role": "system", "content": "You are a helpful assistant"},
     {"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "  Hi there  "},
     {"role": "user", "content": "Write fib in Python\n"}],
    [{"role": "user", "content": "Hello"},
     {"role": "assistant", "content": "Hi there"},
     {"role": "user", "content": "Who are you"}],
]


def llama_cpp_builtin(template, messages):
    arr = (llama_cpp.llama_chat_message * len(messages))()
    keep = []
    for i, m in enumerate(messages):
        role, content = m["role"].encode(), m["content"].encode()
        keep += [role, content]
        arr[i].role, arr[i].content = role, content
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_chat_apply_template(template.encode(), arr, len(messages), True, buf,
                                            len(buf))
    return "" if n < 0 else buf.raw[:n].decode("utf-8")


FIM_FAMILIES = [  # vocabulary, kind, pre, suf, mid (texts)
    ("starcoder.gguf", "starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("qwen2.5-coder.gguf", "qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("deepseek-coder.gguf", "deepseek", "<\uff5cfim\u2581begin\uff5c>",
     "<\uff5cfim\u2581hole\uff5c>", "<\uff5cfim\u2581end\uff5c>"),
    ("codellama-spm.gguf", "codellama", "<PRE> ", " <SUF>", " <MID>"),
]
FIM_CASES = [  # (prefix, suffix): what Tabby sends (an empty suffix arrives as "\n")
    ("def fib(n):\n    ", "\n\nprint(fib(3))\n"),
    ("import os\n\nclass Config:\n    path = os.path.join(", "\n    debug = False\n"),
    ("    x = 'h\u00e9llo'  # ", "  return x\n"),
    ("fn main() {\n\tlet v = vec![1, 2];\n\t", "\n}\n"),
    ("// \u4f60\u597d\nint ", " y;\n"),
    ("a = ", "\n"),
]


def no_space_prefix_copy(path, tmp):
    """The vocabulary with tokenizer.ggml.add_space_prefix = false (one byte patched)."""
    data = bytearray(open(path, "rb").read())
    key = b"tokenizer.ggml.add_space_prefix"
    i = data.index(key) + len(key)
    assert int.from_bytes(data[i:i + 4], "little") == 7  # GGUF bool
    data[i + 4] = 0
    with open(tmp, "wb") as f:
        f.write(data)
    return tmp


def fim_fixture():
    import tempfile
    rows = []
    for vocab_file, kind, pre, suf, mid in FIM_FAMILIES:
        path = os.path.join(VOCAB, vocab_file)
        lv = llama_cpp.Llama(path, vocab_only=True, verbose=False)
        bos = [lv.token_bos()] if lv._model.add_bos_token() else []
        bos_text = lv.detokenize(bos, special=True).decode() if bos else ""
        ids_of = {t: lv.tokenize(t.encode(), add_bos=False, special=True) for t in (pre, suf, mid)}
        nodummy = None
        if kind == "codellama":
            tmp = tempfile.NamedTemporaryFile(suffix=".gguf", delete=False).name
            nodummy = llama_cpp.Llama(no_space_prefix_copy(path, tmp), vocab_only=True,
                                      verbose=False)
            os.unlink(tmp)
            fim = [lv._model.token_prefix(), lv._model.token_suffix(), lv._model.token_middle()]
        for prefix, suffix in FIM_CASES:
            text = bos_text + pre + prefix + suf + suffix + mid
            plain = lambda t, m=lv: m.tokenize(t.encode(), add_bos=False, special=False)
            if kind == "codellama":
                ids = bos + [fim[0]] + plain(prefix) + [fim[1]] + plain(suffix, nodummy) + [fim[2]]
                infill = bos + [fim[0]] + plain(prefix) + [fim[1]] + plain(suffix) + [fim[2]]
            else:
                ids = bos + lv.tokenize(text[len(bos_text):].encode(), add_bos=False,
                                        special=True)
                infill = bos + ids_of[pre] + plain(prefix) + ids_of[suf] + plain(suffix) + \
                    ids_of[mid]
            rows.append({"vocab": vocab_file, "family": kind, "prefix": prefix,
                         "suffix": suffix, "text": text, "ids": ids,
                         "llama_cpp_infill": infill})
    with open(FIM_OUT, "w", encoding="utf-8") as out:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} cases to {os.path.relpath(FIM_OUT, ROOT)}", file=sys.stderr)


def main():
    vendor_templates = os.path.join(VENDOR, "vendor", "llama.cpp", "models", "templates")
    if not os.path.isdir(vendor_templates):
        vendor_templates = "/work/ref/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates"
    default_model = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    vocab = VOCAB
    family_vocab = {"Qwen/Qwen2.5-Coder-7B-Instruct": "qwen2.5-coder.gguf",
                    "codellama/CodeLlama-7b-Instruct-hf": "codellama-spm.gguf",
                    "deepseek-ai/deepseek-coder-6.7b-instruct": "deepseek-coder.gguf"}
    cases = [
        # (name, kind, template, bos, eos); the family vocabularies' templates are the real
        # ones (see tests/fixtures/vocab/README.md)
        ("Qwen/Qwen2.5-Coder-7B-Instruct", "chatml",
         gguf_template(os.path.join(vocab, "qwen2.5-coder.gguf")), "", "<|im_end|>"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "chatml", gguf_template(default_model),
         "<|im_start|>", "<|im_end|>"),
        ("codellama/CodeLlama-7b-Instruct-hf", "llama2",
         gguf_template(os.path.join(vocab, "codellama-spm.gguf")), "<s>", "</s>"),
        ("meta-llama/Llama-2-7b-chat-hf", "llama2", LLAMA2_CHAT, "<s>", "</s>"),
        ("deepseek-ai/deepseek-coder-6.7b-instruct", "deepseek",
         gguf_template(os.path.join(vocab, "deepseek-coder.gguf")),
         "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<|EOT|>"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3", LLAMA3, "<|begin_of_text|>",
         "<|eot_id|>"),
        ("mistralai/Mistral-7B-Instruct-v0.2", "none:Mistral", MISTRAL_V02, "<s>", "</s>"),
        ("google/gemma-7b-it", "none:Gemma", GEMMA, "<bos>", "<eos>"),
        ("meta-llama/Llama-3.1-8B-Instruct", "none:Llama-3.1",
         read(os.path.join(vendor_templates, "meta-llama-Llama-3.1-8B-Instruct.jinja")),
         "<|begin_of_text|>", "<|eot_id|>"),
    ]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    n = 0
    with open(OUT, "w", encoding="utf-8") as out:
        for name, kind, template, bos, eos in cases:
            kind, _, refusal = kind.partition(":")
            if kind == "llama2":  # the family vocabulary's template is the real one
                assert template in (LLAMA2_CHAT, CODELLAMA_INSTRUCT), name
            if kind == "deepseek":
                assert template.rstrip("\n") == DEEPSEEK_CODER_INSTRUCT, name
            for msgs in CONVERSATIONS:
                fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                          add_generation_prompt=True)
                try:
                    jinja = fmt(messages=msgs).prompt
                except Exception as e:  # a template that refuses the conversation
                    jinja = "ERROR: " + str(e)
                if kind == "none":
                    jinja = ""
                builtin = llama_cpp_builtin(template, msgs)
                extra = {}
                if name in family_vocab:
                    lv = llama_cpp.Llama(os.path.join(vocab, family_vocab[name]),
                                         vocab_only=True, verbose=False)
                    extra = {"vocab": family_vocab[name],
                             "ids": lv.tokenize(jinja.encode(), add_bos=False, special=True)}
                out.write(json.dumps({**extra,
                    "name": name, "kind": kind, "refusal": refusal, "template": template, "bos_token": bos,
                    "eos_token": eos, "messages": msgs, "jinja": jinja, "llama_cpp": builtin,
                    "llama_cpp_same": builtin == jinja}, ensure_ascii=False) + "\n")
                n += 1
    print(f"wrote {n} cases to {os.path.relpath(OUT, ROOT)}", file=sys.stderr)
    fim_fixture()


if __name__ == "__main__":
    main()
