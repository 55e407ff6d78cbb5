#!/usr/bin/env python3
"""index_dataset.py — builds bench_index's labelled retrieval set from Python code nobody in this
project wrote (by default Python's standard library; --root picks another tree, e.g.
/usr/lib/python3/dist-packages for a held-out set): a copy of some packages with function
docstrings removed (so a docstring cannot find itself), and queries in JSONL:
  nl:   a function docstring's first sentence -> that function's definition
  code: the lines before a call (up to "name(") -> the called function's definition, which is
        in another file of the copy
Each query names its target file and the line of the `def` in the copy.

usage: index_dataset.py OUT_DIR [--root DIR] [--packages json,http,...] [--per-kind 150] [--seed 1]
writes OUT_DIR/corpus/... and OUT_DIR/queries.jsonl. The defaults make the set of bench/RESULTS.md's
"Indexer" sections (the development set); the held-out set of the fourth session:
  index_dataset.py OUT --root /usr/lib/python3/dist-packages \
      --packages oauthlib,jwt,yaml,httplib2,toml,wadllib,lazr,blinker,argcomplete,aptsources"""
import argparse
import ast
import json
import os
import random
import re
import shutil
import sys

STDLIB = "/usr/lib/python3.11"


def strip_docstrings(src):
    """The source without function docstrings (a function left empty gets `pass`)."""
    tree = ast.parse(src)
    lines = re.split(r"(?<=\n)", src)  # ast's lines: \n only (splitlines also cuts at \f)
    cut = []  # (first, last, indent, needs_pass), 1-based inclusive
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            d = node.body[0]
            if isinstance(d, ast.Expr) and isinstance(d.value, ast.Constant) and \
                    isinstance(d.value.value, str):
                # only docstrings alone on their lines
                if lines[d.lineno - 1][:d.col_offset].strip() == "":
                    cut.append((d.lineno, d.end_lineno, d.col_offset, len(node.body) == 1))
    for first, last, indent, needs_pass in sorted(cut, reverse=True):
        lines[first - 1:last] = [" " * indent + "pass\n"] if needs_pass else []
    return "".join(lines)


def first_sentence(doc):
    doc = " ".join(doc.strip().split())
    m = re.match(r"(.+?[.!?])(\s|$)", doc)
    s = m.group(1) if m else doc
    return s if 4 <= len(s.split()) <= 40 else None


# ---- C (--lang c): call -> definition pairs from C/C++ sources found by pattern, not parsed ----

C_EXT = (".c", ".h", ".cpp", ".hpp", ".cc")
C_NOT_NAMES = {"if", "for", "while", "switch", "return", "sizeof", "defined", "else", "do",
               "case", "typeof", "alignof", "static_assert", "_Static_assert"}
C_DEF = re.compile(r"^(?:[A-Za-z_][\w \t\*&:<>,]*?[ \t\*&])?([A-Za-z_]\w*)\s*\(")
C_MACRO = re.compile(r"^#\s*define\s+([A-Za-z_]\w*)\(")
C_CALL = re.compile(r"(?<![\w.>])([A-Za-z_]\w*)\s*\(")


def c_definitions(lines):
    """(name, 0-based line) of the functions (a line at column 0 naming it before `(`, whose
    `{` comes before any `;`) and function-like macros in lines."""
    out = []
    for i, line in enumerate(lines):
        m = C_MACRO.match(line)
        if m:
            out.append((m.group(1), i))
            continue
        if not line or line[0] in " \t#/*}{" or line.rstrip().endswith(";"):
            continue
        m = C_DEF.match(line)
        if not m or m.group(1) in C_NOT_NAMES or "=" in line[:m.start(1)]:
            continue
        if any(w in C_NOT_NAMES for w in re.findall(r"\w+", line[:m.start(1)])):
            continue
        rest = "\n".join(lines[i:i + 12])[m.end():]
        brace, semi = rest.find("{"), rest.find(";")
        if brace >= 0 and (semi < 0 or brace < semi):
            out.append((m.group(1), i))
    return out


def c_comment_above(lines, i):
    """The comment block (// lines or one /* */) right above line i: (first line, text)."""
    j = i - 1
    if j >= 0 and lines[j].strip().startswith("//"):
        while j >= 0 and lines[j].strip().startswith("//"):
            j -= 1
        return j + 1, " ".join(l.strip().lstrip("/").strip() for l in lines[j + 1:i])
    if j >= 0 and lines[j].rstrip().endswith("*/"):
        while j >= 0 and "/*" not in lines[j]:
            j -= 1
        if j >= 0:
            text = " ".join(l.strip().strip("/*").strip() for l in lines[j:i])
            return j, text
    return None


