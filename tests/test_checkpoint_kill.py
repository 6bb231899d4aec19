"""A training run killed with SIGKILL at random moments of its saves (the first one
included), with max_keep_ckpts=1, always leaves a complete checkpoint to resume from, and the
chain of killed and resumed runs reproduces the uninterrupted run's losses exactly (CPU)."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dat_mm.checkpoint import safe_load

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name('kill_resume_child.py')
MAX_ITERS = 8
KILLS = 6


def _start(work):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, str(CHILD), str(work), str(MAX_ITERS)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _losses(work):
    out = {}
    for line in (work / 'losses.txt').read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.setdefault(int(parts[0]), []).append(float(parts[1]))
    return out


def _assert_resumable(work):
    """Every checkpoint file is whole and last_checkpoint names one of them."""
    files = sorted(p for p in work.glob('iter_*.pth'))
    for path in files:
        assert safe_load(str(path))['meta']['iter'] == int(path.stem.split('_')[1])
    record = work / 'last_checkpoint'
    if record.exists():
        assert Path(record.read_text()) in files, (record.read_text(), files)
    return files


def test_sigkill_during_saves_never_loses_the_run(tmp_path):
    rng = random.Random(20261202)
    work = tmp_path / 'killed'
    work.mkdir()
    kills = []
    for k in range(KILLS):
        proc = _start(work)
        target = 1 if k == 0 else rng.randint(1, 3)  # the first kill: during the first save
        seen, lines = 0, []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith('SAVE'):
                seen += 1
                if seen == target:
                    time.sleep(rng.uniform(0.0, 0.25))
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, ''.join(lines[-30:])
        kills.append(_assert_resumable(work))
    assert kills[0] == [] or kills[0] == [work / 'iter_1.pth']
    proc = _start(work)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and 'DONE' in out, out[-3000:]
    assert _assert_resumable(work) == [work / f'iter_{MAX_ITERS}.pth']

    full = tmp_path / 'full'
    full.mkdir()
    proc = _start(full)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    reference = {i: v[0] for i, v in _losses(full).items()}
    assert sorted(reference) == list(range(MAX_ITERS))
    chain = _losses(work)
    assert sorted(chain) == list(range(MAX_ITERS))
    assert any(len(v) > 1 for v in chain.values())  # some iterations ran again after a kill
    for i, values in chain.items():
        assert values == [reference[i]] * len(values), (i, values, reference[i])
