#!/usr/bin/env bash
# Build mmcv 2.1.0 with its compiled ops (mmcv._ext) into a wheel in $1 (the wheel cache).
#
# Why a script of its own:
#  * mmcv must be built against the torch that is installed, so it needs
#    --no-build-isolation (an isolated build has no torch, silently drops the ops, and pip then
#    caches that broken wheel);
#  * torch 2.14's headers need C++20 but mmcv 2.1.0's setup.py hard-codes -std=c++17.
# Usage: build_mmcv.sh WHEEL_DIR PYTHON
set -euo pipefail
wheel_dir=$1
py=$2
version=2.1.0
work=$(mktemp -d "${TMPDIR:-/tmp}/dat_mm_mmcv.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$version" -d "$work"
tar -xzf "$work/mmcv-$version.tar.gz" -C "$work"
src="$work/mmcv-$version"
grep -q "'-std=c++17'" "$src/setup.py" || { echo "build_mmcv: setup.py has no -std=c++17 flag to patch" >&2; exit 1; }
sed -i "s/'-std=c++17'/'-std=c++20'/g" "$src/setup.py"

# CPU build of the ops (FORCE_CUDA unset, no GPU here); ninja compiles on all cores.
env -u FORCE_CUDA MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "$py" -m pip wheel -q --no-deps --no-build-isolation --no-cache-dir "$src" -w "$work/dist"
mkdir -p "$wheel_dir"
# Move into place atomically so an interrupted build never leaves a half-written wheel.
for whl in "$work"/dist/mmcv-"$version"-*.whl; do
    cp "$whl" "$wheel_dir/.tmp.$(basename "$whl")"
    mv "$wheel_dir/.tmp.$(basename "$whl")" "$wheel_dir/$(basename "$whl")"
done
