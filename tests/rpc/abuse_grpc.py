#!/usr/bin/python3
# abuse_grpc.py — the gRPC attacks of tests/rpc/test_abuse.c (Debian's python3-grpcio, stubs
# generated from proto/serval.proto). Prints one summary line ("ANSWER: ...") for the report's
# table and exits 0 when the server behaved, 1 when it did not.
#   idle   N calls opened and never sent their message (held HOLD seconds); meanwhile a normal
#          Complete must be served within 10 s
#   big    4.5 MiB prompts (over the 4 MiB message limit) and 3.9 MiB prompts (under it): each
#          refused with a non-OK status within 3 s (no tokenizing megabytes of prompt)
#   probe  one normal Complete (max_tokens 4) within 10 s
import argparse
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["idle", "big", "probe"])
    ap.add_argument("--target", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--hold", type=float, default=15.0)
    ap.add_argument("--probe-token", help="another user's token for the probe (default --token)")
    a = ap.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc
    import serval_pb2 as pb
    import serval_pb2_grpc as pbg

    md = [("authorization", "Bearer " + a.token)]
    probe_md = [("authorization", "Bearer " + (a.probe_token or a.token))]
    opts = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 64 << 20)]

    def channel():
        ch = grpc.insecure_channel(a.target, options=opts)
        grpc.channel_ready_future(ch).result(timeout=10)
        return ch

    def probe(timeout=10.0):
        t0 = time.monotonic()
        try:
            ch = channel()
            r = pbg.ServalStub(ch).Complete(pb.CompleteRequest(prompt="def add(a, b):", max_tokens=4),
                                            metadata=probe_md, timeout=timeout)
            ch.close()
            return True, time.monotonic() - t0, "OK %d tokens" % r.usage.output_tokens
        except grpc.RpcError as e:
            return False, time.monotonic() - t0, "%s %s" % (e.code().name, e.details())
        except grpc.FutureTimeoutError:
            return False, time.monotonic() - t0, "no connection in 10 s"

    if a.mode == "probe":
        ok, dt, what = probe()
        print("ANSWER: probe %s in %.2f s" % (what, dt))
        return 0 if ok else 1

    if a.mode == "big":
        ch = channel()
        st = pbg.ServalStub(ch)
        bad = []
        lines = []
        for size, n in ((4 * 1024 * 1024 + 512 * 1024, 4), (4 * 1024 * 1024 - 100 * 1024, 2)):
            prompt = "x = 1\n" * (size // 6)
            worst, codes = 0.0, {}
            for _ in range(n):
                t0 = time.monotonic()
                try:
                    st.Complete(pb.CompleteRequest(prompt=prompt, max_tokens=1), metadata=md,
                                timeout=20)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                dt = time.monotonic() - t0
                worst = max(worst, dt)
                codes[code] = codes.get(code, 0) + 1
                if code == "OK" or dt > 3.0:
                    bad.append("%.1f MiB: %s after %.1f s" % (size / 1048576, code, dt))
            lines.append("%d x %.1f MiB prompt: %s (slowest %.2f s)" % (
                n, size / 1048576, ", ".join("%s %d" % kv for kv in sorted(codes.items())), worst))
        ch.close()
        print("ANSWER: " + "; ".join(lines) + ("; FAILED: " + ", ".join(bad) if bad else ""))
        return 1 if bad else 0

    # idle: N calls across 8 connections, each opened (headers sent) with a request iterator
    # that never yields, so the server waits for a message that never comes.
    stop = threading.Event()

    def never():
        stop.wait()
        return
        yield  # a generator that yields nothing

    chans = [channel() for _ in range(8)]
    futs = []
    for i in range(a.n):
        mc = chans[i % 8].stream_unary("/serval.v1.Serval/Complete",
                                       request_serializer=pb.CompleteRequest.SerializeToString,
                                       response_deserializer=pb.CompleteResponse.FromString)
        futs.append(mc.future(never(), metadata=md, timeout=a.hold + 30))
    time.sleep(2.0)
    ok, dt, what = probe()
    rest = a.hold - 2.0 - dt
    if rest > 0:
        time.sleep(rest)
    ended = sum(1 for f in futs if f.done())
    codes = {}
    for f in futs:
        if f.done():
            try:
                c = f.exception().code().name if f.exception() else "OK"
            except grpc.FutureCancelledError:
                c = "CANCELLED"
            codes[c] = codes.get(c, 0) + 1
    stop.set()
    for f in futs:
        f.cancel()
    for ch in chans:
        ch.close()
    print("ANSWER: %d idle calls: another user's Complete during the attack %s after %.2f s; after %.0f s the server "
          "had ended %d of them (%s)" % (a.n, what, dt, a.hold, ended,
                                         ", ".join("%s %d" % kv for kv in sorted(codes.items()))
                                         or "none"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
