#!/usr/bin/env bash
# Set everything up (tools/install/setup_env.sh, seconds when already done), then run the tests
# in three pytest runs:
#   1. tests/env: environment checks (the pinned stack, mmcv's compiled ops, the metrics), so
#      a broken environment is reported as such before any dat_mm test;
#   2. the model code's tests (COMPAT_TESTS below: backbone, attention paths, converter,
#      published-weight loading, checkpoint safety) in the compatibility environment, the oldest torch and
#      mmengine setup.py declares (tools/install/setup_compat_env.sh; DAT_MM_COMPAT_TESTS=0
#      skips this run);
#   3. the dat_mm test suite in the project environment (testpaths in pyproject.toml, slow
#      tests included, tests/env left out); extra arguments go to this run.
# Exits with a failure if any run fails; the output ends with the last run's summary line.
#   bash tools/run_tests.sh            # everything
#   bash tools/run_tests.sh -m 'not slow' tests/test_backbone.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DAT_MM_VENV:-$root/.venv}
compat=${DAT_MM_COMPAT_VENV:-$root/.venv-compat}
COMPAT_TESTS=(tests/test_backbone.py tests/test_backbone_inputs.py
              tests/test_deformable_attention.py tests/test_neighborhood_attention.py
              tests/test_window_attention.py tests/test_fast_paths.py
              tests/test_attention_choice.py tests/test_fused_layers.py
              tests/test_device_clean.py tests/test_converter.py
              tests/test_position_tables.py tests/test_published_loading.py
              tests/test_checkpoint_safety.py tests/test_package_graph.py)
bash "$root/tools/install/setup_env.sh"
if [ "${DAT_MM_COMPAT_TESTS:-1}" != 0 ]; then
    DAT_MM_VENV=$venv DAT_MM_COMPAT_VENV=$compat bash "$root/tools/install/setup_compat_env.sh"
fi
cd "$root"
set +e
echo '== environment checks (tests/env) =='
"$venv/bin/python" -m pytest -ra tests/env
env_rc=$?
if [ "$env_rc" -ne 0 ]; then
    echo "== environment checks FAILED (pytest exit code $env_rc): the environment is broken;" \
         "the dat_mm tests below run in it, and this script fails =="
fi
compat_rc=0
if [ "${DAT_MM_COMPAT_TESTS:-1}" != 0 ]; then
    echo '== model code in the compatibility environment (requirements/compat.txt) =='
    "$compat/bin/python" -m pytest -ra -p no:cacheprovider "${COMPAT_TESTS[@]}"
    compat_rc=$?
    if [ "$compat_rc" -ne 0 ]; then
        echo "== compatibility tests FAILED (pytest exit code $compat_rc) =="
    fi
fi
echo '== dat_mm tests =='
"$venv/bin/python" -m pytest -ra --ignore=tests/env "$@"  # no arguments: testpaths = tests
rc=$?
if [ "$rc" -eq 0 ]; then
    rc=$env_rc
fi
if [ "$rc" -eq 0 ]; then
    rc=$compat_rc
fi
exit "$rc"
