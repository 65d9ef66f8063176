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
