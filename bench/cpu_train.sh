#!/usr/bin/env bash
# CPU training benchmark: the same GPT-2 (L4 H4 D256 T256 V4096 B8) and a Llama of that size,
# trained by Kiln (kiln-train) and by PyTorch (Debian's, eager fp32 and bf16 autocast) with the same
# thread count in one run. Prints tokens/s, the ratios, each side's peak resident memory, and Kiln's
# MFU against the oneDNN matmul ceiling measured here; with --record, writes the table into
# bench/RESULTS.md. Targets: Kiln f32 >= 5x PyTorch f32, Kiln bf16 >= 2x PyTorch bf16, Kiln peak
# memory <= PyTorch's.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORD=0
[ "${1:-}" = "--record" ] && RECORD=1
THREADS="${KILN_BENCH_THREADS:-$(nproc)}"
# Both sides run under the same OpenMP policy: passive waiting (Note [OpenMP wait policy] in
# engine/core/parallel.h). On a busy machine libgomp's default spinning costs PyTorch as much as
# Kiln; on an idle one it makes no measurable difference.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
STEPS="${KILN_BENCH_STEPS:-12}"

bazel build //worker:kiln-train //bench:matmul_ceiling 2>&1 | grep -E "ERROR|error:" || true
mkdir -p data/bench runs/bench
/usr/bin/python3 - <<'PY'
import numpy as np
toks = np.random.default_rng(0).integers(0, 4096, 2_000_000).astype(np.uint16)
hdr = np.zeros(256, dtype=np.int32); hdr[0], hdr[1], hdr[2] = 20240520, 1, len(toks)
with open("data/bench/train.bin", "wb") as f:
    f.write(hdr.tobytes()); f.write(toks.tobytes())
PY

ceiling=$(bazel-bin/bench/matmul_ceiling)
f32_ceiling=$(echo "$ceiling" | sed -E 's/.*f32_gflops=([0-9.]+).*/\1/')
bf16_ceiling=$(echo "$ceiling" | sed -E 's/.*bf16_gflops=([0-9.]+).*/\1/')
echo "oneDNN matmul ceiling (2048^3, $THREADS threads): f32 $f32_ceiling GFLOP/s, bf16 $bf16_ceiling GFLOP/s"

blas_info=$(/usr/bin/python3 -c "import torch,re; print(re.search(r'BLAS_INFO=([^,]+)', torch.__config__.show()).group(1))" 2>/dev/null || echo unknown)

peak_kb() { grep "Maximum resident set size" "$1" | awk '{print $NF}'; }

# Kiln: median tokens/s over the steps after the first two.
run_kiln() {  # family precision
  local spec="runs/bench/$1-$2.yaml"
  sed -e "s/precision: fp32/precision: $2/" -e "s|../data/bench|$(pwd)/data/bench|" \
    "configs/$1-small-cpu.yaml" > "$spec"
  rm -f "runs/bench/$1-$2.jsonl"
  /usr/bin/time -v bazel-bin/worker/kiln-train "$spec" --steps "$STEPS" --threads "$THREADS" \
    --metrics-out "runs/bench/$1-$2.jsonl" 2> "runs/bench/$1-$2.kiln.log" >/dev/null
  /usr/bin/python3 -c "
import json, statistics, sys
rows = [json.loads(l) for l in open('runs/bench/$1-$2.jsonl') if 'tokens_per_s' in l]
print(f\"{statistics.median(r['tokens_per_s'] for r in rows[2:]):.1f}\")"
}

run_torch() {  # family precision
  local extra=""
  [ "$1" = "llama" ] && extra="--n_kv_head 2 --d_ff 688"
  /usr/bin/time -v /usr/bin/python3 bench/torch_train.py --family "$1" --precision "$2" \
    --threads "$THREADS" --steps "$STEPS" $extra 2> "runs/bench/$1-$2.torch.log" \
    | sed -E 's/tokens_per_s=([0-9.]+).*/\1/'
}

# Training FLOPs per token (PaLM's 6N + 12 L C T), N = matmul parameters incl. the LM head.
flops_per_token() {  # family
  /usr/bin/python3 -c "
L, C, T, V = 4, 256, 256, 4096
F, kv = (1024, 4) if '$1' == 'gpt2' else (688, 2)
attn = C * C * (1 + 2 * kv / 4) + C * C
mlp = 2 * C * F if '$1' == 'gpt2' else 3 * C * F
print(6 * (L * (attn + mlp) + V * C) + 12 * L * C * T)"
}

rows=()
printf "%-6s %-5s %12s %12s %7s %10s %10s %6s\n" model prec "kiln tok/s" "torch tok/s" ratio "kiln MB" "torch MB" MFU
for family in gpt2 llama; do
  fpt=$(flops_per_token $family)
  for precision in fp32 bf16; do
    k=$(run_kiln $family $precision)
    t=$(run_torch $family $precision)
    km=$(( $(peak_kb "runs/bench/$family-$precision.kiln.log") / 1024 ))
    tm=$(( $(peak_kb "runs/bench/$family-$precision.torch.log") / 1024 ))
    ceil=$f32_ceiling; [ "$precision" = "bf16" ] && ceil=$bf16_ceiling
    read -r ratio mfu < <(/usr/bin/python3 -c "print(f'{$k/$t:.2f} {100*$k*$fpt/($ceil*1e9):.1f}')")
    printf "%-6s %-5s %12s %12s %6sx %10s %10s %5s%%\n" $family $precision "$k" "$t" "$ratio" "$km" "$tm" "$mfu"
    rows+=("| $family | $precision | $k | $t | ${ratio}x | $km | $tm | $mfu % |")
  done
done

if [ "$RECORD" = "1" ]; then
  machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $THREADS threads"
  {
    echo "## CPU training: Kiln vs PyTorch (bench/cpu_train.sh)"
    echo
    echo "$(date -u +%Y-%m-%d), $machine, PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)')."
    echo "L4 H4 D256 T256 V4096 B8 (Llama: 2 kv heads, F688), AdamW + clipping; median tokens/s over"
    echo "steps 3..$STEPS. MFU against oneDNN's 2048³ matmul here: f32 $f32_ceiling, bf16 $bf16_ceiling GFLOP/s."
    echo "Targets: f32 ratio >= 5x, bf16 ratio >= 2x, Kiln peak memory <= PyTorch's."
    echo
    echo "| model | precision | Kiln tok/s | PyTorch tok/s | ratio | Kiln peak MB | PyTorch peak MB | Kiln MFU |"
    echo "|---|---|---|---|---|---|---|---|"
    printf "%s\n" "${rows[@]}"
    echo
    echo "PyTorch's BLAS here: $blas_info. Debian's python3-torch is built against the generic"
    echo "(reference) BLAS, which its fp32 linear layers call, so the fp32 ratio measures Kiln"
    echo "against that build, not against PyTorch with MKL. Its bf16 path runs on oneDNN, like"
    echo "Kiln's matmuls: the bf16 ratio is the like-for-like one."
    echo "Machine load (1-minute average) at the end: $(cut -d' ' -f1 /proc/loadavg)."
  } > runs/bench/cpu_train.md
  /usr/bin/python3 bench/record.py "CPU training: Kiln vs PyTorch" runs/bench/cpu_train.md
fi
