#!/usr/bin/env bash
# Set everything up (tools/install/setup_env.sh, seconds when already done), then run the tests
# in the project environment, in two pytest runs:
#   1. tests/env: environment checks (the pinned stack, mmcv's compiled ops, the metrics), so
#      a broken environment is reported as such before any dat_mm test;
#   2. the dat_mm test suite (testpaths in pyproject.toml, slow tests included, tests/env
#      left out); extra arguments go to this run.
# Exits with a failure if either run fails; the output ends with the second run's summary line.
#   bash tools/run_tests.sh            # everything
#   bash tools/run_tests.sh -m 'not slow' tests/test_backbone.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DAT_MM_VENV:-$root/.venv}
bash "$root/tools/install/setup_env.sh"
cd "$root"
set +e
echo '== environment checks (tests/env) =='
"$venv/bin/python" -m pytest -ra tests/env
env_rc=$?
if [ "$env_rc" -ne 0 ]; then
    echo "== environment checks FAILED (pytest exit code $env_rc): the environment is broken;" \
         "the dat_mm tests below run in it, and this script fails =="
fi
echo '== dat_mm tests =='
"$venv/bin/python" -m pytest -ra --ignore=tests/env "$@"  # no arguments: testpaths = tests
rc=$?
if [ "$rc" -eq 0 ]; then
    rc=$env_rc
fi
exit "$rc"
