#!/usr/bin/env bash
# Compile every csrc/cuda/*.cu with nvcc for sm_80 and sm_90 (docs/design.md "CUDA sources must
# compile without a CUDA build of torch"): CI has nvcc but no GPU and a CPU-only torch,
# so this is how the CUDA kernels are checked there. Then syntax-check the torch glue
# csrc/bindings/cuda*.cpp against the CPU torch's c10/cuda headers.
#
# nvcc is taken from $NVCC, else PATH, else $CUDA_HOME/bin. Without it the script fails,
# unless FASTLOCAL_SKIP_NVCC=1 says that skipping is intended.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

NVCC="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$NVCC" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then
  NVCC="$CUDA_HOME/bin/nvcc"
fi
if [[ -z "$NVCC" ]]; then
  if [[ "${FASTLOCAL_SKIP_NVCC:-0}" == "1" ]]; then
    echo "compile_cuda: nvcc not found; skipped (FASTLOCAL_SKIP_NVCC=1)"
    exit 0
  fi
  echo "compile_cuda: ERROR: nvcc not found (not on PATH, no \$CUDA_HOME/bin/nvcc)." >&2
  echo "compile_cuda: install the CUDA toolkit, or set FASTLOCAL_SKIP_NVCC=1 to skip on purpose." >&2
  exit 1
fi

shopt -s nullglob
sources=(csrc/cuda/*.cu)
if ((${#sources[@]} == 0)); then
  echo "compile_cuda: ERROR: no csrc/cuda/*.cu found" >&2
  exit 1
fi

include_list="$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print('\\n'.join(include_paths()))")"
mapfile -t torch_include_dirs <<<"$include_list"
torch_includes=() torch_system_includes=()
for dir in "${torch_include_dirs[@]}"; do
  torch_includes+=("-I$dir")
  torch_system_includes+=(-isystem "$dir")  # no warnings from torch's own headers
done

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
failed=0

# run LABEL DETAIL COMMAND...: one summary line, then the compiler's output if it said anything.
run() {
  local label="$1" detail="$2" log="$workdir/log" start=$SECONDS status="ok  " note=""
  shift 2
  if ! "$@" >"$log" 2>&1; then
    status="FAIL"
    failed=1
  fi
  if [[ -s "$log" ]]; then note=", compiler output below"; fi
  echo "compile_cuda: $status $label ($detail, $((SECONDS - start))s$note)"
  if [[ -s "$log" ]]; then sed 's/^/    /' "$log"; fi
}

echo "compile_cuda: $NVCC: $("$NVCC" --version | tail -n 1)"
for src in "${sources[@]}"; do
  run "$src" "nvcc, sm_80 + sm_90" "$NVCC" -c -std=c++17 -O3 \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -I csrc/cuda "${torch_includes[@]}" "$src" -o "$workdir/$(basename "$src" .cu).o"
done

# The glue includes the c10/cuda headers; a CPU torch ships them but not the generated
# cuda_cmake_macros.h, which C10_CUDA_NO_CMAKE_CONFIGURE_FILE tells them to skip. nvcc
# hands a .cpp to the host compiler with the CUDA include path added. This checks the
# names, types and template instantiations of the glue; linking it needs a CUDA torch.
python_include="$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")"
for glue in csrc/bindings/cuda*.cpp; do
  run "$glue" "host compiler -fsyntax-only via nvcc, against this torch's headers" \
    "$NVCC" -c -std=c++17 -Xcompiler -fsyntax-only,-Wall \
    -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -DTORCH_EXTENSION_NAME=_C_cuda -DTORCH_API_INCLUDE_EXTENSION_H \
    "${torch_system_includes[@]}" -isystem "$python_include" \
    "$glue" -o "$workdir/$(basename "$glue" .cpp).o"
done

exit "$failed"
