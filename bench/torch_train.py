#!/usr/bin/python3
"""PyTorch side of bench/cpu_train.sh: trains the same GPT-2 or Llama as Kiln (the model code of
tests/golden/torch_reference.py) with AdamW + clipping, eager fp32 or bf16 autocast, and prints
tokens_per_s=<median over the timed steps>."""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
import torch_reference  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="gpt2")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--n_kv_head", type=int, default=4)
    ap.add_argument("--d_model", type=int, default=256)
    ap.add_argument("--d_ff", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup_steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    a.max_seq, a.eps, a.theta, a.tie = a.seq, 1e-5, 10000.0, 0
    g = torch.Generator().manual_seed(0)
    model = (torch_reference.Gpt2 if a.family == "gpt2" else torch_reference.Llama)(a, g)
    params = list(model.p.values())
    for p in params:
        p.requires_grad_(True)
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95))
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, a.vocab, (a.batch, a.seq + 1)))
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    times = []
    for step in range(a.steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            logits = model.logits(x)
        loss = F.cross_entropy(logits.float().view(-1, a.vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= a.warmup_steps:
            times.append(time.perf_counter() - t0)
    print(f"tokens_per_s={a.batch * a.seq / statistics.median(times):.1f} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
