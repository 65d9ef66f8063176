#!/usr/bin/env bash
# Builds the GPU checks here (a machine with Bazel and the Debian packages) into gpu-bundle.tar.xz
# for a GPU machine that has CUDA and PyTorch but neither Bazel nor Kiln's build dependencies:
# the [gpu] test binaries and the benchmarks (bench/gpu_train, bench/dp_overlap), linked
# statically against Kiln's own libraries, plus the shared libraries they need that such a machine
# lacks (CUDA's own stay out: the GPU machine's driver and toolkit provide them). tools/gpu-check.sh unpacks and uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/gpu-targets.sh
bazel build --jobs="${KILN_BAZEL_JOBS:-2}" --dynamic_mode=off "${GPU_TEST_TARGETS[@]}" \
  "${GPU_BENCH_TARGETS[@]}" //worker:kiln-train
rm -rf gpu-bundle && mkdir -p gpu-bundle/bin gpu-bundle/lib gpu-bundle/runfiles/kiln/worker
for t in "${GPU_TEST_TARGETS[@]}" "${GPU_BENCH_TARGETS[@]}"; do
  path="${t#//}"
  cp "bazel-bin/${path/://}" gpu-bundle/bin/
done
cp bazel-bin/worker/kiln-train gpu-bundle/runfiles/kiln/worker/  # tests find it as a runfile
# System libraries every Linux has, and CUDA's, are not bundled.
skip='linux-vdso|ld-linux|libc\.so|libm\.so|libstdc\+\+|libgcc_s|libpthread|libdl\.so|librt\.so'
skip="$skip|libcuda\.so|libcudart|libcublas|libnccl|libcudnn"
for bin in gpu-bundle/bin/* gpu-bundle/runfiles/kiln/worker/kiln-train; do
  ldd "$bin" | awk '{print $3}' | grep '^/' | grep -v -E "$skip" || true
done | sort -u | while read -r lib; do cp -L "$lib" gpu-bundle/lib/; done
tar -cJf gpu-bundle.tar.xz gpu-bundle
rm -rf gpu-bundle
ls -la gpu-bundle.tar.xz
