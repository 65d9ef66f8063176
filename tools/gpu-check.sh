#!/usr/bin/env bash
# Every GPU check in one go, on a machine with a GPU (sized for one H200, under 8 minutes):
#   1. binaries: built with Bazel when it is installed and the build works, else taken from
#      gpu-bundle.tar.xz (made by tools/gpu-bundle.sh on a build machine; KILN_USE_BUNDLE=1 forces
#      it); nothing is installed here, nothing downloaded;
#   2. bench/gpu_train.sh (GPT-2 124M, Kiln vs PyTorch eager / torch.compile, MFU, memory), first,
#      so that a slow or hanging test cannot cost the figures of a short device lease;
#   3. the [gpu] tests (every CUDA kernel vs the CPU, the allocator, NCCL, GPT-2 / Llama parity,
#      ZeRO on CUDA, cuBLASLt found and opened on first use), 180 s each at most;
#   4. bench/dp_overlap (CPU, Gloo, dp 2, median of 41 iterations): the device machine's spare
#      cores are where the data-parallel overlap target can be measured (a 2-core build machine
#      has none);
#   5. a short table, last. Full logs go to $OUT (default ./gpu-out).
# Exit status: 0 when no test failed (skips are listed: one GPU skips the multi-rank NCCL case).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export OUT
source tools/gpu-targets.sh
t_start=$(date +%s)
log() { echo "[gpu-check $(($(date +%s) - t_start))s] $*" | tee -a "$OUT/gpu-check.log"; }

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed (see nvidia-smi.txt)"

# ---- 1. binaries ----
declare -A BIN
use_bundle=1
if command -v bazel >/dev/null && [ "${KILN_USE_BUNDLE:-0}" != 1 ]; then
  log "building with bazel"
  if bazel build --jobs="$(nproc)" "${GPU_TEST_TARGETS[@]}" "${GPU_BENCH_TARGETS[@]}" \
    //worker:kiln-train >"$OUT/build.log" 2>&1; then
    use_bundle=0
    for t in "${GPU_TEST_TARGETS[@]}" "${GPU_BENCH_TARGETS[@]}"; do
      p="${t#//}"
      BIN[$t]="bazel-bin/${p/://}"
    done
  else
    log "bazel build failed (build.log); trying the prebuilt bundle"
  fi
fi
if [ "$use_bundle" = 1 ]; then
  [ -f gpu-bundle.tar.xz ] ||
    { log "no build and no gpu-bundle.tar.xz: run tools/gpu-bundle.sh on a build machine"; exit 1; }
  log "using the prebuilt gpu-bundle.tar.xz"
  rm -rf gpu-bundle && tar -xJf gpu-bundle.tar.xz
  for t in "${GPU_TEST_TARGETS[@]}" "${GPU_BENCH_TARGETS[@]}"; do
    BIN[$t]="gpu-bundle/bin/${t##*:}"
  done
  export LD_LIBRARY_PATH="$PWD/gpu-bundle/lib:${LD_LIBRARY_PATH:-}"
fi
# CUDA libraries: the toolkit's, or the ones PyTorch's wheels bring (nccl, cublas).
py="${PYTHON:-python3}"
site="$("$py" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)"
for lib in libcudart.so.13 libcublasLt.so.13 libnccl.so.2; do
  if ! ls /usr/local/cuda/lib64/$lib >/dev/null 2>&1 && [ -n "$site" ]; then
    found="$(find "$site/nvidia" -name "$lib*" 2>/dev/null | head -1)"
    [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found"):${LD_LIBRARY_PATH:-}"
  fi
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"

# ---- 2. benchmark, first: the figures the issue asks for, before any test can use up the time ----
log "benchmark"
KILN_GPU_TRAIN="${BIN[//bench:gpu_train]}" PYTHON="$py" bash bench/gpu_train.sh "$OUT" \
  >"$OUT/bench.txt" 2>&1 || log "benchmark script failed (bench.txt)"

# ---- 3. tests ----
declare -A RESULT
total_p=0 total_f=0 total_s=0
for t in "${GPU_TEST_TARGETS[@]}"; do
  name="${t##*:}"
  log "test $name"
  runfiles="$PWD/${BIN[$t]}.runfiles"
  [ "$use_bundle" = 1 ] && runfiles="$PWD/gpu-bundle/runfiles"
  TEST_SRCDIR="$runfiles" TEST_TMPDIR="$OUT/tmp/$name" timeout 180 "${BIN[$t]}" \
    >"$OUT/$name.log" 2>&1
  rc=$?
  summary=$(grep -a "^KILN_TEST_SUMMARY" "$OUT/$name.log" | tail -1)
  p=$(echo "$summary" | sed -nE 's/.*passed=([0-9]+).*/\1/p'); p=${p:-0}
  f=$(echo "$summary" | sed -nE 's/.*failed=([0-9]+).*/\1/p'); f=${f:-1}
  s=$(echo "$summary" | sed -nE 's/.*skipped=([0-9]+).*/\1/p'); s=${s:-0}
  [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
  RESULT[$name]="$p passed, $f failed, $s skipped (exit $rc)"
  total_p=$((total_p + p)); total_f=$((total_f + f)); total_s=$((total_s + s))
done

# ---- 4. data-parallel overlap (CPU) ----
log "dp overlap (CPU, $(nproc) cores)"
timeout 180 "${BIN[//bench:dp_overlap]}" --steps=41 >"$OUT/dp_overlap.txt" 2>&1 ||
  log "dp_overlap failed or timed out (dp_overlap.txt)"
cp bench/RESULTS.md "$OUT/RESULTS.md" 2>/dev/null

# ---- 5. the table, last ----
{
  echo
  gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  echo "== GPU check on $gpu," \
    "$(($(date +%s) - t_start)) s; logs in $OUT"
  for t in "${GPU_TEST_TARGETS[@]}"; do printf '%-26s %s\n' "${t##*:}" "${RESULT[${t##*:}]}"; done
  echo
  grep -E '^\|' "$OUT/bench.txt" || echo "benchmark: no table (see $OUT/bench.txt)"
  grep -E 'probe' "$OUT/bench.txt" || true
  echo "kiln's slowest ops in one step (device-synchronized, bench_kiln.log):"
  grep -A6 '^per-op device time' "$OUT/bench_kiln.log" 2>/dev/null | tail -n +2 || true
  grep -E '^\| dp=2|hidden share|hideable' "$OUT/dp_overlap.txt" || echo "dp_overlap: no result"
  echo
  echo "$total_p passed, $total_f failed, $total_s skipped"
} | tee "$OUT/summary.txt"
[ "$total_f" -eq 0 ]
