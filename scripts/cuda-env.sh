# scripts/cuda-env.sh -- build pretext with `--features cuda` on a machine with no GPU and no
# system CUDA toolkit, from NVIDIA's CUDA 13.0 PyPI wheels (and the system gcc).
#
#   source scripts/cuda-env.sh
#   CARGO_TARGET_DIR=$HOME/.cache/pretext-cuda/target cargo build --release --features cuda
#   # -> $HOME/.cache/pretext-cuda/target/release/pretext, for scripts/gpu-smoke.sh on a GPU machine
#
# A separate target directory keeps the CPU build's artifacts (and its `pretext` binary) apart.
# The wheels take about 1.2 GB unpacked in $CUDA_BUILD_DIR (24 s to install here). A cold release
# build of pretext with `--features cuda` took 80 minutes of wall time on 2 cores shared with a
# test run (120 CPU-minutes; candle's kernels in nvcc are a small part, the rest is the whole
# dependency tree built in release); an idle machine and a warm target directory take far less.
# CUDA_COMPUTE_CAP (default 90: H100 / H200) picks the GPU architecture the kernels are built for.
#
# At run time the binary needs the NVIDIA driver (libcuda.so.1) and the CUDA 13 libraries it was
# linked against (its DT_NEEDED, checked with `readelf -d` on a build made here on 2026-11-26):
# libcudart.so.13, libcublas.so.13 (which loads libcublasLt.so.13) and libcurand.so.10. cudarc
# links them dynamically; the loader finds them through LD_LIBRARY_PATH, e.g. `$CUDA_HOME/lib`
# of this script, or the `nvidia/cu13/lib` folder of a CUDA 13 PyTorch. A cuda binary does not
# start without a driver ("libcuda.so.1: cannot open shared object file"), so the default build
# stays CPU-only.
#
# Why exactly these wheels:
#  * No CUDA-12 wheel ships nvcc: nvidia-cuda-nvcc-cu12 (12.1 .. 12.9.86) holds only
#    ptxas, libnvvm and headers.  The unsuffixed nvidia-cuda-nvcc 13.x has the full driver
#    (nvcc, cicc, cudafe++, fatbinary, nvlink, nvcc.profile).
#  * candle-kernels embeds PTX that the DRIVER JIT-compiles when the program runs.
#    nvcc 13.0 writes `.version 9.0` PTX, the newest ISA that driver 580 accepts; a
#    newer nvcc (13.1 .. 13.5) writes a newer ISA -> CUDA_ERROR_UNSUPPORTED_PTX_VERSION
#    on that driver.
#  * cudarc 0.19 (feature `cuda-version-from-build-system`, pinned by candle) parses
#    `nvcc --version` and knows 11.4 .. 13.4 only; 13.5 would panic without
#    CUDARC_CUDA_VERSION.
#  * cudarc is built with `dynamic-linking` (pinned by candle), so the binary records
#    DT_NEEDED libcublas.so.13 / libcudart.so.13 / libcurand.so.10 / libcuda.so.1:
#    the CUDA major version must match the libraries on the machine that runs it.

CUDA_BUILD_DIR=${CUDA_BUILD_DIR:-$HOME/.cache/pretext-cuda}
_CUDA_PIP_DIR="$CUDA_BUILD_DIR/cu13"
# All CUDA-13 wheels unpack into ONE prefix, <target>/nvidia/cu13/{bin,include,lib,nvvm},
# which is laid out like a toolkit root (nvcc.profile: TOP = bin/..).
export CUDA_HOME="$_CUDA_PIP_DIR/nvidia/cu13"