def c_set(a, files):
    """The corpus copy (the comments right above definitions removed: they are the nl queries)
    and the nl and code queries, for C-like sources."""
    nl, defs, texts = [], {}, {}
    for rel in files:
        try:
            lines = open(os.path.join(a.root, rel), encoding="utf-8").read().split("\n")
        except UnicodeDecodeError:
            continue
        drop, docs = set(), {}
        for name, i in c_definitions(lines):
            c = c_comment_above(lines, i)
            if c:
                drop.update(range(c[0], i))
                docs[name] = c[1]
        lines = [l for k, l in enumerate(lines) if k not in drop]
        texts[rel] = lines
        dst = os.path.join(a.out, "corpus", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "w", encoding="utf-8").write("\n".join(lines))
        for name, i in c_definitions(lines):
            defs.setdefault(name, []).append((rel, i + 1))
            s = first_sentence(docs[name]) if name in docs else None
            if s:
                nl.append({"kind": "nl", "query": s, "file": rel, "line": i + 1, "name": name})
    code = []
    for rel, lines in texts.items():
        own = {i for _, i in c_definitions(lines)}
        for i, line in enumerate(lines):
            if i in own or not line[:1].isspace() or line.lstrip().startswith(("//", "*", "/*")):
                continue
            for m in C_CALL.finditer(line):
                name = m.group(1)
                if len(name) < 6 or name in C_NOT_NAMES or len(defs.get(name, [])) != 1:
                    continue
                tfile, tline = defs[name][0]
                if tfile == rel:
                    continue
                q = "\n".join(lines[max(0, i - 10):i] + [line[:m.end(1)] + "("])
                code.append({"kind": "code", "query": q, "file": tfile, "line": tline,
                             "name": name, "from": rel, "from_line": i + 1})
    return nl, code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--root", default=STDLIB, help="the tree the packages are in")
    ap.add_argument("--packages", default="json,http,urllib,logging,email,csv.py,argparse.py")
    ap.add_argument("--per-kind", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cut", action="store_true",
                    help="also a code_cut query per code query: the called name cut to its first "
                         "half, no '(' (the name still being typed)")
    ap.add_argument("--lang", choices=["py", "c"], default="py",
                    help="c: C/C++ sources, definitions found by pattern (no docstrings: the "
                         "comment right above a definition is its nl query, and removed)")
    a = ap.parse_args()
    corpus = os.path.join(a.out, "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    files = []
    if a.lang == "c":
        for p in a.packages.split(","):
            src = os.path.join(a.root, p)
            if os.path.isdir(src):
                files += sorted(os.path.relpath(os.path.join(src, n), a.root)
                                for n in os.listdir(src) if n.endswith(C_EXT))
            else:
                files.append(p)
        nl, code = c_set(a, files)
        return write(a, files, nl, code)
    for p in a.packages.split(","):
        src = os.path.join(a.root, p)
        if os.path.isdir(src):
            for root, dirs, names in os.walk(src):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                files += [os.path.relpath(os.path.join(root, n), a.root) for n in names
                          if n.endswith(".py")]
        else:
            files.append(p)
    nl, defs, trees = [], {}, {}
    for rel in sorted(files):
        try:
            orig = open(os.path.join(a.root, rel), encoding="utf-8").read()
            orig_tree = ast.parse(orig)
        except (SyntaxError, UnicodeDecodeError, ValueError):  # not Python 3: leave it out
            continue
        # the docstrings of the original, by qualified position (name, nth occurrence)
        docs = {}
        for node in ast.walk(orig_tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d:
                    docs.setdefault(node.name, []).append(d)
        stripped = strip_docstrings(orig)
        try:
            tree = ast.parse(stripped)
        except SyntaxError:  # a docstring sharing a line with code: keep the file, ask nothing of it
            stripped, tree, docs = orig, ast.parse(orig), {}
        dst = os.path.join(corpus, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "w", encoding="utf-8").write(stripped)
        trees[rel] = (tree, stripped.split("\n"))
        seen = {}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            k = seen.get(node.name, 0)
            seen[node.name] = k + 1
            defs.setdefault(node.name, []).append((rel, node.lineno))
            d = docs.get(node.name, [])
            if k < len(d):  # ast.walk visits the copy's functions in the original's order
                s = first_sentence(d[k])
                if s and not node.name.startswith("__"):
                    nl.append({"kind": "nl", "query": s, "file": rel, "line": node.lineno,
                               "name": node.name})
    code = []
    for rel, (tree, lines) in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if not name or name.startswith("_") or len(name) < 6 or len(defs.get(name, [])) != 1:
                continue
            tfile, tline = defs[name][0]
            if tfile == rel:
                continue
            line = lines[node.lineno - 1]
            end = f.end_col_offset
            if f.end_lineno != node.lineno:
                continue
            before = lines[max(0, node.lineno - 11):node.lineno - 1]
            # ast's columns count UTF-8 bytes
            q = "\n".join(before + [line.encode()[:end].decode(errors="ignore") + "("])
            code.append({"kind": "code", "query": q, "file": tfile, "line": tline, "name": name,
                         "from": rel, "from_line": node.lineno})
    write(a, files, nl, code)


def write(a, files, nl, code):
    rnd = random.Random(a.seed)
    rnd.shuffle(nl)
    rnd.shuffle(code)
    # one code query per called function, so a popular one does not dominate
    uniq, seen_names = [], set()
    for q in code:
        if q["name"] not in seen_names:
            seen_names.add(q["name"])
            uniq.append(q)
    out = nl[:a.per_kind] + uniq[:a.per_kind]
    if a.cut:
        for q in uniq[:a.per_kind]:
            n = q["name"]
            cut = dict(q, kind="code_cut",
                       query=q["query"][:-(len(n) + 1)] + n[:max(3, len(n) // 2)])
            out.append(cut)
    with open(os.path.join(a.out, "queries.jsonl"), "w") as fh:
        for q in out:
            fh.write(json.dumps(q) + "\n")
    print(f"{len(files)} files; {len(nl)} nl candidates, {len(uniq)} code candidates; wrote "
          f"{min(len(nl), a.per_kind)} nl + {min(len(uniq), a.per_kind)} code queries",
          file=sys.stderr)


if __name__ == "__main__":
    main()
