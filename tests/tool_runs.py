"""The repository's tools as the end-to-end tests run them: tools/train.py in-process (its
``main`` returns the Runner) and tools/test.py as a subprocess, whose log gives the metrics."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_tool():
    """tools/train.py as a module (``main(argv)`` builds and runs the Runner)."""
    spec = importlib.util.spec_from_file_location('dat_mm_train_tool',
                                                  ROOT / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def logged_metrics(log):
    """``key: value`` pairs mmengine logs for the test epoch (progress lines included)."""
    metrics = {}
    for line in log.splitlines():
        if re.search(r'(Epoch|Iter)\(test\)', line):
            metrics.update((k, float(v)) for k, v in re.findall(r'([\w/]+): (-?[\d.]+)', line))
    assert metrics, log[-3000:]
    return metrics


def run_test_tool(config, checkpoint, *args):
    """``tools/test.py CONFIG CHECKPOINT ARGS...`` in a new process from the repository root;
    asserts that it succeeded and returns its output (stdout and stderr)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'test.py'), str(config), str(checkpoint),
         *map(str, args)],
        capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr
