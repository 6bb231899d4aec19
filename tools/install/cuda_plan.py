"""Decide whether mmcv is built with CUDA ops on this machine, and check that it can be.

Run by tools/install/setup_env.sh with the virtualenv's Python once torch is installed; prints
shell assignments (``variant=cuda``, ``arch=9.0``, ``tag=cuda-sm90``) on stdout, or exits 1
with a message that says what to install or set. The decision:

* ``DAT_MM_MMCV_CUDA=0``: CPU ops; ``=1``: CUDA ops; unset: CUDA ops when the machine has a
  usable NVIDIA GPU, i.e. ``nvidia-smi`` lists one and the installed torch sees it.
* ``nvidia-smi`` lists a GPU that torch does not see: the driver is too old for the pinned torch
  build (named with the minimum), or the GPU is hidden (``CUDA_VISIBLE_DEVICES``): an error
  either way, since a CPU-ops mmcv on a GPU machine fails at the first CUDA RoIAlign.
* CUDA ops need ``nvcc`` (on ``PATH`` or in ``$CUDA_HOME/bin``) of the same major.minor as
  ``torch.version.cuda``, checked before anything is downloaded or built.
* The arch list is ``TORCH_CUDA_ARCH_LIST`` when set, else the compute capabilities of the
  visible GPUs; it is part of the wheel cache key (``tag``), as CUDA vs CPU is.
"""
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

# Linux driver needed by each CUDA major version (NVIDIA's CUDA toolkit release notes).
MIN_DRIVER = {11: '450.80.02', 12: '525.60.13', 13: '580.65.06'}


class PlanError(RuntimeError):
    """The machine cannot build what was asked: the message says what to install or set."""


def _run(cmd: List[str]) -> Optional[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def parse_smi(text: Optional[str]) -> List[Tuple[str, str]]:
    """``[(driver_version, compute_cap), ...]`` from ``nvidia-smi --query-gpu=driver_version,
    compute_cap --format=csv,noheader``; empty when there is no usable output."""
    gpus = []
    for line in (text or '').splitlines():
        parts = [p.strip() for p in line.split(',')]
        if len(parts) == 2 and re.fullmatch(r'[\d.]+', parts[0]) \
                and re.fullmatch(r'\d+\.\d+', parts[1]):
            gpus.append((parts[0], parts[1]))
    return gpus


def parse_nvcc(text: Optional[str]) -> Optional[str]:
    """``'13.0'`` from ``nvcc --version`` (``Cuda compilation tools, release 13.0, ...``)."""
    match = re.search(r'release (\d+\.\d+)', text or '')
    return match.group(1) if match else None


def _version_tuple(text: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in text.split('.') if p.isdigit())


def plan(env: Dict[str, str], torch_cuda: Optional[str], torch_sees_gpu: bool,
         smi: Optional[str], nvcc: Optional[str]) -> Dict[str, str]:
    """The decision for these inputs (see the module doc); raises :class:`PlanError`."""
    request = env.get('DAT_MM_MMCV_CUDA', '')
    if request not in ('', '0', '1'):
        raise PlanError(f"DAT_MM_MMCV_CUDA must be 0 or 1, not '{request}'")
    gpus = parse_smi(smi)
    if request == '0':
        return dict(variant='cpu', arch='', tag='cpu')
    if request == '' and not gpus:
        return dict(variant='cpu', arch='', tag='cpu')
    if torch_cuda is None:
        raise PlanError('the installed torch is a CPU-only build, so mmcv cannot get CUDA ops; '
                        'install a CUDA build of the pinned torch, or set DAT_MM_MMCV_CUDA=0')
    if gpus and not torch_sees_gpu:
        driver = gpus[0][0]
        major = int(torch_cuda.split('.')[0])
        need = MIN_DRIVER.get(major)
        if need and _version_tuple(driver) < _version_tuple(need):
            raise PlanError(
                f'the NVIDIA driver {driver} is too old for torch built with CUDA {torch_cuda}'
                f' (needs >= {need}): install a newer driver, or set '
                'DAT_MM_MMCV_CUDA=0 to build CPU ops only')
        raise PlanError(
            f'nvidia-smi lists {len(gpus)} GPU(s) but torch (CUDA {torch_cuda}) sees none '
            f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')}): make "
            'the GPU visible, or set DAT_MM_MMCV_CUDA=0 to build CPU ops only')
    if nvcc is None:
        raise PlanError(
            f'building mmcv with CUDA ops needs nvcc {torch_cuda} (the CUDA version of the '
            'installed torch) on PATH or in $CUDA_HOME/bin: install the CUDA toolkit '
            f'{torch_cuda}, or set DAT_MM_MMCV_CUDA=0 to build CPU ops only')
    if nvcc != '.'.join(torch_cuda.split('.')[:2]):
        raise PlanError(
            f'nvcc is CUDA {nvcc} but torch was built with CUDA {torch_cuda}: the ops would not '
            f'load. Install the CUDA toolkit {torch_cuda} (or point CUDA_HOME at it), or set '
            'DAT_MM_MMCV_CUDA=0 to build CPU ops only')
    arch = env.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if not arch:
        if not gpus:
            raise PlanError('DAT_MM_MMCV_CUDA=1 without a visible GPU: name the GPU '
                            'architectures to build for, e.g. TORCH_CUDA_ARCH_LIST=9.0')
        arch = ';'.join(sorted({cap for _, cap in gpus}, key=_version_tuple))
    tag = 'cuda-' + '-'.join('sm' + re.sub(r'\W', '', a) for a in re.split(r'[;\s]+', arch))
    return dict(variant='cuda', arch=arch, tag=tag)


def _nvcc_output(env: Dict[str, str]) -> Optional[str]:
    """``nvcc --version`` of the nvcc torch's extension builder will use: ``$CUDA_HOME/bin``
    first, else the one on ``PATH``."""
    nvcc = None
    if env.get('CUDA_HOME'):
        candidate = os.path.join(env['CUDA_HOME'], 'bin', 'nvcc')
        nvcc = candidate if os.access(candidate, os.X_OK) else None
    nvcc = nvcc or shutil.which('nvcc')
    return _run([nvcc, '--version']) if nvcc else None


def main() -> int:
    import torch
    env = dict(os.environ)
    smi = None
    if shutil.which('nvidia-smi'):
        smi = _run(['nvidia-smi', '--query-gpu=driver_version,compute_cap',
                    '--format=csv,noheader'])
    try:
        result = plan(env, torch.version.cuda, torch.cuda.is_available(), smi,
                      parse_nvcc(_nvcc_output(env)))
    except PlanError as err:
        print(f'[cuda_plan] {err}', file=sys.stderr)
        return 1
    for key, value in result.items():
        print(f'{key}={value}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
