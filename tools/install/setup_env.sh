#!/usr/bin/env bash
# One-shot, idempotent install of dat_mm and the OpenMMLab 2.0 stack into a virtualenv.
#
# Needs: Python >= 3.9 (3.11 tested) with venv + pip, a C++ compiler (g++ >= 10), network
# access to a package index. Everything else is installed here.
#
#   bash tools/install/setup_env.sh
#
# Environment (all optional):
#   DAT_MM_VENV     the virtualenv (default: <checkout>/.venv); every README command uses it
#   DAT_MM_PYTHON   interpreter used to create it (default: python3.11, else python3)
#   DAT_MM_CACHE    cache outside the checkout for the built mmcv wheel
#                   (default: ${XDG_CACHE_HOME:-~/.cache}/dat_mm)
#   DAT_MM_MMCV_CUDA    1: build mmcv's CUDA ops, 0: CPU ops only; unset: CUDA ops when the
#                   machine has a usable NVIDIA GPU (tools/install/cuda_plan.py decides and
#                   checks nvcc and the driver before anything is built)
#   TORCH_CUDA_ARCH_LIST  GPU architectures of a CUDA build (default: the visible GPUs')
#   DAT_MM_FORCE=1  ignore the stamp and redo every step (the installer skips what is there)
#   DAT_MM_INSTALLER=pip  install with pip instead of uv (default: uv, itself installed into
#                   the venv by pip; pip is used when uv cannot be installed)
#
# Installer: uv (from PyPI, pinned in constraints.txt) keeps unpacked wheels in its cache
# (~/.cache/uv) and hard-links them into the venv, so a new checkout's venv with torch's
# 5.5 GB of CUDA-build files takes seconds instead of pip's minute of unzipping. uv does not
# read pip's config: PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_FIND_LINKS and the
# index-url / extra-index-url / find-links of `pip config` are passed on to it (UV_*, unless
# set). Every install uses -c requirements/constraints.txt, so no dependency can replace torch
# or move numpy. mmcv is only ever installed from the wheel that tools/install/build_mmcv.sh
# built (--only-binary mmcv --find-links <cache>): neither installer builds it from the sdist
# (an isolated build silently has no ops, and pip would cache that broken wheel).
# A stamp in the venv (hash of the requirement files and these scripts) makes a second run
# take seconds: it only re-runs tools/install/check_env.py.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${DAT_MM_VENV:-$root/.venv}
cache=${DAT_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dat_mm}
constraints=$root/requirements/constraints.txt
stamp=$venv/.dat_mm_setup.stamp

