"""The setup script's mmcv build decision (tools/install/cuda_plan.py): CUDA ops exactly when
the machine has a usable GPU or DAT_MM_MMCV_CUDA=1 asks for them, with nvcc and the driver
checked before anything is built; tested with fake nvidia-smi / nvcc outputs and programs.
And the build script's progress lines (tools/install/build_mmcv.sh)."""
import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / 'tools' / 'install' / 'cuda_plan.py'
spec = importlib.util.spec_from_file_location('cuda_plan', PLAN)
cuda_plan = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda_plan)

H200 = '580.159.03, 9.0\n'
NVCC_13 = 'nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n'
NVCC_12 = 'nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 12.4, V12.4.131\n'


def plan(env=None, torch_cuda='13.0', sees=True, smi=H200, nvcc=NVCC_13):
    return cuda_plan.plan(env or {}, torch_cuda, sees, smi, cuda_plan.parse_nvcc(nvcc))


def test_no_gpu_builds_cpu_ops():
    assert plan(smi=None, sees=False, nvcc=None) == dict(variant='cpu', arch='', tag='cpu')
    assert plan(smi='', sees=False, nvcc=None)['variant'] == 'cpu'


def test_gpu_builds_cuda_ops_for_the_visible_architectures():
    assert plan() == dict(variant='cuda', arch='9.0', tag='cuda-sm90')
    two = '580.159.03, 9.0\n580.159.03, 8.0\n580.159.03, 9.0\n'
    assert plan(smi=two) == dict(variant='cuda', arch='8.0;9.0', tag='cuda-sm80-sm90')


def test_overrides():
    assert plan({'DAT_MM_MMCV_CUDA': '0'})['variant'] == 'cpu'
    forced = plan({'DAT_MM_MMCV_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '9.0+PTX'}, sees=False,
                  smi=None)
    assert forced == dict(variant='cuda', arch='9.0+PTX', tag='cuda-sm90PTX')
    assert plan({'TORCH_CUDA_ARCH_LIST': '8.6 9.0'})['tag'] == 'cuda-sm86-sm90'
    with pytest.raises(cuda_plan.PlanError, match='must be 0 or 1'):
        plan({'DAT_MM_MMCV_CUDA': 'yes'})
    with pytest.raises(cuda_plan.PlanError, match='TORCH_CUDA_ARCH_LIST=9.0'):
        plan({'DAT_MM_MMCV_CUDA': '1'}, sees=False, smi=None)


@pytest.mark.parametrize('kwargs, message', [
    (dict(nvcc=NVCC_12), 'nvcc is CUDA 12.4 but torch was built with CUDA 13.0'),
    (dict(nvcc=None), 'needs nvcc 13.0'),
    (dict(sees=False, smi='535.104.05, 9.0\n'),
     'driver 535.104.05 is too old for torch built with CUDA 13.0 .needs >= 580.65.06.'),
    (dict(sees=False, smi='590.10, 9.0\n', env={'CUDA_VISIBLE_DEVICES': ''}),
     'lists 1 GPU.s. but torch .CUDA 13.0. sees none .CUDA_VISIBLE_DEVICES=.'),
    (dict(torch_cuda=None, env={'DAT_MM_MMCV_CUDA': '1'}), 'CPU-only build'),
])
def test_what_cannot_work_is_an_error_that_says_what_to_do(kwargs, message):
    with pytest.raises(cuda_plan.PlanError, match=message) as err:
        plan(**kwargs)
    assert 'DAT_MM_MMCV_CUDA=0' in str(err.value) or 'TORCH_CUDA' in str(err.value)


def _fake(bin_dir, name, text):
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\ncat <<"EOF"\n{text}EOF\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_plan(tmp_path, smi=None, nvcc=None, **env):
    bin_dir = tmp_path / f'bin{len(list(tmp_path.iterdir()))}'
    bin_dir.mkdir()
    if smi is not None:
        _fake(bin_dir, 'nvidia-smi', smi)
    if nvcc is not None:
        _fake(bin_dir, 'nvcc', nvcc)
    clean = {k: v for k, v in os.environ.items()
             if k not in ('DAT_MM_MMCV_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CUDA_HOME')}
    # only the fakes and the basic tools: the machine's own nvcc must not be found
    clean.update(PATH=f'{bin_dir}:/usr/bin:/bin', **env)
    return subprocess.run([sys.executable, str(PLAN)], capture_output=True, text=True,
                          env=clean, timeout=120)


def test_script_with_fake_programs(tmp_path):
    # this machine's torch sees no GPU: a listed one means a driver problem
    out = _run_plan(tmp_path, smi='535.104.05, 9.0\n')
    assert out.returncode == 1 and 'driver 535.104.05 is too old' in out.stderr
    # asked for CUDA ops with the wrong nvcc: refused before any build
    out = _run_plan(tmp_path, nvcc=NVCC_12, DAT_MM_MMCV_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0')
    assert out.returncode == 1 and 'nvcc is CUDA 12.4' in out.stderr
    out = _run_plan(tmp_path, nvcc=NVCC_13, DAT_MM_MMCV_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['variant=cuda', 'arch=9.0', 'tag=cuda-sm90']


def test_script_without_gpu_keeps_cpu_ops(tmp_path):
    out = _run_plan(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['variant=cpu', 'arch=', 'tag=cpu']


def test_build_progress_lines():
    script = (ROOT / 'tools' / 'install' / 'build_mmcv.sh').read_text()
    body = script[script.index('progress() {'):]
    body = body[:body.index('\n}\n') + 3]
    lines = ('[1/115] c++ -MMD -MF /b/nms.o.d -Ifoo -c /src/mmcv/ops/csrc/pytorch/nms.cpp '
             '-o /b/nms.o -std=c++20\n'
             'a line that is not progress\n'
             '[2/115] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile -c '
             '/src/mmcv/ops/csrc/pytorch/cuda/roi_align_cuda.cu -o /b/r.o\n')
    out = subprocess.run(['bash', '-c', f'start=$SECONDS\n{body}\nprogress'], input=lines,
                         capture_output=True, text=True, timeout=30)
    got = [line.split('] ', 1)[1] for line in out.stderr.splitlines()]
    assert got == ['1/115 nms.cpp', '2/115 roi_align_cuda.cu'], out.stderr
