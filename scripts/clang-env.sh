# Sourced by scripts/test.sh and tests/fuzz/run.sh (both build with clang 16 and run
# sanitizer builds).
#
# zuma_llvm_symbolizer CXX: prints the llvm-symbolizer that sanitizer reports should use
# (function names and lines in their stacks): the one of CXX's own LLVM, else
# llvm-symbolizer-16, else llvm-symbolizer. Returns 1 if there is none.
zuma_llvm_symbolizer() {
  local cxx s
  cxx=$(command -v "$1") || cxx=""
  for s in ${cxx:+"$(dirname "$(readlink -f "$cxx")")/llvm-symbolizer"} \
           "$(command -v llvm-symbolizer-16 || true)" "$(command -v llvm-symbolizer || true)"; do
    if [[ -n $s && -x $s ]]; then
      printf '%s\n' "$s"
      return 0
    fi
  done
  return 1
}
