#!/usr/bin/python3
"""PyTorch (float64) reference outputs for tests/kernels/cpu/torch_parity_test.cc.

Usage: torch_parity.py CASE_DIR. CASE_DIR/meta.json names the case, its parameters and its inputs
({"case": ..., "params": {...}, "inputs": {name: {"shape": [...], "dtype": "f32" | "i32"}}}); each
input is CASE_DIR/<name>.bin, raw little-endian. Writes every output as CASE_DIR/<name>.out.bin
(little-endian f32) and CASE_DIR/outputs.json ({name: shape}).
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

NUMPY_TYPES = {"f32": "<f4", "i32": "<i4"}


def load_inputs(case_dir, specs):
    out = {}
    for name, spec in specs.items():
        array = np.fromfile(f"{case_dir}/{name}.bin", dtype=NUMPY_TYPES[spec["dtype"]])
        tensor = torch.from_numpy(array.reshape(spec["shape"]).copy())
        out[name] = tensor.double() if spec["dtype"] == "f32" else tensor.long()
    return out


def attention(x, p):
    """Causal grouped-query attention on packed qkv; returns out, lse and d(qkv) for dout."""
    qkv = x["qkv"].clone().requires_grad_(True)
    b, t, _ = qkv.shape
    h, hkv, d = p["n_head"], p["n_kv_head"], p["head_dim"]
    q, k, v = qkv.split([h * d, hkv * d, hkv * d], dim=-1)
    q = q.view(b, t, h, d).transpose(1, 2)
    k = k.view(b, t, hkv, d).transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    v = v.view(b, t, hkv, d).transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, h * d)
    out.backward(x["dout"])
    return {"out": out, "lse": lse, "dqkv": qkv.grad}


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x, p):
    """Hugging Face Llama rotary embedding (rotate-half) on the q and k heads of packed qkv."""
    qkv = x["qkv"]
    b, t, _ = qkv.shape
    h, hkv, d = p["n_head"], p["n_kv_head"], p["head_dim"]
    inv_freq = 1.0 / (p["theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    qk = qkv[..., : (h + hkv) * d].view(b, t, h + hkv, d)
    rotated = (qk * cos + rotate_half(qk) * sin).reshape(b, t, (h + hkv) * d)
    return {"out": torch.cat((rotated, qkv[..., (h + hkv) * d :]), dim=-1)}


def layer_norm(x, p):
    inp = x["x"].clone().requires_grad_(True)
    gamma = x["gamma"].clone().requires_grad_(True)
    beta = x["beta"].clone().requires_grad_(True)
    y = F.layer_norm(inp, (inp.shape[-1],), gamma, beta, eps=p["eps"])
    y.backward(x["dy"])
    mean = x["x"].mean(dim=-1)
    rstd = torch.rsqrt(x["x"].var(dim=-1, unbiased=False) + p["eps"])
    return {"y": y, "mean": mean, "rstd": rstd, "dx": inp.grad, "dgamma": gamma.grad,
            "dbeta": beta.grad}


class LlamaRMSNorm(torch.nn.Module):
    """As in Hugging Face transformers' modeling_llama."""

    def __init__(self, weight, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float64)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


def rms_norm(x, p):
    inp = x["x"].clone().requires_grad_(True)
    norm = LlamaRMSNorm(x["gamma"].clone(), p["eps"])
    y = norm(inp)
    y.backward(x["dy"])
    return {"y": y, "dx": inp.grad, "dgamma": norm.weight.grad}


def cross_entropy(x, p):
    logits = x["logits"].clone().requires_grad_(True)
    loss = F.cross_entropy(logits, x["targets"], ignore_index=p["ignore_index"])
    loss.backward()
    return {"loss": loss.reshape(1), "dlogits": logits.grad}


def gelu_tanh(x, p):
    inp = x["x"].clone().requires_grad_(True)
    y = F.gelu(inp, approximate="tanh")
    y.backward(x["dy"])
    return {"y": y, "dx": inp.grad}


CASES = {
    "attention": attention,
    "rope": rope,
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "cross_entropy": cross_entropy,
    "gelu_tanh": gelu_tanh,
}


def main():
    case_dir = sys.argv[1]
    with open(f"{case_dir}/meta.json") as f:
        meta = json.load(f)
    outputs = CASES[meta["case"]](load_inputs(case_dir, meta["inputs"]), meta["params"])
    shapes = {}
    for name, tensor in outputs.items():
        tensor.detach().to(torch.float32).numpy().astype("<f4").tofile(f"{case_dir}/{name}.out.bin")
        shapes[name] = list(tensor.shape)
    with open(f"{case_dir}/outputs.json", "w") as f:
        json.dump(shapes, f)


if __name__ == "__main__":
    main()