# 1. wheels (~1.2 GB unpacked; --no-deps = exactly these eight)
if [ ! -f "$_CUDA_PIP_DIR/.done" ]; then
  python3 -m pip install -q --no-deps --target "$_CUDA_PIP_DIR" \
      nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
      nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88 \
    && touch "$_CUDA_PIP_DIR/.done" \
    || { echo "cuda-env.sh: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
fi

# 2. link-time shims, as a real toolkit has them.  The wheels ship only versioned
#    sonames (libcublas.so.13) and no libcuda at all, but the final link gets
#    -lcuda -lcublas -lcublasLt -lcurand -lnvrtc (cudarc, dynamic-linking) and -lcudart
#    (candle-kernels' build.rs, for its static libmoe.a).
_CUDA_LIB="$CUDA_HOME/lib"
for _so in "$_CUDA_LIB"/libcudart.so.* "$_CUDA_LIB"/libcublas.so.* "$_CUDA_LIB"/libcublasLt.so.* \
           "$_CUDA_LIB"/libcurand.so.* "$_CUDA_LIB"/libnvrtc.so.*; do
  [ -e "$_so" ] || continue
  _base=${_so##*/}; _base=${_base%%.so.*}.so
  [ -e "$_CUDA_LIB/$_base" ] || ln -s "${_so##*/}" "$_CUDA_LIB/$_base"
done
if [ ! -f "$_CUDA_LIB/stubs/libcuda.so" ]; then
  mkdir -p "$_CUDA_LIB/stubs"
  # One dummy function per driver-API entry point: every name cuda.h declares (after its
  # cuFoo -> cuFoo_v2 macro renaming), the profiler API, plus every cu* name in cudarc's
  # driver bindings if they are already in the cargo registry (after `cargo fetch`).
  # soname libcuda.so.1, like the real driver, so at run time the driver's own
  # libcuda.so.1 is loaded.  Each stub returns 100 = CUDA_ERROR_NO_DEVICE (this only
  # matters if the stub is ever loaded, e.g. to start a cuda binary on a GPU-less CI box).
  { printf '#include <cuda.h>\n' | gcc -E -P -I"$CUDA_HOME/include" -x c - \
      | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t'
    printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop
    cat "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs 2>/dev/null \
      | grep -oE 'fn cu[A-Z][A-Za-z0-9_]*\(' | sed 's/^fn //; s/($//'
  } | sort -u | awk '{print "int " $1 "(void){return 100;}"}' > "$_CUDA_LIB/stubs/libcuda_stub.c"
  gcc -shared -fPIC -o "$_CUDA_LIB/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 \
      "$_CUDA_LIB/stubs/libcuda_stub.c" \
    || { echo "cuda-env.sh: libcuda stub build failed" >&2; return 1 2>/dev/null || exit 1; }
fi

# 3. environment
export PATH="$CUDA_HOME/bin:$PATH"      # cudarc's build.rs runs plain `nvcc --version` (PATH)
export NVCC="$CUDA_HOME/bin/nvcc"       # cudaforge (candle-kernels' build helper): $NVCC, then PATH
export CUDA_PATH="$CUDA_HOME"            # cudarc link-search roots: CUDA_HOME / CUDA_PATH / CUDA_ROOT /
export CUDA_ROOT="$CUDA_HOME"            #   CUDA_TOOLKIT_ROOT_DIR -> <root>/lib and <root>/lib/stubs
export CUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"  # no nvidia-smi here; 90 (H100/H200) -> sm_90a; 80 for A100
# cuda_runtime.h, cuda_fp16.h, cuda_bf16.h live in $CUDA_HOME/include, which nvcc.profile
# already passes (-I$(TOP)/include, -isystem $(TOP)/include/cccl).  These two are for
# gcc/cc-rs/bindgen users and as a second route for the linker:
export CPATH="$CUDA_HOME/include${CPATH:+:$CPATH}"
export LIBRARY_PATH="$_CUDA_LIB:$_CUDA_LIB/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
# Host compiler: Debian 12's gcc 12 is supported by CUDA 13.0, so NVCC_CCBIN stays unset.
# (With a too-new gcc: NVCC_CCBIN=g++-12; cudaforge then adds -allow-unsupported-compiler.)
# Optional: CUDAFORGE_THREADS=N = parallel nvcc jobs in candle-kernels' build script
# (default: half the cores, i.e. 1 on a 2-core machine).
unset _CUDA_PIP_DIR _CUDA_LIB _so _base
