#!/usr/bin/env bash
# The compatibility environment: a second, small virtualenv with the oldest versions dat_mm
# declares (requirements/compat.txt: torch 2.1, mmengine 0.10.0, numpy 1.x; no mmcv, mmdet,
# mmseg or mmpretrain), where tools/run_tests.sh runs the model code's tests. dat_mm is not
# installed into it: the tests import it from the checkout (pytest's pythonpath).
#
#   bash tools/install/setup_compat_env.sh        # after tools/install/setup_env.sh
#
# Environment: DAT_MM_COMPAT_VENV (default: <checkout>/.venv-compat); DAT_MM_VENV (the main
# environment, whose uv installs this one); DAT_MM_PYTHON as for setup_env.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${DAT_MM_VENV:-$root/.venv}
compat=${DAT_MM_COMPAT_VENV:-$root/.venv-compat}
reqs=$root/requirements/compat.txt
stamp=$compat/.dat_mm_compat.stamp
t0=$SECONDS
log() { printf '[setup_compat_env %4ds] %s\n' "$((SECONDS - t0))" "$*" >&2; }
die() { printf '[setup_compat_env] ERROR: %s\n' "$*" >&2; exit 1; }

py=$venv/bin/python
[[ -x $venv/bin/uv ]] || die "no uv in $venv: run tools/install/setup_env.sh first"
base_py=${DAT_MM_PYTHON:-$(command -v python3.11 || command -v python3)}
fingerprint=$(cat "$reqs" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
if [[ -x $compat/bin/python && -f $stamp && "$(cat "$stamp")" == "$fingerprint" ]]; then
    log "environment $compat is up to date"
    exit 0
fi
[[ -x $compat/bin/python ]] || "$base_py" -m venv "$compat" || die "could not create $compat"
source "$root/tools/install/uv_index.sh"
pass_pip_index_to_uv
log "installing $(grep -v '^#' "$reqs" | tr '\n' ' ')into $compat"
"$venv/bin/uv" pip install --python "$compat/bin/python" -r "$reqs" -c "$reqs" \
    || die "could not install requirements/compat.txt into $compat"
"$compat/bin/python" - "$reqs" <<'PY' || die "the compatibility environment has other versions"
import importlib.metadata as md, sys
for line in open(sys.argv[1]):
    line = line.split('#', 1)[0].strip()
    if line:
        name, version = line.split('==')
        found = md.version(name).split('+')[0]
        assert found == version, f'{name}: {found} installed, {version} required'
PY
echo "$fingerprint" >"$stamp"
log "done: $compat"
