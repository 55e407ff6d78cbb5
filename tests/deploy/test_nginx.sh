#!/usr/bin/env bash
# tests/deploy/test_nginx.sh — docs/nginx/serval.conf, as shipped, in front of two real
# `serval serve` processes on loopback: HTTP and gRPC answered through nginx, one file's
# requests hashed to one backend and different files spread over both, then one backend killed
# mid-run and every request after it answered by the other. nginx runs as the current user with
# a temporary prefix; ports are picked by binding port 0. Exits 77 (ctest: skipped) without
# nginx, curl or python3-grpcio. Environment: SERVAL_BIN_DIR (build/bin), SERVAL_PY_STUBS (build/python),
# SERVAL_SOURCE_DIR (the checkout).
set -euo pipefail

src=${SERVAL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${SERVAL_BIN_DIR:-$src/build/bin}
stubs=${SERVAL_PY_STUBS:-$src/build/python}
nginx=$(command -v nginx || true)
[ -z "$nginx" ] && [ -x /usr/sbin/nginx ] && nginx=/usr/sbin/nginx
if [ -z "$nginx" ]; then
  echo "SKIP: nginx is not installed (Debian: apt-get install nginx; tools/setup.sh does)"
  exit 77
fi
command -v curl >/dev/null || { echo "SKIP: curl is not installed (apt-get install curl)"; exit 77; }
/usr/bin/python3 -c "import grpc" 2>/dev/null ||
  { echo "SKIP: Debian's python3-grpcio is not installed (tools/setup.sh installs it)"; exit 77; }
[ -x "$bin/serval" ] || { echo "FAIL: no $bin/serval (build the serval target)"; exit 1; }
[ -f "$stubs/serval_pb2_grpc.py" ] || { echo "FAIL: no Python stubs in $stubs (build serval_py_stubs)"; exit 1; }

tmp=$(mktemp -d /tmp/serval-nginx.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${keep:-0}" = 1 ]; then echo "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.log; do echo "---- $f"; tail -n 20 "$f"; done
  keep=1
  exit 1
}

# Free loopback ports: bound to port 0, then released for nginx to take.
read -r http_port grpc_port < <(/usr/bin/python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

token=nginx_test_token
# Two backends, one thread each (the two cores are shared), ports chosen by the servers.
start_backend() { # name
  "$bin/serval" serve --grpc-port 0 --http-port 0 --token "$token" --data-dir "$tmp/$1" \
    --threads 1 --no-embeddings >"$tmp/$1.log" 2>&1 &
  pids+=($!)
  eval "${1}_pid=$!"
}
start_backend a
start_backend b
wait_ready() { # name -> "<http port> <grpc port>" once its ready line is out (60 s at most)
  local log=$tmp/$1.log
  for _ in $(seq 600); do
    if grep -q "serval: ready" "$log"; then
      local h g
      h=$(sed -n 's/.*http listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
      g=$(sed -n 's/.*grpc listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
      echo "$h $g"
      return 0
    fi
    sleep 0.1
  done
  fail "backend $1 never said ready"
}
read -r a_http a_grpc < <(wait_ready a)
read -r b_http b_grpc < <(wait_ready b)
[ -n "$a_http" ] && [ -n "$b_http" ] || fail "no backend ports"

# The shipped config with this run's addresses and ports.
mkdir -p "$tmp/nginx/logs"
sed -e "s/10\.0\.0\.11:8080/127.0.0.1:$a_http/; s/10\.0\.0\.12:8080/127.0.0.1:$b_http/" \
    -e "s/10\.0\.0\.11:50051/127.0.0.1:$a_grpc/; s/10\.0\.0\.12:50051/127.0.0.1:$b_grpc/" \
    -e "s/listen 8080;/listen 127.0.0.1:$http_port;/; s/listen 50051 http2;/listen 127.0.0.1:$grpc_port http2;/" \
    "$src/docs/nginx/serval.conf" >"$tmp/nginx/serval.conf"
for a in "$a_http" "$b_http" "$a_grpc" "$b_grpc" "$http_port" "$grpc_port"; do
  grep -q ":$a" "$tmp/nginx/serval.conf" || fail "docs/nginx/serval.conf no longer has the lines this test rewrites"
done
user_line=""
[ "$(id -u)" = 0 ] && user_line="user $(id -un) $(id -gn);"
cat >"$tmp/nginx/nginx.conf" <<EOF
$user_line
daemon off;
master_process on;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx.log warn;
events { worker_connections 256; }
http {
    access_log $tmp/nginx/logs/access.log;
    client_body_temp_path $tmp/nginx/client_body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    include $tmp/nginx/serval.conf;
}
EOF
"$nginx" -t -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx.log" >"$tmp/nginx-t.log" 2>&1 ||
  fail "nginx -t refuses the config: $(cat "$tmp/nginx-t.log")"
"$nginx" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx.log" &
pids+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$http_port/v1/health" && break
  sleep 0.1
done

# Which backend answered: each one's count of finished requests (/metrics, read directly).
completions_of() { # backend http port -> requests it finished so far
  curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$1/metrics" |
    sed -n 's/^serval_request_total_seconds_count \([0-9]*\)$/\1/p'
}
# A Tabby completion of a file through nginx; prints the HTTP status.
tabby() { # filepath i
  curl -s -o "$tmp/last.json" -w '%{http_code}' -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' "http://127.0.0.1:$http_port/v1/completions" \
    -d "{\"language\":\"python\",\"segments\":{\"prefix\":\"def f$2(x):\\n    return\",\"filepath\":\"$1\",\"git_url\":\"https://example.com/app.git\"}}"
}

# A one-token OpenAI completion whose body carries a repository and file (the map reads any
# "git_url" and "filepath" keys; a cheap stand-in for Tabby's segments); prints the status.
short() { # filepath
  curl -s -o "$tmp/last.json" -w '%{http_code}' -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' "http://127.0.0.1:$http_port/v1/completions" \
    -d "{\"prompt\":\"def f(x):\",\"max_tokens\":1,\"filepath\":\"$1\",\"git_url\":\"https://example.com/app.git\"}"
}

# 1. One file's requests meet on one backend; sixteen files spread over both (all on one:
#    2^-15 with an even ring).
a0=$(completions_of "$a_http"); b0=$(completions_of "$b_http")
for i in 1 2 3; do
  s=$(tabby src/one.py "$i"); [ "$s" = 200 ] || fail "completion through nginx: $s $(cat "$tmp/last.json")"
done
a1=$(completions_of "$a_http"); b1=$(completions_of "$b_http")
if ! { [ $((a1 - a0)) = 3 ] && [ "$b1" = "$b0" ]; } && ! { [ $((b1 - b0)) = 3 ] && [ "$a1" = "$a0" ]; }; then
  fail "one file's 3 requests split over the backends: a +$((a1 - a0)), b +$((b1 - b0))"
fi
for i in $(seq 1 16); do
  s=$(short "src/mod$i.py"); [ "$s" = 200 ] || fail "completion $i: $s $(cat "$tmp/last.json")"
done
a2=$(completions_of "$a_http"); b2=$(completions_of "$b_http")
[ $((a2 - a1)) -gt 0 ] && [ $((b2 - b1)) -gt 0 ] ||
  fail "16 files all went to one backend: a +$((a2 - a1)), b +$((b2 - b1))"
echo "ok: one file on one backend; 16 files: a +$((a2 - a1)), b +$((b2 - b1))"

# 2. gRPC through nginx: Health and a completion.
grpc_call() { # -> "OK <text>" or the error
  PYTHONPATH="$stubs" timeout 60 /usr/bin/python3 - "$grpc_port" "$token" <<'EOF'
import sys, grpc, serval_pb2, serval_pb2_grpc
port, token = sys.argv[1], sys.argv[2]
md = [("authorization", "Bearer " + token), ("x-serval-session", "grpc-test")]
with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
    stub = serval_pb2_grpc.ServalStub(ch)
    try:
        h = stub.Health(serval_pb2.HealthRequest(), metadata=md, timeout=30)
        r = stub.Complete(serval_pb2.CompleteRequest(prompt="def add(a, b):\n    return", max_tokens=8),
                          metadata=md, timeout=30)
        print("OK", h.status, repr(r.text))
    except grpc.RpcError as e:
        print("ERR", e.code(), e.details())
EOF
}
out=$(grpc_call || true)
case "$out" in "OK SERVING"*) echo "ok: grpc through nginx: $out" ;; *) fail "gRPC through nginx: $out" ;; esac

# 3. Kill the backend that served src/one.py mid-run: every request after it succeeds.
if [ $((a1 - a0)) = 3 ]; then victim=$a_pid; name=a; else victim=$b_pid; name=b; fi
for i in $(seq 1 4); do short "src/burst$i.py" >/dev/null & done
kill -9 "$victim"
wait "$victim" 2>/dev/null || true
wait_jobs() { for j in $(jobs -p); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j" || true ;; esac; done; }
wait_jobs
for i in $(seq 1 3); do
  s=$(tabby src/one.py "$((i + 10))")
  [ "$s" = 200 ] || fail "request $i after backend $name died: HTTP $s $(cat "$tmp/last.json")"
done
for i in $(seq 1 8); do
  s=$(short "src/after$i.py")
  [ "$s" = 200 ] || fail "request $i (another file) after backend $name died: HTTP $s"
done
for i in 1 2; do
  out=$(grpc_call || true)
  case "$out" in "OK SERVING"*) ;; *) fail "gRPC call $i after backend $name died: $out" ;; esac
done
echo "ok: backend $name killed; 11 HTTP and 2 gRPC requests after it all answered"
echo "PASS"
