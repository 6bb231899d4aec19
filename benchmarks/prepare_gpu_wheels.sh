#!/usr/bin/env bash
# Prepares the GPU acceptance run (benchmarks/gpu_acceptance.sh) for a machine that has Python
# 3.12 with PyTorch, torchvision and numpy but no OpenMMLab packages and no package index:
# downloads the pure-Python wheels the run needs into .whl/ (git-ignored; the device tool
# carries it with `carry: [".whl"]`), checks what they require, measures what would travel,
# and prints the device tool call.
#
# Wheels: mmengine (what `import dat_mm` needs besides torch), the four small packages it
# needs that such a machine lacks (addict, termcolor, yapf and yapf's platformdirs; numpy,
# pyyaml, rich, matplotlib and opencv are there), mmcv-lite and mmdet (mmdet's Swin-T, whose
# file the run imports on its own: mmcv's compiled ops are not needed for it). mmengine, mmcv
# and mmdet take the versions of requirements/constraints.txt; mmcv-lite is skipped where an
# mmcv wheel with ops is already in .whl/ (the run then also checks its ops on the GPU).
#
#   bash benchmarks/prepare_gpu_wheels.sh           # where PyPI is reachable
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEST=.whl
TIMEOUT_S=540

pin() {
    local v
    v=$(grep -E "^$1==" requirements/constraints.txt | head -1 | cut -d= -f3)
    if [ -z "$v" ]; then
        echo "prepare_gpu_wheels.sh: no pin for $1 in requirements/constraints.txt" >&2
        exit 2
    fi
    echo "$v"
}

# .whl/ must never be committed: .gitignore has /.whl/; otherwise exclude it locally
if git rev-parse --git-dir >/dev/null 2>&1 && ! git check-ignore -q "$DEST/probe.whl"; then
    echo "/$DEST/" >> "$(git rev-parse --git-path info/exclude)"
    echo "prepare_gpu_wheels.sh: added /$DEST/ to .git/info/exclude"
fi
mkdir -p "$DEST"

WHEELS=("mmengine==$(pin mmengine)" "mmdet==$(pin mmdet)"
        addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9)
if compgen -G "$DEST/mmcv-[0-9]*.whl" >/dev/null; then
    echo "prepare_gpu_wheels.sh: an mmcv wheel with ops is in $DEST/: mmcv-lite is not added"
    rm -f "$DEST"/mmcv_lite-*.whl
else
    WHEELS+=("mmcv-lite==$(pin mmcv)")
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$TMP" "${WHEELS[@]}"

# one version of each distribution in .whl/ (two would stop the install there)
for f in "$TMP"/*.whl; do
    name=$(basename "$f")
    dist=${name%%-*}
    for old in "$DEST/$dist"-*.whl; do
        [ -e "$old" ] && [ "$(basename "$old")" != "$name" ] && rm -f "$old"
    done
    mv -f "$f" "$DEST/"
done

"$PY" - "$DEST" <<'EOF'
"""Lists the wheels and the requirements (for Python 3.12 on Linux) that none of them meets."""
import glob
import os
import re
import sys
import zipfile

from packaging.markers import Marker
from packaging.requirements import Requirement

dest = sys.argv[1]
env = dict(python_version='3.12', python_full_version='3.12.3', sys_platform='linux',
           platform_system='Linux', platform_machine='x86_64', os_name='posix',
           implementation_name='cpython', platform_python_implementation='CPython', extra='')


def norm(name):
    return re.sub(r'[-_.]+', '-', name).lower()


carried, needs = {}, {}
for path in sorted(glob.glob(os.path.join(dest, '*.whl'))):
    with zipfile.ZipFile(path) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA')))
    fields = [line.split(':', 1) for line in meta.decode().splitlines() if ':' in line]
    name = next(v.strip() for k, v in fields if k == 'Name')
    carried[norm(name)] = os.path.basename(path)
    for k, v in fields:
        if k == 'Requires-Dist':
            req = Requirement(v.strip())
            if req.marker is None or req.marker.evaluate(env):
                needs.setdefault(norm(req.name), set()).add(name)
print(f'wheels in {dest}/:')
for name, f in sorted(carried.items()):
    print(f'  {f} ({os.path.getsize(os.path.join(dest, f)) / 2**10:.0f} KiB)')
if 'mmcv' in carried and 'mmcv-lite' in carried:
    sys.exit(f'both mmcv and mmcv-lite are in {dest}/: remove one (they install the same '
             'package)')
missing = {n: sorted(by) for n, by in needs.items() if n not in carried}
print('required by them but not carried (on the GPU machine, or not imported by the run):')
for n, by in sorted(missing.items()):
    print(f'  {n} (by {", ".join(by)})')
EOF

whl_bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree_bytes=0
if git rev-parse --git-dir >/dev/null 2>&1; then
    tree_bytes=$(git ls-files -z --cached --others --exclude-standard \
        | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
fi
total=$((whl_bytes + tree_bytes))
awk -v w="$whl_bytes" -v t="$tree_bytes" -v s="$total" 'BEGIN {
    printf "size: .whl/ %.1f MiB + working tree %.1f MiB = %.1f MiB", w / 2^20, t / 2^20, s / 2^20
    printf " (the device tool takes 64 MiB)\n" }'
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
    echo "prepare_gpu_wheels.sh: over 60 MiB would travel; remove large untracked files" >&2
    exit 1
fi

cat <<EOF

Device tool call (the run takes about 8 minutes; tables come back from \$OUT):
  run(command="bash benchmarks/gpu_acceptance.sh", carry=[".whl"], timeout_s=$TIMEOUT_S)
as JSON arguments:
  {"command": "bash benchmarks/gpu_acceptance.sh", "carry": [".whl"], "timeout_s": $TIMEOUT_S}
Check it here first (CPU, tiny sizes, well under a minute):
  PYTHON=$PY bash benchmarks/gpu_acceptance.sh --dry-run
EOF
