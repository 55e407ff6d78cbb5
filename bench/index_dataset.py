#!/usr/bin/env python3
"""index_dataset.py — builds bench_index's labelled retrieval set from Python's standard library
(code nobody in this project wrote): a copy of some packages with function docstrings removed
(so a docstring cannot find itself), and queries in JSONL:
  nl:   a function docstring's first sentence -> that function's definition
  code: the lines before a call (up to "name(") -> the called function's definition, which is
        in another file of the copy
Each query names its target file and the line of the `def` in the copy.

usage: index_dataset.py OUT_DIR [--packages json,http,...] [--per-kind 150] [--seed 1]
writes OUT_DIR/corpus/... and OUT_DIR/queries.jsonl"""
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
    lines = src.splitlines(keepends=True)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--packages", default="json,http,urllib,logging,email,csv.py,argparse.py")
    ap.add_argument("--per-kind", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    corpus = os.path.join(a.out, "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    files = []
    for p in a.packages.split(","):
        src = os.path.join(STDLIB, p)
        if os.path.isdir(src):
            for root, dirs, names in os.walk(src):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                files += [os.path.relpath(os.path.join(root, n), STDLIB) for n in names
                          if n.endswith(".py")]
        else:
            files.append(p)
    nl, defs, trees = [], {}, {}
    for rel in sorted(files):
        orig = open(os.path.join(STDLIB, rel), encoding="utf-8").read()
        # the docstrings of the original, by qualified position (name, nth occurrence)
        docs = {}
        for node in ast.walk(ast.parse(orig)):
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
        trees[rel] = (tree, stripped.splitlines())
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
            q = "\n".join(before + [line[:end] + "("])
            code.append({"kind": "code", "query": q, "file": tfile, "line": tline, "name": name,
                         "from": rel, "from_line": node.lineno})
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
    with open(os.path.join(a.out, "queries.jsonl"), "w") as fh:
        for q in out:
            fh.write(json.dumps(q) + "\n")
    print(f"{len(files)} files; {len(nl)} nl candidates, {len(uniq)} code candidates; wrote "
          f"{min(len(nl), a.per_kind)} nl + {min(len(uniq), a.per_kind)} code queries",
          file=sys.stderr)


if __name__ == "__main__":
    main()
