#!/usr/bin/env python3
"""tp_predict.py — predicted decode step time, speed-up and per-GPU efficiency of tensor
parallelism (model/shard.h's split) on 2/4/8 H100s for a 1.5B and a 7B model, from the bytes a
step reads per GPU and the all-reduces it makes, and the same GPUs used as replicas instead.

A roofline, not a measurement: step time per GPU =
    (its weight bytes + its KV bytes) / HBM bandwidth
  + (2 per layer + 1 embedding) all-reduces of B x n_embd bf16 values
  + 1 all-gather of the sampled rows' logits (B x n_vocab / n fp32 per rank)
where a collective of m bytes costs alpha + 2 (n-1)/n x m / bus bandwidth. KV heads split
over ranks only down to one per rank (fewer KV heads than ranks: replicated, so each rank
still reads one head's K/V). Kernel-launch gaps and the per-step fixed cost do not shrink with
n and are left out: they make small models' TP worse than shown.

Usage: python3 bench/tp_predict.py   (no arguments; prints the markdown tables)
"""

HBM = 3.0e12          # bytes/s: H100 SXM device-to-device copy measured (shared/reference/performance.md)
BUS = 360e9           # bytes/s: NCCL all-reduce bus bandwidth on NVLink 4 / NVSwitch, large
                      # messages (assumed: 900 GB/s NVLink is the spec, ~360-480 GB/s reached)
ALPHA = {"nccl": 10e-6, "p2p": 4e-6}  # s per collective at decode sizes (assumed: NCCL LL on
                      # NVSwitch ~8-15 us; a one-shot peer-to-peer kernel ~3-5 us)

MODELS = {
    # name: layers, n_embd, heads, kv heads, head dim, ffn, vocab, tied head
    "Qwen2.5-Coder-1.5B": (28, 1536, 12, 2, 128, 8960, 151936, True),
    "CodeLlama-7B": (32, 4096, 32, 32, 128, 11008, 32016, False),
}


def weights(m):
    """bf16 bytes a decode step reads: layers + head (one embedding row is negligible)."""
    L, d, h, kv, hd, ff, V, tied = m
    layer = d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * ff
    return 2 * (L * layer + V * d)


def kv_bytes_per_token(m):
    L, d, h, kv, hd, ff, V, tied = m
    return 2 * 2 * L * kv * hd  # K and V, bf16


def step_time(m, n, batch, ctx, alpha):
    L, d, h, kv, hd, ff, V, tied = m
    w = weights(m) / n
    kv_frac = max(1.0 / n, 1.0 / kv)
    kv_read = batch * ctx * kv_bytes_per_token(m) * kv_frac
    t = (w + kv_read) / HBM
    if n > 1:
        ar = alpha + 2 * (n - 1) / n * batch * d * 2 / BUS
        gather = alpha + (n - 1) / n * batch * V * 4 / BUS
        t += (2 * L + 1) * ar + gather
    return t


def allowed(m, n):
    L, d, h, kv, hd, ff, V, tied = m
    return h % n == 0 and (kv % n == 0 or n % kv == 0)


def main():
    for batch, ctx in ((1, 2048), (32, 2048)):
        print(f"\nbatch {batch}, {ctx}-token context (decode step; bf16 weights and KV)\n")
        print("| model | GPUs | bytes/step/GPU | all-reduce msg | step NCCL | speed-up | eff./GPU "
              "| step p2p | speed-up | eff./GPU | n replicas: tok/s vs TP (NCCL) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, m in MODELS.items():
            t1 = step_time(m, 1, batch, ctx, 0)
            for n in (1, 2, 4, 8):
                if not allowed(m, n):
                    print(f"| {name} | {n} | — | — | not a degree ({m[2]} heads) | | | | | | |")
                    continue
                kv_frac = max(1.0 / n, 1.0 / m[3])
                per_gpu = weights(m) / n + batch * ctx * kv_bytes_per_token(m) * kv_frac
                msg = batch * m[1] * 2
                tn = step_time(m, n, batch, ctx, ALPHA["nccl"])
                tp2p = step_time(m, n, batch, ctx, ALPHA["p2p"])
                # n replicas share the same total load: each runs batch / n sequences (at
                # least 1); tokens/s over all of them against TP's batch / tn.
                b_rep = max(batch // n, 1)
                rep_tps = n * b_rep / step_time(m, 1, b_rep, ctx, 0)
                tp_tps = batch / tn
                print(f"| {name} | {n} | {per_gpu / 1e9:.2f} GB | {msg / 1024:.0f} KiB | "
                      f"{tn * 1e3:.3f} ms | {t1 / tn:.2f}x | {t1 / tn / n:.0%} | "
                      f"{tp2p * 1e3:.3f} ms | {t1 / tp2p:.2f}x | {t1 / tp2p / n:.0%} | "
                      f"{rep_tps:,.0f} vs {tp_tps:,.0f} |")


if __name__ == "__main__":
    main()
