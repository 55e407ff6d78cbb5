# startup_to_ready.py — start-up to ready for issue 17: execs `serval serve` on MODEL, polls GET /v1/health
# every 5 ms, and prints when the first answer came (503 "starting"), when it turned 200, serve's own
# "ready" event (ready_ms, load_ms) and the first 1-token completion. Stdlib only.
# Usage: python3 bench/startup_to_ready.py build/bin/serval MODEL.gguf HTTP_PORT
import json, os, subprocess, sys, tempfile, time, urllib.request, urllib.error
binp, model, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = tempfile.mkdtemp()
t0 = time.monotonic()
p = subprocess.Popen([binp, "serve", "--model", model, "--http-port", str(port), "--grpc-port", "0",
                      "--token", "t", "--data-dir", d, "--threads", "2", "--quiet", "--no-embeddings",
                      "--log-format", "json"], stderr=open(d + "/log", "w"))
first = ready = None
while time.monotonic() - t0 < 60:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/v1/health" % port, timeout=2) as r:
            if r.status == 200:
                ready = time.monotonic() - t0
                if first is None: first = ready
                break
    except urllib.error.HTTPError as e:
        if first is None: first = time.monotonic() - t0
    except Exception:
        pass
    time.sleep(0.005)
req = urllib.request.Request("http://127.0.0.1:%d/v1/completions" % port,
      data=b'{"prompt":"def add(a, b):","max_tokens":1}', headers={"authorization": "Bearer t", "content-type": "application/json"})
t1 = time.monotonic(); urllib.request.urlopen(req, timeout=60).read(); comp = time.monotonic() - t1
p.terminate(); p.wait()
ev = [json.loads(l) for l in open(d + "/log") if l.startswith("{")]
rd = [e for e in ev if e.get("event") == "ready"][0]
print("first_answer_ms %.0f health200_ms %.0f serve_ready_ms %d load_ms %d first_completion_s %.2f" % (first * 1e3, ready * 1e3, rd["ready_ms"], rd["load_ms"], comp))
