"""benchmarks/bench_detector.py at a tiny image size: both Mask R-CNNs build from their
configs, train and infer on the generated batch, and the table has every row."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # two detectors built and run: ~25 s on the 2-core machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_detector_prints_every_row():
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.bench_detector', '--size', '160x128',
                           '--rounds', '1', '--repeats', '1', '--boxes', '3'], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split('|')[1:-1] for line in proc.stdout.splitlines()
            if line.startswith('| 160x128x1')]
    cells = {(r[1].strip(), r[2].strip()): [c.strip() for c in r] for r in rows}
    assert set(cells) == {(m, d) for m in ('infer', 'train')
                          for d in ('mask-rcnn dat-t++', 'mask-rcnn swin-t')}
    for (mode, model), row in cells.items():
        assert float(row[4]) > 0, row                          # median ms
        # as the configs have it: DAT's recipe checkpoints its backbone, mmdet's Swin-T not
        assert row[3] == ('on' if 'dat' in model else 'off'), row
        if 'dat' in model:
            assert row[6].count('(') == 1, row                 # ratio with its range
