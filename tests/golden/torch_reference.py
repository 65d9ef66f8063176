#!/usr/bin/python3
"""PyTorch reference for Kiln's parity tests.

Builds GPT-2 (as Hugging Face GPT2LMHeadModel) or Llama (as LlamaForCausalLM) in plain PyTorch,
following the conventions Kiln promises, writes the initial weights as safetensors with Hugging Face
names plus a token file, and records what the C++ test compares against:
  logits0.f32    initial logits of batch 0, (B, T, V)
  grads0.safetensors   every parameter's gradient of batch 0's loss
  losses.json    the loss of every training step (AdamW + clipping + schedule)
  final.safetensors    the weights after the last step
Usage: torch_reference.py OUT_DIR --family gpt2|llama --precision fp32|bf16 [sizes...]
"""
import argparse
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().to(torch.float32).contiguous().numpy()
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def write_tokens(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


class Gpt2:
    """GPT2LMHeadModel: Conv1D weights are (in, out); the LM head is wte."""

    def __init__(self, a, g):
        C, V, F_ = a.d_model, a.vocab, a.d_ff
        n = lambda *s: torch.randn(*s, generator=g) * 0.02
        self.p = {"wte.weight": n(V, C), "wpe.weight": torch.randn(a.max_seq, C, generator=g) * 0.01,
                  "ln_f.weight": 1 + 0.1 * torch.randn(C, generator=g),
                  "ln_f.bias": 0.1 * torch.randn(C, generator=g)}
        for i in range(a.n_layer):
            h = f"h.{i}."
            self.p.update({
                h + "ln_1.weight": 1 + 0.1 * torch.randn(C, generator=g), h + "ln_1.bias": 0.1 * torch.randn(C, generator=g),
                h + "attn.c_attn.weight": n(C, 3 * C), h + "attn.c_attn.bias": n(3 * C),
                h + "attn.c_proj.weight": n(C, C), h + "attn.c_proj.bias": n(C),
                h + "ln_2.weight": 1 + 0.1 * torch.randn(C, generator=g), h + "ln_2.bias": 0.1 * torch.randn(C, generator=g),
                h + "mlp.c_fc.weight": n(C, F_), h + "mlp.c_fc.bias": n(F_),
                h + "mlp.c_proj.weight": n(F_, C), h + "mlp.c_proj.bias": n(C)})
        self.a = a

    def logits(self, idx):
        p, a = self.p, self.a
        B, T = idx.shape
        H, C = a.n_head, a.d_model
        D = C // H
        x = p["wte.weight"][idx] + p["wpe.weight"][:T]
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        for i in range(a.n_layer):
            h = f"h.{i}."
            y = F.layer_norm(x, (C,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], a.eps)
            qkv = y @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]
            q, k, v = qkv.split(C, dim=-1)
            q, k, v = [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]
            s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
            s = s.masked_fill(~mask, float("-inf")).float().softmax(-1).to(v.dtype)
            o = (s @ v).transpose(1, 2).reshape(B, T, C)
            x = x + o @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
            y = F.layer_norm(x, (C,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], a.eps)
            u = F.gelu(y @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"], approximate="tanh")
            x = x + u @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
        x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], a.eps)
        return x @ p["wte.weight"].t()


class Llama:
    """LlamaForCausalLM: RMSNorm in f32, rotate-half RoPE, grouped-query attention, SwiGLU."""

    def __init__(self, a, g):
        C, V, F_, D = a.d_model, a.vocab, a.d_ff, a.d_model // a.n_head
        H, Hkv = a.n_head, a.n_kv_head
        n = lambda *s: torch.randn(*s, generator=g) * 0.02
        self.p = {"model.embed_tokens.weight": n(V, C), "model.norm.weight": 1 + 0.1 * torch.randn(C, generator=g)}
        if not a.tie:
            self.p["lm_head.weight"] = n(V, C)
        for i in range(a.n_layer):
            l = f"model.layers.{i}."
            self.p.update({
                l + "input_layernorm.weight": 1 + 0.1 * torch.randn(C, generator=g),
                l + "self_attn.q_proj.weight": n(H * D, C), l + "self_attn.k_proj.weight": n(Hkv * D, C),
                l + "self_attn.v_proj.weight": n(Hkv * D, C), l + "self_attn.o_proj.weight": n(C, H * D),
                l + "post_attention_layernorm.weight": 1 + 0.1 * torch.randn(C, generator=g),
                l + "mlp.gate_proj.weight": n(F_, C), l + "mlp.up_proj.weight": n(F_, C),
                l + "mlp.down_proj.weight": n(C, F_)})
        self.a = a

    def rms(self, x, w):
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.a.eps)
        return w * h.to(dtype)

    def logits(self, idx):
        p, a = self.p, self.a
        B, T = idx.shape
        C, H, Hkv = a.d_model, a.n_head, a.n_kv_head
        D = C // H
        inv_freq = 1.0 / (a.theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
        freqs = torch.arange(T).float()[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()

        def rotate(t):
            t1, t2 = t[..., : D // 2], t[..., D // 2:]
            return torch.cat((-t2, t1), dim=-1)

        mask = torch.ones(T, T, dtype=torch.bool).tril()
        x = p["model.embed_tokens.weight"][idx]
        for i in range(a.n_layer):
            l = f"model.layers.{i}."
            y = self.rms(x, p[l + "input_layernorm.weight"])
            q = (y @ p[l + "self_attn.q_proj.weight"].t()).view(B, T, H, D).transpose(1, 2)
            k = (y @ p[l + "self_attn.k_proj.weight"].t()).view(B, T, Hkv, D).transpose(1, 2)
            v = (y @ p[l + "self_attn.v_proj.weight"].t()).view(B, T, Hkv, D).transpose(1, 2)
            c, s_ = cos.to(q.dtype), sin.to(q.dtype)
            q, k = q * c + rotate(q) * s_, k * c + rotate(k) * s_
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
            s = s.masked_fill(~mask, float("-inf")).float().softmax(-1).to(v.dtype)
            o = (s @ v).transpose(1, 2).reshape(B, T, H * D)
            x = x + o @ p[l + "self_attn.o_proj.weight"].t()
            y = self.rms(x, p[l + "post_attention_layernorm.weight"])
            u = F.silu(y @ p[l + "mlp.gate_proj.weight"].t()) * (y @ p[l + "mlp.up_proj.weight"].t())
            x = x + u @ p[l + "mlp.down_proj.weight"].t()
        x = self.rms(x, p["model.norm.weight"])
        head = p["model.embed_tokens.weight"] if a.tie else p["lm_head.weight"]
        return x @ head.t()


def lr_at(a, s):
    if s < a.warmup:
        return a.lr * (s + 1) / a.warmup
    progress = min(1.0, (s - a.warmup) / (a.steps - a.warmup))
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * progress))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--family", default="gpt2")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--n_layer", type=int, default=2)
    ap.add_argument("--n_head", type=int, default=3)
    ap.add_argument("--n_kv_head", type=int, default=3)
    ap.add_argument("--d_model", type=int, default=72)
    ap.add_argument("--d_ff", type=int, default=288)
    ap.add_argument("--vocab", type=int, default=250)
    ap.add_argument("--max_seq", type=int, default=32)
    ap.add_argument("--seq", type=int, default=20)
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min_lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--weight_decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--theta", type=float, default=10000.0)
    ap.add_argument("--tie", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    g = torch.Generator().manual_seed(a.seed)
    model = Gpt2(a, g) if a.family == "gpt2" else Llama(a, g)
    write_safetensors(os.path.join(a.out, "init.safetensors"), model.p)
    B, T = a.batch, a.seq
    n_tokens = (a.steps + 2) * B * T + 1
    # A learnable stream (a repeated random phrase with 10 % noise), so the 20 steps move the loss.
    phrase = torch.randint(0, a.vocab, (47,), generator=g)
    tokens = phrase.repeat(n_tokens // 47 + 1)[:n_tokens].clone()
    noise = torch.rand(n_tokens, generator=g) < 0.1
    tokens[noise] = torch.randint(0, a.vocab, (int(noise.sum()),), generator=g)
    write_tokens(os.path.join(a.out, "train.bin"), tokens.tolist())

    def batch(i):
        pos = i * B * T
        if pos + B * T + 1 > n_tokens:
            raise SystemExit("fixture too short")
        chunk = tokens[pos: pos + B * T + 1]
        return chunk[:-1].view(B, T), chunk[1:].view(B, T)

    params = model.p
    for t in params.values():
        t.requires_grad_(True)
    autocast = a.precision == "bf16"

    def loss_of(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model.logits(x)
        return logits, F.cross_entropy(logits.float().view(-1, a.vocab), y.reshape(-1))

    x0, y0 = batch(0)
    logits0, loss0 = loss_of(x0, y0)
    loss0.backward()
    logits0.detach().float().numpy().astype(np.float32).tofile(os.path.join(a.out, "logits0.f32"))
    write_safetensors(os.path.join(a.out, "grads0.safetensors"),
                      {k: v.grad for k, v in params.items()})
    for v in params.values():
        v.grad = None

    decay = [v for v in params.values() if v.dim() >= 2]
    no_decay = [v for v in params.values() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    losses = []
    for s in range(a.steps):
        x, y = batch(s)
        _, loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), a.clip)
        for group in opt.param_groups:
            group["lr"] = lr_at(a, s)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    with open(os.path.join(a.out, "losses.json"), "w") as f:
        json.dump(losses, f)
    write_safetensors(os.path.join(a.out, "final.safetensors"), model.p)


if __name__ == "__main__":
    main()
