#!/usr/bin/env bash
# Set everything up (tools/install/setup_env.sh, seconds when already done), then run the whole
# test suite (slow tests included) in the project environment. Extra arguments go to pytest.
# Exits with pytest's exit code; the output ends with pytest's summary line.
#   bash tools/run_tests.sh            # everything
#   bash tools/run_tests.sh -m 'not slow' tests/test_metrics.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DAT_MM_VENV:-$root/.venv}
bash "$root/tools/install/setup_env.sh"
cd "$root"
set +e
"$venv/bin/python" -m pytest -ra "$@"  # no arguments: testpaths = tests (pyproject.toml)
exit $?
