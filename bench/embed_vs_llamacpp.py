#!/usr/bin/env python3
# embed_vs_llamacpp.py — the peer for bench_embed: llama.cpp (llama-cpp-python) embedding the same ~512-character code chunks with the same GGUF, timed in wall and CPU seconds.
"""Dev-time only. PYTHONPATH=/work/ref/lcp-avx2 python3 bench/embed_vs_llamacpp.py
models/all-MiniLM-L6-v2.f16.gguf [--threads 2] [--seconds 4]. Chunks are bench_embed.c's
make_chunk(i), one text per llama_decode (llama.cpp's embed() runs a list as one batch too:
--batch N passes N texts per call). CPU time is not comparable for llama.cpp: ggml's threads
spin while they wait, so compare wall time on the same (shared) machine, run back to back."""
import argparse
import time


def chunk(i):
    return ("static int parse_header_%d(const uint8_t *p, size_t n, struct header *out)\n"
            "{\n    if (n < %d) return -EINVAL; /* too short for the fixed part */\n"
            "    out->magic = read_u32(p);\n    out->version = read_u16(p + 4);\n"
            "    out->flags = read_u16(p + 6) & 0x%x;\n"
            "    for (size_t i = 0; i < out->n_fields && i < MAX_FIELDS; i++) {\n"
            "        out->fields[i].offset = read_u32(p + 8 + 8 * i);\n"
            "        out->fields[i].length = read_u32(p + 12 + 8 * i);\n    }\n"
            "    return out->magic == MAGIC_%d ? 0 : -EPROTO; // checked by the caller\n}\n"
            % (i, 8 + i % 7, 0xff00 | (i & 0xff), i % 5))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    import llama_cpp
    from llama_cpp import Llama
    default_params = llama_cpp.llama_model_default_params

    def no_extra_bufts():
        p = default_params()
        p.use_extra_bufts = False
        return p
    llama_cpp.llama_model_default_params = no_extra_bufts
    llama_cpp.llama.llama_cpp.llama_model_default_params = no_extra_bufts
    # Context and batch sized to the work (512 per text, the model's positions), as a
    # deployment would; larger ones only slow llama.cpp down.
    n_ctx = 512 * a.batch
    llm = Llama(model_path=a.model, embedding=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    texts = [chunk(i) for i in range(a.batch)]
    llm.embed(texts)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < a.seconds:
        llm.embed(texts)
        n += len(texts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    ntok = len(llm.tokenize(texts[0].encode()))
    print("llama.cpp batch %d: %.1f embeddings/s wall (%d tokens each); %.1f ms CPU per "
          "embedding = %.1f embeddings/s per idle core" % (a.batch, n / wall, ntok,
                                                           cpu / n * 1e3, n / cpu))


if __name__ == "__main__":
    main()
