#!/usr/bin/env bash
# The GPU acceptance run (benchmarks/gpu_acceptance.py) on a machine that has PyTorch but none
# of the OpenMMLab packages. Where mmengine is missing, installs the pure-Python wheels carried
# in .whl/ (made by benchmarks/prepare_gpu_wheels.sh) into work_dirs/gpu_acceptance_site
# (DAT_MM_WHEEL_SITE names another folder); puts the repository and that folder on
# PYTHONPATH and runs the script, its output also in log.txt next to the tables. Tables go to
# $OUT (the device tool's folder that comes back), else to work_dirs/gpu_acceptance.
# Arguments go to the script (--dry-run, --budget, ...).
#
#   bash benchmarks/gpu_acceptance.sh                                # on the GPU machine
#   PYTHON=.venv/bin/python bash benchmarks/gpu_acceptance.sh --dry-run  # CPU check here
set -o pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-work_dirs/gpu_acceptance}
mkdir -p "$OUT_DIR" || exit 2

if ! "$PY" -c 'import mmengine' 2>/dev/null; then
    if ! compgen -G '.whl/*.whl' >/dev/null; then
        echo "gpu_acceptance.sh: mmengine is missing and .whl/ holds no wheels;" \
             "run benchmarks/prepare_gpu_wheels.sh where a package index is reachable" >&2
        exit 2
    fi
    SITE=${DAT_MM_WHEEL_SITE:-$PWD/work_dirs/gpu_acceptance_site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || exit 3
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" -m benchmarks.gpu_acceptance --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/log.txt"
