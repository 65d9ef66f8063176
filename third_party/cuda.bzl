"""kiln_cuda_library: .cu files compiled by nvcc in a genrule, linked through a cc_library.

Every .cu file becomes one object (sm_80 and sm_90 machine code; files listed in `sm90a_srcs` get
sm_90a instead of sm_90, for Hopper-only instructions) and ptxas's resource report for it
(registers, spills, stack, shared memory of every kernel on every architecture; the
`<name>_ptxas_reports` filegroup, checked by tests/kernels/cuda:kernel_resources_test). The objects, the host `srcs` and the CUDA
libraries form one cc_library. With `--config=nocuda` (the //:cuda_off setting) the library is
built from `nocuda_srcs` alone and nothing touches the toolkit, so a machine without CUDA builds.
Each library also has a test-only `<name>_emulated` twin: the same sources with the .cu files
compiled as C++ for the kernel emulation (kernels/cuda/emulation), which runs them on the CPU.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "-DNDEBUG",
    "-Xcompiler",
    "-fPIC",
    "--expt-relaxed-constexpr",
    "-I.",
    "-gencode=arch=compute_80,code=sm_80",
]

SM90 = ["-gencode=arch=compute_90,code=sm_90"]
SM90A = ["-gencode=arch=compute_90a,code=sm_90a"]

# The kernel emulation's build (Note [Kernel emulation], kernels/cuda/emulation): the .cu files as
# C++ with KILN_CUDA_EMULATION, under AddressSanitizer.
EMULATION_COPTS = [
    "-DKILN_CUDA_EMULATION",
    "-Wno-unknown-pragmas",
    "-fsanitize=address",
    "-fno-omit-frame-pointer",
]
EMULATION_LINKOPTS = ["-fsanitize=address"]

def _object_name(name, src):
    return "_nvcc/%s/%s" % (name, src.replace(".cu", ".o"))

def _report_name(name, src):
    return "_nvcc/%s/%s" % (name, src.replace(".cu", ".ptxas.txt"))

def kiln_cuda_library(
        name,
        cu_srcs = [],
        cu_hdrs = [],
        sm90a_srcs = [],
        srcs = [],
        hdrs = [],
        deps = [],
        cuda_deps = [],
        nocuda_srcs = [],
        nocuda_deps = [],
        emulated_cuda_deps = [],
        copts = [],
        alwayslink = False,
        visibility = None):
    """A cc_library holding nvcc-compiled objects (default) or the no-CUDA fallback.

    Args:
      name: the cc_library's name.
      cu_srcs: .cu files, one object each.
      cu_hdrs: headers the .cu files include (workspace-relative includes).
      sm90a_srcs: the subset of cu_srcs compiled for sm_90a instead of sm_90.
      srcs: host C++ sources of the CUDA build (may include CUDA runtime headers).
      hdrs: public headers (both builds).
      deps: dependencies of both builds.
      cuda_deps: dependencies of the CUDA build only (@local_cuda//:cudart, ...).
      nocuda_srcs: sources of the build without CUDA.
      nocuda_deps: dependencies of the build without CUDA.
      emulated_cuda_deps: the cuda_deps the `_emulated` twin keeps (libraries the emulation does
        not answer, such as NCCL; the CUDA runtime and cuBLASLt it does).
      copts: C++ options for the host sources.
      alwayslink: as cc_library (needed for static registrations).
      visibility: as cc_library.
    """
    objects = []
    reports = []
    for src in cu_srcs:
        out = _object_name(name, src)
        report = _report_name(name, src)
        arch = SM90A if src in sm90a_srcs else SM90

        # ptxas -v writes its report to stderr, with the compiler's own messages: on failure the
        # whole file is shown, on success the lines that are not the report (warnings).
        native.genrule(
            name = "%s_nvcc_%s" % (name, src.replace("/", "_").replace(".", "_")),
            srcs = [src] + cu_hdrs,
            outs = [out, report],
            cmd = select({
                "//:cuda_off": "echo 'built without CUDA' >&2; exit 1",
                "//conditions:default": " ".join(
                    [NVCC, "-c", "$(location %s)" % src, "-o", "$(location %s)" % out] +
                    NVCC_FLAGS + arch +
                    ["-Xptxas", "-v", "2>$(location %s)" % report] +
                    ["|| { cat $(location %s) >&2; exit 1; };" % report] +
                    ["grep -v -E '^(ptxas info|    [0-9]+ bytes stack frame)' $(location %s) >&2" % report] +
                    ["|| true"],
                ),
            }),
            tags = ["manual"],
            visibility = ["//visibility:private"],
        )
        objects.append(out)
        reports.append(report)
    native.filegroup(
        name = name + "_ptxas_reports",
        srcs = select({
            "//:cuda_off": [],
            "//conditions:default": reports,
        }),
        visibility = visibility,
    )
    native.cc_library(
        name = name,
        srcs = select({
            "//:cuda_off": nocuda_srcs,
            "//conditions:default": objects + srcs,
        }),
        hdrs = hdrs,
        copts = copts,
        deps = deps + select({
            "//:cuda_off": nocuda_deps,
            "//conditions:default": cuda_deps,
        }),
        alwayslink = alwayslink,
        visibility = visibility,
    )

    # `<name>_emulated`: the same library on the kernel emulation (test-only). The .cu files are
    # copied to .cc and compiled as C++; the CUDA libraries are replaced by the emulation's.
    emulated_srcs = []
    for src in cu_srcs:
        out = "_emulated/%s/%s" % (name, src.replace(".cu", "_emulated.cc"))
        native.genrule(
            name = "%s_emulated_%s" % (name, src.replace("/", "_").replace(".", "_")),
            srcs = [src],
            outs = [out],
            cmd = "cp $< $@",
            visibility = ["//visibility:private"],
        )
        emulated_srcs.append(out)
    native.cc_library(
        name = name + "_emulated",
        testonly = True,
        srcs = select({
            "//:cuda_off": nocuda_srcs,
            "//conditions:default": emulated_srcs + srcs,
        }),
        hdrs = hdrs,
        textual_hdrs = select({
            "//:cuda_off": [],
            "//conditions:default": cu_hdrs,
        }),
        copts = copts + select({
            "//:cuda_off": [],
            "//conditions:default": EMULATION_COPTS,
        }),
        deps = deps + select({
            "//:cuda_off": nocuda_deps,
            "//conditions:default": [
                "//kernels/cuda/emulation",
                "@local_cuda//:headers",
            ] + emulated_cuda_deps,
        }),
        alwayslink = alwayslink,
        visibility = visibility,
    )

# The CUDA libraries and their users that have `_emulated` twins (kiln_cuda_user).
EMULATED_TWINS = {
    "//engine/dist:communicator": "//engine/dist:communicator_emulated",
    "//engine/dist:zero": "//engine/dist:zero_emulated",
    "//kernels/cuda": "//kernels/cuda:cuda_emulated",
    "//engine/train": "//engine/train:train_emulated",
}

def kiln_cuda_user(rule, name, deps = [], **kwargs):
    """`rule` (native.cc_library or native.cc_binary) twice: as given, and a test-only twin.

    The twin is named `<name>_emulated` (`<name>-emulated` for names with dashes) and takes the
    `_emulated` twin of every dependency in EMULATED_TWINS, so that code above the CUDA backend
    (the trainer, kiln-train) runs on the kernel emulation in tests.
    """
    rule(name = name, deps = deps, **kwargs)
    twin = name + ("-emulated" if "-" in name else "_emulated")
    rule(
        name = twin,
        deps = [EMULATED_TWINS.get(d, d) for d in deps],
        testonly = True,
        **kwargs
    )
