#!/usr/bin/env python3
"""test_serve_tp_emu.py — `serval serve --backend cuda --gpus 0,1,2,3 --tp 2` end to end on the
CUDA emulator's 4 devices (SERVAL_EMU_DEVICES=4, NCCL emulated): the two replicas of two GPUs
answer OpenAI completions over HTTP and gRPC Complete calls with the greedy text of a one-GPU
server of the same model, both replicas serve, and /v1/health, /metrics and gRPC Health report
two replicas in rotation. Then a GPU of one replica is lost mid-run (the emulator's
SERVAL_EMU_FAIL_DEVICE) while its all-reduces take the one-shot p2p path: its peer's barrier
kernel is released (no 60 s wait), the requests sent to that replica fail until the router
takes it out (3 failed steps), /metrics and /v1/health say so, and every request after it is
answered, as one GPU answers it, by the other replica. ctest runs it in the emulator build
(cuda_check_emu_serve_tp).

Environment: SERVAL_BIN_DIR (the emulator build's bin/), SERVAL_EMU_MODEL (a tiny synthetic
model from serval-synth whose heads split in two), SERVAL_PY_STUBS (the gRPC Python stubs; the
gRPC part is skipped, saying so, without them or Debian's python3-grpcio). Exits 0 (pass),
1 (fail) or 77 (skipped: no serve in this build).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

TOKEN = "serve_tp_emu_token"
PROMPTS = [  # over 64 bytes each, starting differently: the router hashes the start
    "def fibonacci(n):\n    # the n-th number of the sequence, computed iteratively\n",
    "class Stack:\n    # a last-in first-out container backed by a Python list\n",
    "#include <stdio.h>\n/* prints every argument on its own line, numbered from one */\n",
    "function debounce(fn, ms) {\n  // calls fn once the calls have stopped for ms\n",
    "fn main() {\n    // reads numbers from standard input and prints their sum\n",
    "SELECT name, email FROM users\n-- only the accounts created during the last week\n",
    "package main\n\n// Server answers health checks on the port given in PORT\n",
    "import os\nimport sys\n\n# walks the tree under the first argument, printing sizes\n",
]
MAX_TOKENS = 8


def fail(msg, servers=()):
    print("FAIL:", msg)
    for s in servers:
        print("---- serve", " ".join(s["args"]))
        print(s["log_text"]()[-3000:])
    sys.exit(1)


def start(bin_dir, tmp, name, extra, env_extra=None):
    args = [os.path.join(bin_dir, "serval"), "serve", "--model", os.environ["SERVAL_EMU_MODEL"],
            "--backend", "cuda", "--kv-mb", "16", "--no-embeddings", "--token", TOKEN,
            "--data-dir", os.path.join(tmp, name), "--grpc-port", "0", "--http-port", "0",
            "--quiet"] + extra
    log_path = os.path.join(tmp, name + ".log")
    log = open(log_path, "w")
    env = dict(os.environ, SERVAL_EMU_DEVICES="4", **(env_extra or {}))
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    return {"name": name, "args": args[1:], "proc": proc, "log": log,
            "log_text": lambda: open(log_path, errors="replace").read()}


def wait_ready(s, servers, deadline_s=240):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        text = s["log_text"]()
        if "serval: ready" in text or '"ready"' in text:
            h = re.search(r"http listening on 127\.0\.0\.1:(\d+)", text)
            g = re.search(r"grpc listening on 127\.0\.0\.1:(\d+)", text)
            if h and g:
                s["http"], s["grpc"] = int(h.group(1)), int(g.group(1))
                return
        if s["proc"].poll() is not None:
            fail(f"serve {s['name']} exited with {s['proc'].returncode} before it was ready",
                 servers)
        time.sleep(0.1)
    fail(f"serve {s['name']} was not ready within {deadline_s} s", servers)


def http(s, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{s['http']}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + TOKEN,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def complete(s, prompt, servers):
    st, body = http(s, "POST", "/v1/completions",
                    {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0})
    if st != 200:
        fail(f"serve {s['name']}: completion answered {st}: {body}", servers)
    j = json.loads(body)
    return j["choices"][0]["text"], j.get("usage", {}).get("completion_tokens", -1)


def metric(s, name):
    st, body = http(s, "GET", "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def routed_total(s, rep):
    return sum(metric(s, f'serval_replica_requests_routed_total{{replica="{rep}",reason="{why}"}}')
               or 0 for why in ("affinity", "rebalanced", "least_loaded", "spilled"))


def gpu_lost_part(servers, lost, fail_file, answers):
    """GPU 3 (replica 1's second rank) fails once fail_file exists."""
    on1 = None
    for i, p in enumerate(PROMPTS):  # which prompts replica 1 serves
        before = routed_total(lost, 1)
        complete(lost, p, servers)
        if routed_total(lost, 1) > before:
            on1 = i
    if on1 is None:
        fail("no prompt went to replica 1", servers)
    open(fail_file, "w").close()
    t0 = time.monotonic()
    failed = 0
    for attempt in range(12):  # each request there is one failed step, until the third
        st, body = http(lost, "POST", "/v1/completions",
                        {"prompt": PROMPTS[on1], "max_tokens": MAX_TOKENS, "temperature": 0})
        if st == 200:
            break
        if st != 500 or "launch failure" not in body:
            fail(f"a request to the replica that lost its GPU: {st} {body}", servers)
        failed += 1
    if st != 200 or failed < 3:
        fail(f"{failed} requests failed, then {st}: the replica did not leave rotation after 3",
             servers)
    took = time.monotonic() - t0
    # GPU 2's barrier released by the group's abort, not by the emulator's 60 s give-up (a GPU
    # would wait on): each failed step ends at once, so 3 of them take far less than 60 s
    if "KN_SPIN_WAIT was not satisfied" in lost["log_text"]() or took > 50:
        fail(f"the peer of the lost GPU waited in the p2p barrier ({took:.1f} s to take the "
             "replica out)", servers)
    if metric(lost, 'serval_replica_in_rotation{replica="1"}') != 0 or \
            metric(lost, 'serval_replica_in_rotation{replica="0"}') != 1:
        fail("/metrics does not show replica 1 out of rotation and replica 0 in", servers)
    st, body = http(lost, "GET", "/v1/health")
    reps = json.loads(body).get("replicas") if st == 200 else None
    if not reps or reps[1].get("in_rotation") or \
            "failed 3 steps in a row" not in reps[1].get("down_reason", ""):
        fail(f"/v1/health after the GPU was lost: {st} {body}", servers)
    for i, p in enumerate(PROMPTS):
        text, _ = complete(lost, p, servers)
        if text != answers[i]:
            fail(f"prompt {i} after the GPU was lost: {text!r}, one GPU {answers[i]!r}", servers)
    print(f"ok: GPU 3 lost (p2p all-reduce): {failed} requests to replica 1 failed, then it "
          f"left rotation after {took:.1f} s ('{reps[1]['down_reason']}'); all {len(PROMPTS)} "
          "prompts answered by replica 0 as one GPU answers them")


def grpc_part(servers, tp, one):
    stubs = os.environ.get("SERVAL_PY_STUBS", "")
    try:
        sys.path.insert(0, stubs)
        import grpc  # noqa: E402
        import serval_pb2  # noqa: E402
        import serval_pb2_grpc  # noqa: E402
    except ImportError as e:
        print(f"note: gRPC part skipped ({e}; stubs from {stubs or 'nowhere'})")
        return
    md = [("authorization", "Bearer " + TOKEN)]
    texts = {}
    for s in (tp, one):
        with grpc.insecure_channel(f"127.0.0.1:{s['grpc']}") as ch:
            stub = serval_pb2_grpc.ServalStub(ch)
            h = stub.Health(serval_pb2.HealthRequest(), metadata=md, timeout=60)
            if s is tp:
                if len(h.replicas) != 2 or not all(r.in_rotation for r in h.replicas):
                    fail(f"gRPC Health of the --tp 2 server: {h}", servers)
            r = stub.Complete(serval_pb2.CompleteRequest(prompt=PROMPTS[0], max_tokens=MAX_TOKENS,
                                                         ignore_eos=True),
                              metadata=md, timeout=120)
            texts[s["name"]] = r.text
    if texts["tp"] != texts["one"]:
        fail(f"gRPC: two GPUs said {texts['tp']!r}, one GPU {texts['one']!r}", servers)
    if not texts["tp"]:
        fail("gRPC: empty completion with ignore_eos", servers)
    print(f"ok: gRPC Complete equal on both ({texts['tp']!r}); Health lists 2 replicas")


def main():
    bin_dir = os.environ.get("SERVAL_BIN_DIR", "")
    serval = os.path.join(bin_dir, "serval")
    if not os.access(serval, os.X_OK):
        print(f"FAIL: no {serval}")
        return 1
    helptext = subprocess.run([serval, "--help"], capture_output=True, text=True).stdout + \
        subprocess.run([serval, "--help"], capture_output=True, text=True).stderr
    if "serve" not in helptext:
        print("SKIP: this serval has no `serve` (an engine-only build)")
        return 77
    servers = []
    with tempfile.TemporaryDirectory(prefix="serval-tp-emu.") as tmp:
        try:
            tp = start(bin_dir, tmp, "tp", ["--gpus", "0,1,2,3", "--tp", "2"])
            one = start(bin_dir, tmp, "one", [])
            # Its all-reduces take the one-shot p2p path (decode-sized messages, peer access
            # between the emulated GPUs): GPU 3's loss must release GPU 2's barrier kernel.
            fail_file = os.path.join(tmp, "gpu3-lost")
            lost = start(bin_dir, tmp, "lost", ["--gpus", "0,1,2,3", "--tp", "2"],
                         {"SERVAL_EMU_FAIL_DEVICE": "3", "SERVAL_EMU_FAIL_FILE": fail_file})
            servers = [tp, one, lost]
            for s in servers:
                wait_ready(s, servers)
            if "split over 2 ranks" not in tp["log_text"]() and '"tp":2' not in tp["log_text"]():
                fail("the --tp 2 server's ready line does not say it is split", servers)
            generated = 0
            answers = []
            for i, p in enumerate(PROMPTS):
                a, na = complete(tp, p, servers)
                b, nb = complete(one, p, servers)
                if a != b:
                    fail(f"prompt {i}: two replicas of two GPUs said {a!r}, one GPU {b!r}",
                         servers)
                generated += na
                answers.append(b)
            if generated <= 0:
                fail("every completion was empty: nothing was compared", servers)
            st, body = http(tp, "GET", "/v1/health")
            reps = json.loads(body).get("replicas") if st == 200 else None
            if not reps or len(reps) != 2:
                fail(f"/v1/health of the --tp 2 server: {st} {body}", servers)
            for r in reps:
                if not r.get("in_rotation") or r.get("requests_finished", 0) <= 0:
                    fail(f"replica {r.get('replica')} in /v1/health: {r}", servers)
            routed = []
            for rep in (0, 1):
                routed.append(routed_total(tp, rep))
                if metric(tp, f'serval_replica_in_rotation{{replica="{rep}"}}') != 1:
                    fail(f"/metrics: replica {rep} not in rotation", servers)
            if sum(routed) != len(PROMPTS):
                fail(f"/metrics routed {routed}, not {len(PROMPTS)} requests", servers)
            print(f"ok: {len(PROMPTS)} HTTP completions equal to one GPU's ({generated} tokens); "
                  f"replicas served {routed[0]:.0f} and {routed[1]:.0f}, both in rotation")
            grpc_part(servers, tp, one)
            gpu_lost_part(servers, lost, fail_file, answers)
        finally:
            for s in servers:
                s["proc"].terminate()
            for s in servers:
                try:
                    s["proc"].wait(timeout=30)
                except subprocess.TimeoutExpired:
                    s["proc"].kill()
                    s["proc"].wait()
                s["log"].close()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
