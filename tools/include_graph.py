#!/usr/bin/env python3
"""include_graph.py — folder-level #include graph of the tree (which folder's files include
which folder's headers), resolved by header name against the files git tracks.

    tools/include_graph.py                 every edge between top-level folders and engine/ subfolders
    tools/include_graph.py --from rpc      only edges out of rpc/ (with the headers they use)
"""
import collections, os, re, subprocess, sys

top = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip()
files = subprocess.check_output(["git", "ls-files"], cwd=top, text=True).split()
src = [f for f in files if re.search(r"\.(c|h|cu|cuh|cpp)$", f)]
by_name = collections.defaultdict(list)
for f in src:
    by_name[os.path.basename(f)].append(f)


def folder(path):
    parts = path.split("/")
    if parts[0] == "engine" and len(parts) > 2:
        return "engine/" + parts[1]
    if parts[0] in ("kernels", "tests", "bench") and len(parts) > 2 and parts[1] in ("ref", "emu", "kernels"):
        return parts[0] + "/" + parts[1]
    return parts[0]


only = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--from" else None
edges = collections.defaultdict(set)
inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
for f in src:
    with open(os.path.join(top, f), errors="replace") as fh:
        for line in fh:
            m = inc.match(line)
            if not m:
                continue
            name = os.path.basename(m.group(1))
            here = os.path.join(os.path.dirname(f), m.group(1))
            cands = [here] if here in by_name.get(name, []) else by_name.get(name, [])
            if not cands:
                continue  # generated (serval.pb-c.h) or system
            a, b = folder(f), folder(cands[0])
            if a != b:
                edges[(a, b)].add(name)
for (a, b), hs in sorted(edges.items()):
    if only and not a.startswith(only):
        continue
    print(f"{a} -> {b}: {' '.join(sorted(hs))}")
