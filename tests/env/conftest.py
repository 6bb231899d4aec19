"""tests/env: environment checks, not dat_mm tests. They check the installed stack (the pinned
versions, imports, tools/install/check_env.py) and the third-party behaviour dat_mm relies on
(mmcv's compiled ops, mmdet's and mmseg's metrics). tools/run_tests.sh runs them first, on
their own, so a broken environment is reported as such before the unit suite."""


def pytest_report_header(config):
    return ('tests/env: environment checks (the installed stack, mmcv ops, metrics), '
            'not dat_mm tests')
