"""dat_mm.apis.build_model_from_config: the one way dat_mm's tools build a model from a config
and load a checkpoint into it (dat_mm layout, backbone only, or the authors' published one)."""
import pytest
import torch
from mmengine.config import Config

from dat_mm import DAT
from dat_mm.apis import build_model_from_config, load_model_weights
from dat_mm.converters import with_prefix

from published_layout import published_state

pytest.importorskip('mmpretrain')

# Four stages, as the published layout has (its cls_norm is the last stage's norm).
ARCH = dict(version=2, stages=[
    dict(dim=8, depth=1, num_heads=1, blocks='N'),
    dict(dim=16, depth=1, num_heads=1, blocks='D', groups=1, stride=4, offset_kernel=5),
    dict(dim=16, depth=2, num_heads=2, blocks='ND', groups=2, stride=2, offset_kernel=3),
    dict(dim=16, depth=1, num_heads=2, blocks='D', groups=1, stride=1, offset_kernel=3)])
CONFIG = f"""
default_scope = 'mmpretrain'
custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)
model = dict(type='ImageClassifier',
             backbone=dict(type='DAT', arch={ARCH!r}, out_indices=(3,),
                           init_cfg=dict(type='Pretrained', checkpoint='no/such/file.pth')),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=5, in_channels=16,
                       loss=dict(type='CrossEntropyLoss')))
data_preprocessor = dict(num_classes=5, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / 'cls_tiny.py'
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture
def trained(config):
    """A model whose every tensor differs from a fresh build's."""
    torch.manual_seed(1)
    model = build_model_from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def _same(model, state):
    own = model.state_dict()
    assert set(own) == set(state)
    for k, v in own.items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)


def test_whole_model_checkpoint_in_dat_mm_layout(config, trained, tmp_path):
    state = trained.state_dict()
    runner_like = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': state}, runner_like)
    torch.manual_seed(2)
    model = build_model_from_config(config, str(runner_like))
    _same(model, state)
    # A DDP-wrapped model's checkpoint ('module.' before every key) loads the same.
    ddp = tmp_path / 'ddp.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in state.items()}}, ddp)
    _same(build_model_from_config(config, str(ddp)), state)
    # The config's own pretrained file (missing here) is needed only without a checkpoint.
    with pytest.raises(FileNotFoundError, match='pretrained weights not found'):
        build_model_from_config(config).backbone.init_weights()
    model.backbone.init_weights()
    _same(model.backbone, with_prefix(state, 'backbone.'))


def test_published_layout_is_converted(config, trained, tmp_path):
    state = trained.state_dict()
    backbone = with_prefix(state, 'backbone.')
    published = tmp_path / 'dat_pp_published.pth'
    torch.save({'model': published_state(backbone, version=2, head=trained.head.fc)},
               published)
    torch.manual_seed(3)
    _same(build_model_from_config(config, str(published)), state)
    # Backbone alone, from the same file and from a dat_mm whole-model one.
    whole = tmp_path / 'whole.pth'
    torch.save({'state_dict': state}, whole)
    for path in (published, whole):
        bb = build_model_from_config(config, str(path), backbone_only=True)
        assert isinstance(bb, DAT)
        _same(bb, backbone)


def test_backbone_checkpoint_into_a_whole_model(config, trained, tmp_path):
    backbone = with_prefix(trained.state_dict(), 'backbone.')
    path = tmp_path / 'backbone.pth'
    torch.save(backbone, path)
    torch.manual_seed(4)
    model = build_model_from_config(config)
    head = model.head.fc.weight.detach().clone()
    assert load_model_weights(model, str(path)) == 'checkpoint backbone.pth (backbone only)'
    _same(model.backbone, backbone)
    assert torch.equal(model.head.fc.weight, head)


def test_config_object_and_overrides(config):
    cfg = Config.fromfile(config)
    model = build_model_from_config(cfg, cfg_options={'model.head.num_classes': 7})
    assert model.head.fc.out_features == 7
    assert cfg.model.head.num_classes == 5  # the caller's config is not modified
    assert build_model_from_config(cfg, backbone_only=True).out_indices == (3,)


def test_clear_errors(config, tmp_path):
    missing = tmp_path / 'missing.pth'
    with pytest.raises(FileNotFoundError, match=f'checkpoint not found: {missing}'):
        build_model_from_config(config, str(missing))
    with pytest.raises(FileNotFoundError, match='config not found'):
        build_model_from_config(str(tmp_path / 'nope.py'))
    other = tmp_path / 'other_arch.pth'
    torch.save(DAT('tiny++').state_dict(), other)
    with pytest.raises(KeyError, match=f'{other} does not fit DAT: .*shape mismatches'):
        build_model_from_config(config, str(other))
    no_backbone = tmp_path / 'plain.py'
    no_backbone.write_text("model = dict(type='Linear', in_features=2, out_features=2)\n")
    with pytest.raises(ValueError, match=r'plain\.py: model Linear has no backbone'):
        build_model_from_config(str(no_backbone), backbone_only=True)
    foreign = tmp_path / 'foreign.py'
    foreign.write_text("default_scope = 'mmocr'\nmodel = dict(type='DAT')\n")
    with pytest.raises(ValueError, match=r"foreign\.py: config default_scope is 'mmocr'"):
        build_model_from_config(str(foreign))
