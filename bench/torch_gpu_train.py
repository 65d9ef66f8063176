"""PyTorch's side of bench/gpu_train.sh: GPT-2 124M (transformers' GPT2LMHeadModel, L12 H12 D768,
T1024, vocab 50304) training steps in bf16 autocast with fused AdamW on one GPU, eager and — if it
works here — torch.compile, plus a bf16 matmul probe (8192^3) that sets the MFU denominator.
Prints one JSON line per measurement."""
import argparse
import json
import time

import torch


def matmul_probe():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - t0)


def train(mode, batch, steps, warmup, layers):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=layers, n_head=12, n_embd=768, n_positions=1024,
                        vocab_size=50304, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).cuda()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
    step_fn = model
    if mode == "compile":
        step_fn = torch.compile(model)
    x = torch.randint(0, 50257, (batch, 1024), device="cuda")  # labels=x: HF shifts them itself
    torch.cuda.reset_peak_memory_stats()
    seconds, losses = 0.0, []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        torch.cuda.synchronize()
        if step >= warmup:
            seconds += time.perf_counter() - t0
    return {"system": "pytorch-" + mode, "gpu": torch.cuda.get_device_name(0), "batch": batch,
            "seq": 1024, "layers": layers, "params": params,
            "tokens_per_s": batch * 1024 * steps / seconds, "step_ms": 1e3 * seconds / steps,
            "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
            "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
            "loss_first": losses[0], "loss_last": losses[-1], "torch": torch.__version__}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--modes", default="eager,compile")
    a = p.parse_args()
    print(json.dumps({"system": "matmul-probe", "bf16_flops": matmul_probe(),
                      "gpu": torch.cuda.get_device_name(0)}), flush=True)
    for mode in a.modes.split(","):
        try:
            print(json.dumps(train(mode, a.batch, a.steps, a.warmup, a.layers)), flush=True)
        except Exception as e:  # torch.compile may not work on every machine: report, go on
            print(json.dumps({"system": "pytorch-" + mode, "error": str(e)[:300]}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