t0=$SECONDS
log() { printf '[setup_env %4ds] %s\n' "$((SECONDS - t0))" "$*" >&2; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

# --- interpreter ------------------------------------------------------------------------
if [[ -n ${DAT_MM_PYTHON:-} ]]; then
    base_py=$DAT_MM_PYTHON
elif command -v python3.11 >/dev/null 2>&1 && python3.11 -c '' >/dev/null 2>&1; then
    base_py=python3.11
else
    base_py=python3
fi

# --- fast path: nothing changed since the last successful run ----------------------------
fingerprint() {
    {
        cat "$root"/requirements/*.txt "$root/setup.py" "$root/pyproject.toml" \
            "$root"/tools/install/setup_env.sh "$root"/tools/install/build_mmcv.sh \
            "$root"/tools/install/uv_index.sh \
            "$root"/tools/install/check_env.py "$root"/tools/install/cuda_plan.py \
            2>/dev/null || true
        echo "venv=$venv cuda=${DAT_MM_MMCV_CUDA:-auto} arch=${TORCH_CUDA_ARCH_LIST:-}"
        # a GPU that appears or goes away changes the mmcv build
        command -v nvidia-smi >/dev/null 2>&1 \
            && nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null
        "$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}
py=$venv/bin/python
if [[ -z ${DAT_MM_FORCE:-} && -x $py && -f $stamp && "$(cat "$stamp")" == "$(fingerprint)" ]]; then
    log "environment $venv is up to date (stamp matches); checking it"
    if "$py" "$root/tools/install/check_env.py"; then
        log "ready in $((SECONDS - t0)) s: $venv"
        exit 0
    fi
    log "check failed although the stamp matched: reinstalling"
    rm -f "$stamp"
fi

# --- virtualenv ---------------------------------------------------------------------------
"$base_py" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' 2>/dev/null \
    || die "$base_py is missing or older than Python 3.9 (set DAT_MM_PYTHON)"
if [[ ! -x $py ]]; then
    log "creating virtualenv $venv with $base_py"
    "$base_py" -m venv "$venv" || die "could not create $venv (is the python venv module installed?)"
fi
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
    || die "no C++ compiler found (install g++): mmcv's ops are compiled from source"

pipi() { "$py" -m pip install --disable-pip-version-check -c "$constraints" "$@"; }

# --- installer: uv when it can be had, else pip ---------------------------------------------
# pip's index settings passed on to uv (tools/install/uv_index.sh)
source "$root/tools/install/uv_index.sh"
use_uv() {
    local uv_ver
    uv_ver=$(sed -n -E 's/^uv==([^ #]+).*/\1/p' "$constraints")
    [[ -x $venv/bin/uv && "$("$venv/bin/uv" --version 2>/dev/null)" == "uv $uv_ver"* ]] \
        || pipi -q "uv==$uv_ver" || return 1
    pass_pip_index_to_uv
}
installer=${DAT_MM_INSTALLER:-uv}
[[ $installer == uv || $installer == pip ]] || die "DAT_MM_INSTALLER must be uv or pip, not '$installer'"
if [[ $installer == uv ]] && ! use_uv; then
    log "could not install uv into $venv: installing with pip"
    installer=pip
fi
install() {
    if [[ $installer == uv ]]; then
        "$venv/bin/uv" pip install --python "$py" -c "$constraints" "$@" \
            || die "uv could not install $* (see above); DAT_MM_INSTALLER=pip uses pip"
    else
        pipi "$@"
    fi
}
log "installer: $installer"

# --- build tools, torch, numpy (pinned in constraints.txt) ---------------------------------
log "installing build tools, torch, torchvision, numpy"
install -r "$root/requirements/build.txt" -r "$root/requirements/runtime.txt" torchvision

# --- mmcv with ops: cached wheel or a fresh build ----------------------------------------
read -r torch_ver py_tag < <("$py" -c 'import sys, torch; print(torch.__version__, "cp%d%d" % sys.version_info[:2])')
# CPU or CUDA ops, and for which GPUs: decided and checked (nvcc, driver) before any build
plan=$("$py" "$root/tools/install/cuda_plan.py") \
    || die "mmcv's ops cannot be built as this machine needs (see the message above)"
variant=cpu arch='' tag=cpu
while IFS='=' read -r key value; do
    case $key in variant) variant=$value ;; arch) arch=$value ;; tag) tag=$value ;; esac
done <<<"$plan"
log "mmcv ops: $variant${arch:+ (arch $arch)}"
wheel_dir=$cache/wheels/torch-${torch_ver}-${py_tag}-${tag}
if ! compgen -G "$wheel_dir/mmcv-2.1.0-*.whl" >/dev/null; then
    log "no cached mmcv wheel in $wheel_dir: building mmcv 2.1.0 with ops (takes a while)"
    MMCV_CUDA=$([[ $variant == cuda ]] && echo 1 || echo 0) TORCH_CUDA_ARCH_LIST=$arch \
        bash "$root/tools/install/build_mmcv.sh" "$wheel_dir" "$py" "$constraints" \
        || die "building mmcv failed (see the compiler output above)"
else
    log "reusing cached mmcv wheel from $wheel_dir"
fi

# --- the OpenMMLab stack, test tools, dat_mm itself --------------------------------------
log "installing mmengine, mmcv (cached wheel), mmdet, mmsegmentation, mmpretrain, test tools"
install --only-binary mmcv --find-links "$wheel_dir" \
    -r "$root/requirements/runtime.txt" -r "$root/requirements/openmmlab.txt" \
    -r "$root/requirements/tests.txt"
log "installing dat_mm (editable)"
install --no-deps --no-build-isolation -e "$root"

# uv links source files only; pip byte-compiles what it installs. Compile once here, so that
# no process has to (with PYTHONDONTWRITEBYTECODE set, every process would, every time).
if [[ $installer == uv ]]; then
    log "byte-compiling the venv's site-packages"
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # (a few files written for newer Pythons, e.g. torch's py312 test helpers, do not compile;
    # they stay source, as pip leaves them)
    "$py" -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
fi

# --- verify ------------------------------------------------------------------------------
"$py" "$root/tools/install/check_env.py" \
    || die "environment check failed (see above); nothing was stamped"
fingerprint >"$stamp"
log "done in $((SECONDS - t0)) s: $venv"
