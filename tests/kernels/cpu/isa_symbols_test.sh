#!/bin/bash
# Checks Note [One body, three ISAs] (kernels/cpu/vec/vec.h) on the built per-ISA libraries: the
# AVX-512 and AVX2 kernel bodies must not define any weak (COMDAT) symbol outside their own
# namespace, since the linker could pick such a copy — with AVX-512 or AVX2 instructions in it —
# for callers on any CPU. Arguments: the libraries' files (Bazel passes .a and .so).
set -euo pipefail
failed=0
checked=0
for lib in "$@"; do
  case "$lib" in
    *avx512*) ns=avx512 ;;
    *avx2*) ns=avx2 ;;
    *) continue ;;
  esac
  case "$lib" in *.a | *.so) ;; *) continue ;; esac
  checked=$((checked + 1))
  leaked=$(nm -C --defined-only "$lib" 2>/dev/null | awk '$2 ~ /^[WVu]$/' |
    grep -v "kiln::kernels::cpu::$ns::" | grep -v "DW.ref.__gxx_personality_v0" || true)
  if [[ -n "$leaked" ]]; then
    echo "FAILED: $lib defines weak symbols outside kiln::kernels::cpu::$ns:"
    echo "$leaked"
    failed=1
  fi
done
if [[ $checked -eq 0 ]]; then
  echo "FAILED: no AVX-512 or AVX2 library was given"
  failed=1
fi
echo "checked $checked libraries"
if [[ $failed -eq 0 ]]; then
  echo "KILN_TEST_SUMMARY passed=1 failed=0 skipped=0"
else
  echo "KILN_TEST_SUMMARY passed=0 failed=1 skipped=0"
fi
exit $failed
