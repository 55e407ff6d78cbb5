#!/bin/sh
# status_page.sh — the status page measured for issue 17: a `serval serve` on port 18973 gets 6
# completions (one streamed) and 4 /v1/events, then GET / is sized and timed (time to first
# byte, 5 requests) and drawn 3 times by headless Chromium, printing the page's own data-render-ms
# (navigation start to the end of its script). Usage: sh bench/status_page.sh build/bin/serval
set -e
B=$1; P=18973; D=$(mktemp -d)
$B serve --http-port $P --grpc-port 0 --token t --data-dir $D --threads 2 --quiet --no-embeddings 2>$D/log &
SP=$!
for i in $(seq 1 200); do curl -s localhost:$P/v1/health | grep -q ok && break; sleep 0.1; done
for i in 1 2 3 4 5; do curl -s -H 'authorization: Bearer t' -H 'content-type: application/json' -d "{\"prompt\":\"def f$i(x):\",\"max_tokens\":3}" localhost:$P/v1/completions >/dev/null; done
curl -s -H 'authorization: Bearer t' -H 'content-type: application/json' -d '{"prompt":"def g(x):","max_tokens":3,"stream":true}' localhost:$P/v1/completions >/dev/null
for t in view view select view; do curl -s -H 'authorization: Bearer t' -H 'content-type: application/json' -d "{\"type\":\"$t\",\"completion_id\":\"c\",\"choice_index\":0}" localhost:$P/v1/events >/dev/null; done
sleep 1.1
echo "page bytes: $(curl -s localhost:$P/ | wc -c)  json bytes: $(curl -s localhost:$P/v1/status | wc -c)"
for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_starttransfer} ' localhost:$P/; done; echo "(s to first byte)"
for i in 1 2 3; do
  prof=$(mktemp -d)
  /usr/bin/time -f "chromium %e s" chromium --headless --no-sandbox --disable-gpu --user-data-dir=$prof --virtual-time-budget=2000 --dump-dom http://127.0.0.1:$P/ 2>/tmp/f_meas/chr.err | grep -o 'data-render-ms="[0-9.]*"'; tail -1 /tmp/f_meas/chr.err
  rm -rf $prof
done
kill $SP; wait $SP || true
