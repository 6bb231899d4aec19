"""``import dat_mm`` registers DAT once, in mmengine's root MODELS registry, and
``type='DAT'`` resolves from the mmdet, mmseg and mmpretrain registries (directly and through a
config with ``custom_imports`` + ``default_scope``, as the task configs use it)."""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.registry import MODELS as ROOT_MODELS

import dat_mm

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
TINY = dict(type='DAT', arch='tiny++', out_indices=(1, 3))


def _registry(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS


def test_registered_once_in_root():
    assert ROOT_MODELS.get('DAT') is dat_mm.DAT
    assert ROOT_MODELS.module_dict['DAT'] is dat_mm.DAT
    # not (re-)registered in a child registry: one class object for every scope
    for scope in SCOPES:
        assert 'DAT' not in _registry(scope).module_dict, scope
    # importing again must not register again (a second register would raise KeyError)
    import importlib
    importlib.reload(sys.modules['dat_mm'])
    assert ROOT_MODELS.get('DAT') is dat_mm.DAT


@pytest.mark.parametrize('scope', SCOPES)
def test_build_from_scope_registry(scope):
    registry = _registry(scope)
    assert registry.parent is ROOT_MODELS
    assert registry.get('DAT') is dat_mm.DAT
    model = registry.build(dict(TINY))
    assert type(model) is dat_mm.DAT
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 8, 8), (1, 512, 2, 2)]


CONFIG_BUILD = textwrap.dedent('''
    import sys
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    assert 'dat_mm' not in sys.modules
    classes = []
    for scope in ('mmdet', 'mmseg', 'mmpretrain'):
        cfg = Config.fromfile(sys.argv[1] + '/' + scope + '.py')
        assert 'dat_mm' in sys.modules  # imported by custom_imports
        init_default_scope(cfg.default_scope)  # what Runner does with cfg.default_scope
        model = MODELS.build(cfg.model)
        with MODELS.switch_scope_and_registry(None) as registry:
            assert registry.scope == scope, (registry.scope, scope)
        classes.append(type(model))
        print(scope, type(model).__module__, type(model).__name__, model.out_indices)
    import dat_mm
    assert all(c is dat_mm.DAT for c in classes)
''')


def test_build_through_config_custom_imports(tmp_path):
    for scope in SCOPES:
        (tmp_path / f'{scope}.py').write_text(textwrap.dedent(f'''
            default_scope = '{scope}'
            custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)
            model = dict(type='DAT', arch='tiny++', out_indices=(3, ))
        '''))
    proc = subprocess.run([sys.executable, '-c', CONFIG_BUILD, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('mm')]
    assert lines == [f'{s} dat_mm.models.backbones.dat DAT (3,)' for s in SCOPES]


@pytest.mark.parametrize('scope', SCOPES)
def test_optim_wrapper_constructor_resolves_from_scope(scope):
    """DATOptimWrapperConstructor (the segmentation configs' constructor) is registered in
    mmengine's root registry only and found from every scope's child registry."""
    import importlib

    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as ROOT
    from dat_mm.engine import DATOptimWrapperConstructor
    child = importlib.import_module(f'{scope}.registry').OPTIM_WRAPPER_CONSTRUCTORS
    assert ROOT.module_dict['DATOptimWrapperConstructor'] is DATOptimWrapperConstructor
    assert 'DATOptimWrapperConstructor' not in child.module_dict
    assert child.get('DATOptimWrapperConstructor') is DATOptimWrapperConstructor
