#!/usr/bin/env python3
"""prefix_share.py — how often completion prompts reuse cached blocks when several developers of
one repository type with tabby-agent's jsonl-mode context (bench/RESULTS.md, "prompt section
order"). Each developer types through a file of the repository (a 20-line prefix window and a
20-line suffix, the cursor moving 10 characters a request and a line every 4), and every
request carries 2-4 of the repository's shared declarations in a rank order that changes from
request to request (as relevance scores do) and one snippet from the developer's own changed
file. Requests go one at a time per developer, developers in parallel; at the end the server's
/metrics prefix hit rate is printed. Run it against `serval serve` twice, with and without
--prefix-cache-per-token: the difference is what developers share.

  bench/prefix_share.py --url http://127.0.0.1:8080 --token-file TOKENS [--repo DIR]
                        [--developers 6] [--requests 12]
"""
import argparse
import glob
import json
import os
import random
import re
import threading
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', required=True)
    ap.add_argument('--token-file', required=True, help='one token a line; developer i uses line i')
    ap.add_argument('--repo', default=os.path.join(os.path.dirname(__file__), '..', 'engine', 'batch'))
    ap.add_argument('--developers', type=int, default=6)
    ap.add_argument('--requests', type=int, default=12, help='per developer')
    a = ap.parse_args()
    tokens = [t.strip() for t in open(a.token_file) if t.strip() and not t.startswith('#')]
    files = sorted(glob.glob(os.path.join(a.repo, '*.c')))
    pool = []  # the repository's declarations: function heads and their first lines
    for f in files:
        for m in re.finditer(r'^(?:static )?[a-z_][a-z_0-9 \*]+\([^;{]*\)\n\{\n(?:.*\n){0,3}',
                             open(f).read(), re.M):
            pool.append((os.path.relpath(f, a.repo), m.group(0)[:200]))
    pool = pool[:12]

    def post(token, body):
        rq = urllib.request.Request(a.url + '/v1/completions', data=json.dumps(body).encode(),
                                    headers={'Authorization': 'Bearer ' + token,
                                             'Content-Type': 'application/json'})
        return json.load(urllib.request.urlopen(rq, timeout=300))

    def developer(i):
        rng = random.Random(i)
        f = files[i % len(files)]
        lines = open(f).read().split('\n')
        mine = pool[rng.randrange(len(pool))]
        decls = rng.sample(pool, 4)
        line = 40 + 7 * i
        for k in range(a.requests):
            col = (k % 4) * 10
            prefix = '\n'.join(lines[line - 20:line]) + '\n' + lines[line][:col]
            suffix = lines[line][col:] + '\n' + '\n'.join(lines[line + 1:line + 21])
            d = decls[:]
            rng.shuffle(d)
            d = d[:rng.randint(2, 4)]
            post(tokens[i % len(tokens)], {
                'language': 'c',
                'segments': {'prefix': prefix, 'suffix': suffix,
                             'filepath': os.path.relpath(f, a.repo),
                             'git_url': 'https://git.example.com/repo.git',
                             'declarations': [{'filepath': p, 'body': b} for p, b in d],
                             'relevant_snippets_from_changed_files':
                                 [{'filepath': mine[0], 'body': mine[1]}]}})
            if k % 4 == 3:
                line += 1

    th = [threading.Thread(target=developer, args=(i,)) for i in range(a.developers)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    rq = urllib.request.Request(a.url + '/metrics', headers={'Authorization': 'Bearer ' + tokens[0]})
    m = urllib.request.urlopen(rq).read().decode()
    keys = ('serval_prefix_cache_hit_rate', 'serval_prompt_tokens_total',
            'serval_prompt_tokens_cached_total')
    print(json.dumps({l.split(' ')[0]: float(l.split(' ')[1]) for l in m.split('\n')
                      if l.split(' ')[0] in keys}))


if __name__ == '__main__':
    main()
