"""kiln_test: a Catch2 test linked with the shared main (tests/catch_main.cc)."""

load("//third_party:cuda.bzl", "EMULATED_TWINS")

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

def kiln_gpu_test(name, srcs, deps = [], size = "medium", copts = [], **kwargs):
    """A [gpu] test twice: on the CUDA backend, and on the kernel emulation.

    `name` links //kernels/cuda (its [gpu] cases skip with the driver's reason without a device);
    `name` with `_test` replaced by `_emulated_test` links //kernels/cuda:cuda_emulated and the
    emulated twin of every dependency that has one (EMULATED_TWINS in third_party/cuda.bzl), and
    is compiled with KILN_ON_KERNEL_EMULATION; it runs the same cases on the CPU here, with
    deferred streams (Note [Deferred streams] in kernels/cuda/emulation/streams.h), so that work
    read before it was waited for, or streams ordered without events, give wrong results. `deps`
    leaves the CUDA library out: each variant adds its own.
    """
    kiln_test(
        name = name,
        srcs = srcs,
        deps = deps + ["//kernels/cuda"],
        size = size,
        copts = copts,
        tags = ["gpu"],
        **kwargs
    )
    kiln_test(
        name = name.replace("_test", "_emulated_test"),
        srcs = srcs,
        deps = [EMULATED_TWINS.get(d, d) for d in deps] + ["//kernels/cuda:cuda_emulated"],
        size = "large",
        copts = copts + ["-DKILN_ON_KERNEL_EMULATION=1"],
        linkstatic = True,  # the emulation's AddressSanitizer options must be in the executable
        tags = ["emulated"],
        env = {"KILN_EMULATED_STREAMS": "deferred"},
        **kwargs
    )
