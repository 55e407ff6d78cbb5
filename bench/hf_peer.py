#!/usr/bin/env python3
"""bench/hf_peer.py — the peer for GPU engine benchmarks: HF Transformers `generate` on the same
shapes as a Serval synthetic preset (random weights, bf16, CUDA), printing prefill and decode
tokens/s per batch size. Runs on the GPU machine (PyTorch + Transformers installed there).

  python3 bench/hf_peer.py --preset smollm2-135m --batches 1,8,64,256 --prompt 128 --output 128
"""
import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# Same shapes as tools/synth.c's presets (vocab from SmolLM2: 49152 tokens).
PRESETS = {
    "smollm2-135m": dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, rope_theta=100000.0,
                         tie_word_embeddings=True),
    "llama-1b": dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=32,
                     num_key_value_heads=8, intermediate_size=8192, rope_theta=500000.0,
                     tie_word_embeddings=True),
}


def timed_generate(model, ids, new_tokens):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="smollm2-135m", choices=sorted(PRESETS))
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--output", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=49152)
    args = ap.parse_args()

    cfg = LlamaConfig(vocab_size=args.vocab, max_position_embeddings=8192, rms_norm_eps=1e-5,
                      torch_dtype=torch.bfloat16, **PRESETS[args.preset])
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg).to(dtype=torch.bfloat16, device="cuda").eval()
    print(f"hf_peer: {args.preset}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
          f"params, torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    for b in [int(x) for x in args.batches.split(",")]:
        ids = torch.randint(300, args.vocab - 100, (b, args.prompt), device="cuda")
        timed_generate(model, ids, 2)  # warm-up
        t1 = timed_generate(model, ids, 1)  # prefill + one token
        tn = timed_generate(model, ids, args.output)
        decode = b * (args.output - 1) / max(tn - t1, 1e-9)
        print(f"hf_peer: batch {b}: prefill {b * args.prompt / t1:.0f} tok/s "
              f"({t1 * 1e3:.1f} ms), decode {decode:.0f} tok/s aggregate, "
              f"{decode / b:.1f} per sequence")


if __name__ == "__main__":
    main()
