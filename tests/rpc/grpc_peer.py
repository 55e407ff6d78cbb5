#!/usr/bin/python3
# grpc_peer.py — a real peer client (Debian's python3-grpcio, stubs generated from
# proto/serval.proto at build time) calling every serval.v1 RPC; exits non-zero on any surprise.
import argparse
import sys
import time


def tls_checks(st, pb, md):
    h = st.Health(pb.HealthRequest(), timeout=10)
    assert h.status == "SERVING" and not h.HasField("engine"), h
    h = st.Health(pb.HealthRequest(), metadata=md, timeout=10)
    assert h.engine.kv_blocks_total > 0, h
    r = st.Complete(pb.CompleteRequest(prompt="def f(x):", max_tokens=2), metadata=md, timeout=60)
    assert r.usage.output_tokens >= 1, r
    print("peer: tls ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--stubs", required=True, help="directory with serval_pb2*.py")
    ap.add_argument("--tls-root", help="PEM certificate to trust: connect with TLS, run a few RPCs")
    a = ap.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc
    import serval_pb2 as pb
    import serval_pb2_grpc as pbg

    if a.tls_root:
        with open(a.tls_root, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        ch = grpc.secure_channel(a.target, creds)
    else:
        ch = grpc.insecure_channel(a.target)
    grpc.channel_ready_future(ch).result(timeout=20)
    st = pbg.ServalStub(ch)
    md = [("authorization", "Bearer " + a.token)]
    if a.tls_root:
        tls_checks(st, pb, md)
        return

    def expect_code(code, fn, *args, **kw):
        try:
            fn(*args, **kw)
        except grpc.RpcError as e:
            assert e.code() == code, f"{fn}: {e.code()} {e.details()}, wanted {code}"
            return e.details()
        raise AssertionError(f"{fn} succeeded, wanted {code}")

    h = st.Health(pb.HealthRequest(), timeout=10)  # no token: liveness only
    assert h.status == "SERVING" and not h.HasField("engine") and not h.model, h
    h = st.Health(pb.HealthRequest(), metadata=md, timeout=10)
    assert h.status == "SERVING" and h.engine.kv_blocks_total > 0, h

    models = st.ListModels(pb.ListModelsRequest(), metadata=md, timeout=10)
    assert len(models.models) == 1 and models.models[0].id == h.model, models

    req = pb.CompleteRequest(prompt="def fibonacci(n):", max_tokens=8)
    r = st.Complete(req, metadata=md, timeout=60)
    assert r.text and r.usage.output_tokens >= 1 and r.usage.prompt_tokens > 0, r
    assert r.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH), r

    chunks = list(st.CompleteStream(req, metadata=md, timeout=60))
    assert "".join(c.text for c in chunks) == r.text, (chunks, r.text)
    assert chunks[-1].finish_reason == r.finish_reason and len({c.id for c in chunks}) == 1

    seg = pb.CompleteRequest(segments=pb.Segments(prefix="def add(a, b):\n    return",
                                                  suffix="\n", language="python"),
                             max_tokens=4)
    assert st.Complete(seg, metadata=md, timeout=60).text

    chat = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="Hello!")], max_tokens=6)
    text = "".join(c.text for c in st.Chat(chat, metadata=md, timeout=60))
    assert text, "Chat produced nothing"

    # The default embedding model (tools/setup.sh converts all-MiniLM-L6-v2).
    emb = st.Embed(pb.EmbedRequest(inputs=["x", "def add(a, b):"]), metadata=md, timeout=30)
    assert len(emb.embeddings) == 2 and len(emb.embeddings[1].values) == 384, emb
    assert abs(sum(v * v for v in emb.embeddings[1].values) - 1) < 1e-4
    expect_code(grpc.StatusCode.UNIMPLEMENTED, st.Search, pb.SearchRequest(query="x"),
                metadata=md, timeout=10)
    expect_code(grpc.StatusCode.UNAUTHENTICATED, st.Complete, req, timeout=10)
    expect_code(grpc.StatusCode.UNAUTHENTICATED, st.Complete, req,
                metadata=[("authorization", "Bearer nope")], timeout=10)
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, st.Complete,
                pb.CompleteRequest(prompt="x", sampling=pb.SamplingParams(top_p=2.0)),
                metadata=md, timeout=10)
    raw = ch.unary_unary("/serval.v1.Serval/Complete")  # bytes in, bytes out
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, raw, b"\x0a\xff\xff\xff\xff\x0f", metadata=md,
                timeout=10)

    # Deadline and cancellation both end the engine request.
    long_req = pb.CompleteRequest(prompt="Tell me a story.", max_tokens=2000, ignore_eos=True)
    expect_code(grpc.StatusCode.DEADLINE_EXCEEDED, st.Complete, long_req, metadata=md,
                timeout=0.5)
    it = st.CompleteStream(long_req, metadata=md, timeout=60)
    next(it)
    next(it)
    it.cancel()
    for _ in range(100):
        e = st.Health(pb.HealthRequest(), metadata=md, timeout=10).engine
        if e.running == 0 and e.kv_blocks_used == 0:
            break
        time.sleep(0.05)
    assert e.running == 0 and e.kv_blocks_used == 0, e
    assert e.requests_cancelled >= 2, e
    print("peer: all RPCs ok")


if __name__ == "__main__":
    main()
