# The [gpu] test targets and the benchmarks the GPU check runs, shared by tools/gpu-check.sh and tools/gpu-bundle.sh (sourced).
GPU_TEST_TARGETS=(
  //tests/kernels/cuda:device_runtime_test
  //tests/kernels/cuda:cublaslt_loader_test
  //tests/kernels/cuda:allocator_gpu_test
  //tests/kernels/cuda:kernel_parity_test
  //tests/kernels/cuda:attention_tc_test
  //tests/engine/dist:nccl_test
  //tests/engine/cuda:train_parity_test
  //tests/engine/cuda:data_parallel_cuda_test
  //tests/engine/cuda:device_graph_test
  //tests/engine/cuda:executor_memory_test
  //tests/worker:kiln_train_cuda_test
)
GPU_BENCH_TARGETS=(
  //bench:gpu_train
  //bench:dp_overlap
)
