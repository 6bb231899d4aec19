"""The environment is the pinned one, the OpenMMLab stack imports, and the model code needs
only torch + mmengine."""
import importlib
import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / 'requirements' / 'constraints.txt'


def _pins():
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        m = re.fullmatch(r'([A-Za-z0-9_.\-]+)==([^\s;]+)', line)
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def test_constraints_pin_the_stack():
    pins = _pins()
    for name in ('torch', 'torchvision', 'numpy', 'mmengine', 'mmcv', 'mmdet',
                 'mmsegmentation', 'mmpretrain'):
        assert name in pins, f'{name} is not pinned in {CONSTRAINTS}'


@pytest.mark.parametrize('dist, pinned', sorted(_pins().items()))
def test_pinned_version_installed(dist, pinned):
    installed = importlib.metadata.version(dist)
    assert installed.split('+')[0] == pinned, f'{dist} {installed} installed, {pinned} pinned'


@pytest.mark.parametrize('dist, module', [
    ('torch', 'torch'), ('torchvision', 'torchvision'), ('numpy', 'numpy'),
    ('mmengine', 'mmengine'), ('mmcv', 'mmcv'), ('mmdet', 'mmdet'),
    ('mmsegmentation', 'mmseg'), ('mmpretrain', 'mmpretrain')])
def test_imported_module_is_the_pinned_one(dist, module):
    # the module really imported (not a shadowing copy) has the pinned version
    assert importlib.import_module(module).__version__.split('+')[0] == _pins()[dist]


def test_mmpretrain_models_datasets_evaluation_import():
    for name in ('mmpretrain.models', 'mmpretrain.datasets', 'mmpretrain.evaluation'):
        importlib.import_module(name)
    from mmpretrain.registry import METRICS
    assert METRICS.get('Accuracy') is not None


def test_mmseg_utils_import():
    # mmseg's utils import ftfy and regex unconditionally
    importlib.import_module('mmseg.utils')
    importlib.import_module('mmseg.models')


def test_torchvision_ops_work():
    import torch
    import torchvision
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 9.], [20., 20., 30., 30.]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


BARE = r'''
import importlib.abc, sys
BLOCKED = ('mmcv', 'mmdet', 'mmseg', 'mmpretrain', 'torchvision')
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError(f'{name} is blocked: dat_mm must not need it')
sys.meta_path.insert(0, Block())
import torch
import dat_mm, dat_mm.checkpoint, dat_mm.converters
from mmengine.registry import MODELS
model = MODELS.build(dict(type='DAT', arch='tiny++'))
print([tuple(o.shape) for o in model(torch.randn(1, 3, 64, 64))])
'''


def test_model_code_needs_only_torch_and_mmengine():
    proc = subprocess.run([sys.executable, '-c', BARE], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == ('[(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), '
                                   '(1, 512, 2, 2)]')


CHECK_ENV = ROOT / 'tools' / 'install' / 'check_env.py'


def test_install_check_passes():
    proc = subprocess.run([sys.executable, str(CHECK_ENV)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count('[check_env] ok') == 3


def test_install_check_stops_without_mmcv_ops():
    # mmcv without its compiled ops (what an isolated build gives) must fail the install step
    # with a message that says so.
    script = (
        'import importlib.abc, runpy, sys\n'
        'class Block(importlib.abc.MetaPathFinder):\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name == 'mmcv._ext':\n"
        "            raise ImportError('No module named mmcv._ext')\n"
        'sys.meta_path.insert(0, Block())\n'
        f'sys.argv = [{str(CHECK_ENV)!r}]\n'
        f"runpy.run_path({str(CHECK_ENV)!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert '[check_env] FAIL mmcv ops on CPU: mmcv._ext (the compiled ops) did not load' in proc.stderr
    assert 'NOT usable' in proc.stderr
