"""kiln_test: a Catch2 test linked with the shared main (tests/catch_main.cc)."""

def kiln_test(name, srcs, deps = [], data = [], size = "small", tags = [], **kwargs):
    native.cc_test(
        name = name,
        srcs = srcs,
        deps = deps + ["//tests:testing"],
        data = data,
        size = size,
        tags = tags,
        **kwargs
    )

def kiln_gpu_test(name, srcs, deps = [], size = "medium", **kwargs):
    """A [gpu] test twice: on the CUDA backend, and on the kernel emulation.

    `name` links //kernels/cuda (its [gpu] cases skip with the driver's reason without a device);
    `name` with `_test` replaced by `_emulated_test` links //kernels/cuda:cuda_emulated
    (kernels/cuda/emulation), which runs the same cases on the CPU here. `deps` leaves the CUDA
    library out: each variant adds its own.
    """
    kiln_test(
        name = name,
        srcs = srcs,
        deps = deps + ["//kernels/cuda"],
        size = size,
        tags = ["gpu"],
        **kwargs
    )
    kiln_test(
        name = name.replace("_test", "_emulated_test"),
        srcs = srcs,
        deps = deps + ["//kernels/cuda:cuda_emulated"],
        size = "large",
        linkstatic = True,  # the emulation's AddressSanitizer options must be in the executable
        tags = ["emulated"],
        **kwargs
    )
