#!/usr/bin/env bash
# GPT-2 124M (L12 H12 D768, T1024, vocab 50304), bf16, one GPU: Kiln (bench/gpu_train.cc) against
# PyTorch eager and torch.compile in the same run. Reports tokens/s, MFU against the bf16 matmul
# rate measured in this run, and peak device memory; appends the figures with the GPU's name to
# bench/RESULTS.md. Used by tools/gpu-check.sh; KILN_GPU_TRAIN names a prebuilt Kiln binary.
#
#   bench/gpu_train.sh [OUT_DIR]      (BATCH, STEPS, WARMUP override the defaults 8, 10, 3;
#                                      TORCH_TIMEOUT_S the PyTorch side's limit, 300 s;
#                                      TORCH_MODES=eager skips torch.compile)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-out}}"
mkdir -p "$out"
BATCH="${BATCH:-8}" STEPS="${STEPS:-10}" WARMUP="${WARMUP:-3}"
kiln_bin="${KILN_GPU_TRAIN:-bazel-bin/bench/gpu_train}"
py="${PYTHON:-python3}"

args=(--batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP")
"$kiln_bin" "${args[@]}" >"$out/bench_kiln.jsonl" 2>"$out/bench_kiln.log" ||
  echo "{\"system\": \"kiln\", \"error\": \"exit $?: $(tail -1 "$out/bench_kiln.log" | tr -d '"')\"}" \
    >"$out/bench_kiln.jsonl"
# Kiln again with one switch changed: `kiln_variant NAME VAR=VALUE...` appends a row named NAME.
kiln_variant() {
  local name="$1"
  shift
  env "$@" "$kiln_bin" "${args[@]}" 2>"$out/bench_$name.log" |
    sed "s/\"system\": \"kiln\"/\"system\": \"$name\"/" >>"$out/bench_kiln.jsonl" ||
    echo "{\"system\": \"$name\", \"error\": \"exit $?\"}" >>"$out/bench_kiln.jsonl"
}
# Without device graphs (Note [Device graphs]): what one launch per step buys.
kiln_variant kiln-no-graphs KILN_CUDA_GRAPHS=0
# The wmma attention kernels (Note [Choosing the attention kernels]): what the register-resident
# mma.sync kernels buy, and a figure should they misbehave on the device.
kiln_variant kiln-wmma-attention KILN_CUDA_ATTENTION=wmma
# cuBLASLt's epilogues, one row each way (Note [Bias gradient in the matmul epilogue], Note [DGELU
# epilogue off by default]): with the backward's DGELU(_BGRAD) epilogue, which is off by default,
# and with none at all (GELU, DGELU and bias gradients as separate kernels after plain matmuls).
# Says, on this GPU, whether each fused kernel beats a plain GEMM plus the extra pass.
kiln_variant kiln-dgelu-epilogue KILN_CUDA_DGELU_EPILOGUE=1
kiln_variant kiln-no-epilogues KILN_CUDA_GELU_EPILOGUE=0 KILN_CUDA_BGRAD_EPILOGUE=0
# PyTorch prints each row as it finishes (probe, eager, then torch.compile, which can compile for
# minutes): a time limit keeps the rows it has, and the table below is still written.
timeout "${TORCH_TIMEOUT_S:-300}" "$py" bench/torch_gpu_train.py "${args[@]}" \
  --modes "${TORCH_MODES:-eager,compile}" \
  >"$out/bench_torch.jsonl" 2>"$out/bench_torch.log" ||
  echo "{\"system\": \"pytorch\", \"error\": \"exit $? (124: over ${TORCH_TIMEOUT_S:-300} s)\"}" \
    >>"$out/bench_torch.jsonl"

"$py" - "$out" <<'PY'
import json, sys, datetime
out = sys.argv[1]
rows = [json.loads(l) for f in ("bench_torch.jsonl", "bench_kiln.jsonl")
        for l in open(f"{out}/{f}") if l.strip().startswith("{")]
probe = next((r for r in rows if r["system"] == "matmul-probe"), None)
peak = probe["bf16_flops"] if probe else None
gpu = next((r["gpu"] for r in rows if "gpu" in r), "unknown GPU")
eager = next((r for r in rows if r["system"] == "pytorch-eager" and "error" not in r), None)
lines = [f"| system | tokens/s | vs eager | MFU | step ms | peak alloc MiB | peak reserved MiB "
         "| loss first -> last |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
for r in rows:
    if r["system"] == "matmul-probe":
        continue
    if "error" in r:
        lines.append(f"| {r['system']} | failed: {r['error'][:80]} | | | | | | |")
        continue
    # 6N per token for the weights plus 12 L D T for attention (PaLM appendix B).
    flops_per_token = 6 * r["params"] + 12 * r["layers"] * 768 * r["seq"]
    mfu = r["tokens_per_s"] * flops_per_token / peak if peak else float("nan")
    ratio = r["tokens_per_s"] / eager["tokens_per_s"] if eager else float("nan")
    lines.append(f"| {r['system']} | {r['tokens_per_s']:.0f} | {ratio:.2f} | {100 * mfu:.1f} % "
                 f"| {r['step_ms']:.1f} | {r['peak_allocated_mib']:.0f} "
                 f"| {r['peak_reserved_mib']:.0f} "
                 f"| {r['loss_first']:.3f} -> {r['loss_last']:.3f} |")
table = "\n".join(lines)
probe_line = f"bf16 matmul probe (torch, 8192^3): {peak / 1e12:.0f} TFLOP/s" if peak else "no probe"
print(table)
print(probe_line)
if peak is None or eager is None:
    sys.exit(0)  # no GPU figures to record
with open("bench/RESULTS.md", "a") as f:
    f.write(f"\n## GPU training: GPT-2 124M, bf16, one {gpu} "
            f"({datetime.date.today().isoformat()}, bench/gpu_train.sh)\n\n{table}\n\n{probe_line}. "
            "MFU = tokens/s x (6 N + 12 L D T) / probe rate.\n")
PY
