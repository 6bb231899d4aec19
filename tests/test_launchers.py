"""tools/slurm_{train,test}.sh and tools/dist_{train,test}.sh build the commands OpenMMLab's
scripts build (srun is replaced by a stub that prints its arguments; torchrun itself runs in
tests/test_dist_train.py)."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_srun(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/usr/bin/env bash\nfor a in "$@"; do echo "ARG:$a"; done\n')
    srun.chmod(0o755)
    return dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', PYTHON='/my/python')


def _args(out):
    return [line[4:] for line in out.splitlines() if line.startswith('ARG:')]


def test_slurm_train_command(fake_srun):
    env = dict(fake_srun, GPUS='32', GPUS_PER_NODE='8', SRUN_ARGS='--quotatype=auto')
    proc = subprocess.run(['bash', str(ROOT / 'tools/slurm_train.sh'), 'part', 'job', 'cfg.py',
                           'wd', '--amp', '--cfg-options', 'a=1'],
                          env=env, capture_output=True, text=True, check=True)
    assert _args(proc.stdout) == [
        '-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=32', '--ntasks-per-node=8',
        '--cpus-per-task=5', '--kill-on-bad-exit=1', '--quotatype=auto',
        '/my/python', '-u', str(ROOT / 'tools/train.py'), 'cfg.py', '--work-dir=wd',
        '--launcher=slurm', '--amp', '--cfg-options', 'a=1']


def test_slurm_test_command(fake_srun):
    proc = subprocess.run(['bash', str(ROOT / 'tools/slurm_test.sh'), 'part', 'job', 'cfg.py',
                           'ckpt.pth', '--out', 'r.pkl'],
                          env=fake_srun, capture_output=True, text=True, check=True)
    args = _args(proc.stdout)
    assert args[:8] == ['-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=8',
                        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1']
    assert args[8:] == ['/my/python', '-u', str(ROOT / 'tools/test.py'), 'cfg.py', 'ckpt.pth',
                        '--launcher=slurm', '--out', 'r.pkl']


@pytest.mark.parametrize('script, argv', [
    ('slurm_train.sh', ['part', 'job', 'cfg.py']), ('slurm_test.sh', ['part']),
    ('dist_train.sh', ['cfg.py']), ('dist_test.sh', ['cfg.py', 'ckpt.pth'])])
def test_missing_arguments_print_usage(fake_srun, script, argv):
    proc = subprocess.run(['bash', str(ROOT / 'tools' / script)] + argv, env=fake_srun,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'usage:' in proc.stderr
    assert 'ARG:' not in proc.stdout   # nothing was launched


def test_dist_train_passes_torchrun_settings(tmp_path):
    # A PYTHON that records its arguments instead of starting torch.distributed.run.
    fake = tmp_path / 'python'
    fake.write_text('#!/usr/bin/env bash\nfor a in "$@"; do echo "ARG:$a"; done\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), NNODES='2', NODE_RANK='1', PORT='29555',
               MASTER_ADDR='10.0.0.1')
    proc = subprocess.run(['bash', str(ROOT / 'tools/dist_train.sh'), 'cfg.py', '4',
                           '--resume'], env=env, capture_output=True, text=True, check=True)
    assert _args(proc.stdout) == [
        '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1',
        '--master_addr=10.0.0.1', '--nproc_per_node=4', '--master_port=29555',
        str(ROOT / 'tools/train.py'), 'cfg.py', '--launcher', 'pytorch', '--resume']
