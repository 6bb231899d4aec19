#!/usr/bin/env bash
# Build mmcv 2.1.0 with its compiled ops (mmcv._ext) into a wheel in WHEEL_DIR (the cache).
#
# Why a script of its own:
#  * mmcv must be built against the torch that is installed, so it needs
#    --no-build-isolation (an isolated build has no torch, silently drops the ops, and pip then
#    caches that broken wheel);
#  * torch 2.14's headers need C++20 but mmcv 2.1.0's setup.py hard-codes -std=c++17;
#  * mmcv 2.1.0's setup.py imports pkg_resources: setuptools >=77,<81 (constraints.txt).
# Usage: build_mmcv.sh WHEEL_DIR PYTHON [CONSTRAINTS]
#   MMCV_CUDA=1  also build the CUDA ops (needs nvcc; TORCH_CUDA_ARCH_LIST names the GPU
#                architectures); default 0 = CPU ops only, with GPUs hidden from the build so
#                the result does not depend on the machine.
#   MAX_JOBS     parallel compile jobs (default: nproc).
# Progress: one line per compiled file ("[k/N] file"); the whole compiler output goes to a log
# whose last lines are shown if the build fails.
# Called by tools/install/setup_env.sh; run it by hand only to rebuild the cached wheel.
set -euo pipefail
wheel_dir=$1
py=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
constraints=${3:-$root/requirements/constraints.txt}
version=2.1.0
work=$(mktemp -d "${TMPDIR:-/tmp}/dat_mm_mmcv.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

"$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    -c "$constraints" "mmcv==$version" -d "$work"
tar -xzf "$work/mmcv-$version.tar.gz" -C "$work"
src="$work/mmcv-$version"
grep -q "'-std=c++17'" "$src/setup.py" || { echo "build_mmcv: setup.py has no -std=c++17 flag to patch" >&2; exit 1; }
sed -i "s/'-std=c++17'/'-std=c++20'/g" "$src/setup.py"

if [[ ${MMCV_CUDA:-0} == 1 ]]; then
    # torch's CUDA headers include the CUDA libraries' headers (cusparse.h, cublas_v2.h, ...),
    # which a compiler-only CUDA toolkit lacks and the pip wheels torch depends on
    # (site-packages/nvidia/*/include) have: they go after the toolkit's own include dirs.
    nv_include=$("$py" -c 'import glob, os, sysconfig
print(":".join(sorted(glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*",
                                             "include")))))')
    cuda_env=(FORCE_CUDA=1 "CPATH=${CPATH:+$CPATH:}$nv_include")
else
    # mmcv's setup.py builds CUDA ops whenever torch sees a GPU: hide it for a CPU build.
    cuda_env=(-u FORCE_CUDA CUDA_VISIBLE_DEVICES=)
fi
# The venv's bin first: torch builds with ninja (parallel) only if it finds it on PATH.
log=$work/build.log
progress() {   # ninja's "[k/N] <compiler> ... -c <source> ..." lines -> "[k/N] <source>"
    local line
    while IFS= read -r line; do
        if [[ $line =~ ^\[([0-9]+/[0-9]+)\]\ .*\ -c\ ([^ ]+) ]]; then
            printf '[build_mmcv %5ds] %s %s\n' "$((SECONDS - start))" "${BASH_REMATCH[1]}" \
                "${BASH_REMATCH[2]##*/}" >&2
        fi
    done
}
echo "build_mmcv: compiling mmcv $version ops ($([[ ${MMCV_CUDA:-0} == 1 ]] \
    && echo "CUDA, arch ${TORCH_CUDA_ARCH_LIST:-default}" || echo CPU)); log: $log" >&2
if ! env "${cuda_env[@]}" PATH="$(dirname "$py"):$PATH" MMCV_WITH_OPS=1 \
        MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$py" -m pip wheel -v --no-deps --no-build-isolation \
        --no-cache-dir "$src" -w "$work/dist" 2>&1 | tee "$log" | progress; then
    tail -n 60 "$log" >&2
    echo "build_mmcv: the build failed (last lines above)" >&2
    exit 1
fi

# A wheel without the compiled ops is exactly the failure this script exists to prevent.
# (Checked in Python: `zipfile -l | grep -q` fails under pipefail when grep exits early.)
has_ops() {
    "$py" -c 'import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if any(n.startswith("mmcv/_ext.") and n.endswith(".so") for n in names) else 1)' "$1"
}
for whl in "$work"/dist/mmcv-"$version"-*.whl; do
    has_ops "$whl" || { echo "build_mmcv: $whl has no mmcv/_ext (ops were not compiled)" >&2; exit 1; }
done
mkdir -p "$wheel_dir"
# Move into place atomically so an interrupted build never leaves a half-written wheel.
for whl in "$work"/dist/mmcv-"$version"-*.whl; do
    cp "$whl" "$wheel_dir/.tmp.$(basename "$whl")"
    mv "$wheel_dir/.tmp.$(basename "$whl")" "$wheel_dir/$(basename "$whl")"
done
echo "build_mmcv: built mmcv $version with ops in $((SECONDS - start)) s -> $wheel_dir" >&2
