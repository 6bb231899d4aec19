"""Published checkpoints -> dat_mm (docs/model.md, "Checkpoint layout").

A synthetic published-format checkpoint is built from one of our models by the *inverse*
mapping, written here from docs/model.md's key layout (``patch_proj``, ``layer_norms.{2j,2j+1}``,
``local_perception_units``, ``attns``, ``mlps``, ``down_projs``, ``cls_norm``, ``cls_head``,
the ``.norm`` level of the published LayerNorm wrappers, the v1 buffers, the ``backbone.``
prefix and ``norms`` of the det/seg checkpoints). Every key it produces is checked against the
list of published names (docs/model.md), so the model's parameters can hold the published weights;
then the checkpoint is converted and loaded strictly, and must give the original outputs.
"""
import pytest
import torch
import torch.nn as nn

from dat_mm import DAT
from dat_mm.ops.position_tables import relative_position_index
from dat_mm.converters import (check_state_dict_fits, convert_published_checkpoint,
                               load_backbone_weights)

from published_layout import to_published


class Classifier(nn.Module):
    """The mmpretrain ImageClassifier's layout: backbone (LN on the last stage = cls_norm),
    global average pool, head.fc."""

    def __init__(self, arch):
        super().__init__()
        self.backbone = DAT(arch, out_indices=(3,))
        self.head = nn.Module()
        self.head.fc = nn.Linear(self.backbone.out_channels[-1], 1000)

    def forward(self, x):
        return self.head.fc(self.backbone(x)[-1].mean(dim=(2, 3)))


ARCHS = [('tiny++', 2), ('tiny', 1)]
# A narrow DAT++ (same block kinds and layout, fewer channels; stage 2 deep enough for
# two-digit layer_norms indices) for the error and init_cfg tests.
NARROW = dict(version=2, stages=[
    dict(dim=16, depth=2, num_heads=1, blocks='ND', groups=1, stride=8, offset_kernel=9),
    dict(dim=32, depth=2, num_heads=2, blocks='ND', groups=1, stride=4, offset_kernel=7),
    dict(dim=64, depth=6, num_heads=4, blocks='ND', groups=2, stride=2, offset_kernel=5),
    dict(dim=128, depth=2, num_heads=8, blocks='DD', groups=4, stride=1, offset_kernel=3)])


def _seeded(seed, fn):
    torch.manual_seed(seed)
    return fn()


# -- classification checkpoints --------------------------------------------------------------
@pytest.mark.parametrize('arch,version', ARCHS)
def test_published_classification_checkpoint_converts_and_loads_strictly(arch, version):
    src = _seeded(0, lambda: Classifier(arch)).eval()
    pub = to_published(src.backbone, version, head=src.head.fc)
    if version == 2:  # the shapes of the published N/D tensors
        assert pub['stages.0.attns.0.rpb'].shape == (2, 13, 13)
        assert pub['stages.0.attns.1.rpe_table'].shape == (2, 111, 111)
        assert pub['stages.3.attns.1.conv_offset.3.weight'].shape == (2, 64, 1, 1)
    converted = convert_published_checkpoint({'model': pub})
    assert set(converted) == set(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(converted[k], v), k
    dst = _seeded(1, lambda: Classifier(arch)).eval()
    dst.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


@pytest.mark.parametrize('arch,version', ARCHS)
def test_published_classification_checkpoint_backbone_only(arch, version):
    src = _seeded(0, lambda: Classifier(arch)).eval()
    pub = to_published(src.backbone, version, head=src.head.fc)
    converted = convert_published_checkpoint({'model': pub}, backbone_only=True)
    dst = _seeded(1, lambda: DAT(arch, out_indices=(3,), out_norm=False)).eval()
    dst.load_state_dict(converted, strict=True)  # no cls_norm, no head
    expect = {k: v for k, v in src.backbone.state_dict().items() if not k.startswith('norms.')}
    assert set(converted) == set(expect)
    for k, v in expect.items():
        assert torch.equal(converted[k], v), k


# -- det / seg checkpoints -------------------------------------------------------------------
DENSE_EXTRA = {
    'neck.lateral_convs.0.conv.weight': (256, 64, 1, 1),
    'neck.fpn_convs.3.conv.bias': (256,),
    'rpn_head.rpn_conv.weight': (256, 256, 3, 3),
    'roi_head.bbox_head.fc_cls.weight': (81, 1024),
    'roi_head.mask_head.conv_logits.bias': (80,),
}


def _dense_checkpoint(backbone, version):
    pub = {'backbone.' + k: v for k, v in to_published(backbone, version, dense=True).items()}
    g = torch.Generator().manual_seed(3)
    pub.update({k: torch.randn(s, generator=g) for k, s in DENSE_EXTRA.items()})
    return {'state_dict': pub, 'meta': {'epoch': 12, 'mmdet_version': '2.28.1'}}


@pytest.mark.parametrize('arch,version', ARCHS)
def test_published_dense_checkpoint_converts_and_loads_strictly(arch, version):
    src = _seeded(0, lambda: DAT(arch)).eval()
    ckpt = _dense_checkpoint(src, version)
    converted = convert_published_checkpoint(ckpt)
    expect = {'backbone.' + k for k in src.state_dict()} | set(DENSE_EXTRA)
    assert set(converted) == expect
    for k in DENSE_EXTRA:  # neck and heads keep their names and values
        assert torch.equal(converted[k], ckpt['state_dict'][k])
    dst = _seeded(1, lambda: DAT(arch)).eval()
    dst.load_state_dict({k[len('backbone.'):]: v for k, v in converted.items()
                         if k.startswith('backbone.')}, strict=True)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        for a, b in zip(dst(x), src(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    only = convert_published_checkpoint(ckpt, backbone_only=True)
    assert set(only) == set(src.state_dict())


# -- corrupted checkpoints -------------------------------------------------------------------
@pytest.fixture(scope='module')
def narrow_cls():
    return _seeded(0, lambda: Classifier(NARROW)).eval()


def _convert_and_load(pub, arch=NARROW):
    converted = convert_published_checkpoint({'model': pub})
    dst = Classifier(arch)
    check_state_dict_fits(dst, converted)
    dst.load_state_dict(converted, strict=True)


def test_unmapped_key_is_an_error_naming_it(narrow_cls):
    pub = to_published(narrow_cls.backbone, 2, head=narrow_cls.head.fc)
    pub['patch_embed.0.weight'] = pub.pop('patch_proj.0.weight')   # renamed
    pub['pos_embed'] = torch.zeros(3)                               # extra
    with pytest.raises(KeyError) as err:
        _convert_and_load(pub)
    assert 'patch_embed.0.weight' in str(err.value) and 'pos_embed' in str(err.value)


def test_renamed_leaf_key_is_an_error_naming_it(narrow_cls):
    pub = to_published(narrow_cls.backbone, 2, head=narrow_cls.head.fc)
    pub['stages.0.attns.0.rbp'] = pub.pop('stages.0.attns.0.rpb')
    with pytest.raises(KeyError) as err:
        convert_published_checkpoint({'model': pub})
    # Named as published, without needing a model: every leaf must be a published name.
    assert 'stages.0.attns.0.rbp' in str(err.value)


@pytest.mark.parametrize('key, wrong', [
    ('patch_proj.1.norm.weight', 'patch_proj.1.weight'),       # a norm without its .norm level
    ('patch_proj.0.weight', 'patch_proj.0.norm.weight'),       # a conv with one
    ('down_projs.0.1.norm.bias', 'down_projs.0.1.bias'),
    ('stages.1.attns.1.conv_offset.1.norm.weight', 'stages.1.attns.1.conv_offset.1.weight'),
])
def test_norm_wrapper_level_is_part_of_the_leaf_name(narrow_cls, key, wrong):
    pub = to_published(narrow_cls.backbone, 2, head=narrow_cls.head.fc)
    pub[wrong] = pub.pop(key)
    with pytest.raises(KeyError) as err:
        convert_published_checkpoint({'model': pub})
    assert wrong in str(err.value)


def test_v1_buffers_are_checked_not_blindly_dropped():
    good = relative_position_index(7)
    ok = {'patch_proj.0.weight': torch.zeros(1),
          'stages.0.attns.0.relative_position_index': good}
    assert list(convert_published_checkpoint({'model': ok})) == ['backbone.stem.0.weight']
    bad = dict(ok, **{'stages.0.attns.0.relative_position_index': good.flip(0)})
    with pytest.raises(ValueError, match='relative_position_index'):
        convert_published_checkpoint({'model': bad})
    stray = dict(ok, **{'foo.relative_position_index': good})
    with pytest.raises(KeyError, match='foo.relative_position_index'):
        convert_published_checkpoint({'model': stray})


def test_missing_key_is_an_error_naming_it(narrow_cls):
    pub = to_published(narrow_cls.backbone, 2, head=narrow_cls.head.fc)
    del pub['stages.2.attns.5.rpe_table']
    with pytest.raises((KeyError, RuntimeError), match=r'stages\.2\.blocks\.5\.attn\.rpe_table'):
        _convert_and_load(pub)


def test_wrong_shape_is_an_error_naming_it(narrow_cls):
    pub = to_published(narrow_cls.backbone, 2, head=narrow_cls.head.fc)
    pub['stages.2.attns.2.rpb'] = torch.zeros(4, 11, 11)
    with pytest.raises((KeyError, ValueError, RuntimeError),
                       match=r'stages\.2\.blocks\.2\.attn\.rpb'):
        _convert_and_load(pub)


def test_dense_checkpoint_with_unknown_keys_is_an_error_naming_them():
    src = _seeded(0, lambda: DAT(NARROW))
    ckpt = _dense_checkpoint(src, 2)
    ckpt['state_dict']['backbone.absolute_pos_embed'] = torch.zeros(1)
    ckpt['state_dict']['ema_model.whatever'] = torch.zeros(1)
    with pytest.raises(KeyError) as err:
        convert_published_checkpoint(ckpt)
    assert 'backbone.absolute_pos_embed' in str(err.value)
    assert 'ema_model.whatever' in str(err.value)


def test_not_a_checkpoint_is_an_error():
    with pytest.raises(KeyError, match='model.*state_dict'):
        convert_published_checkpoint({'weights': {}})


# -- init_cfg=dict(type='Pretrained') --------------------------------------------------------
def _pretrained(path, arch=NARROW, **kw):
    m = _seeded(7, lambda: DAT(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                                   **kw)))
    m.init_weights()
    return m


def _assert_same_params(dst, src, skip_norms=False):
    src_sd = src.state_dict()
    for k, v in dst.state_dict().items():
        if skip_norms and k.startswith('norms.'):
            continue
        assert torch.equal(v, src_sd[k]), k


def test_pretrained_published_classification_layout(tmp_path, narrow_cls):
    path = tmp_path / 'dat_pp_t_in1k.pth'
    torch.save({'model': to_published(narrow_cls.backbone, 2, head=narrow_cls.head.fc)}, path)
    m = _pretrained(path)
    # the classifier's cls_norm does not become the dense output norms
    _assert_same_params(m, narrow_cls.backbone, skip_norms=True)


def test_pretrained_published_dense_layout(tmp_path):
    src = _seeded(0, lambda: DAT(NARROW))
    path = tmp_path / 'mrcn_tiny.pth'
    torch.save(_dense_checkpoint(src, 2), path)
    _assert_same_params(_pretrained(path), src)


def test_pretrained_published_v1_dense_layout(tmp_path):
    src = _seeded(0, lambda: DAT('tiny'))
    path = tmp_path / 'v1.pth'
    torch.save(_dense_checkpoint(src, 1), path)
    _assert_same_params(_pretrained(path, arch='tiny'), src)


def test_pretrained_dat_mm_layout_with_prefix(tmp_path):
    src = _seeded(0, lambda: DAT(NARROW))
    path = tmp_path / 'ours.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in src.state_dict().items()},
                'meta': {}}, path)
    _assert_same_params(_pretrained(path, prefix='backbone.'), src)
    path2 = tmp_path / 'plain.pth'
    torch.save(src.state_dict(), path2)
    _assert_same_params(_pretrained(path2), src)


def test_pretrained_mismatching_checkpoint_names_the_keys(tmp_path):
    src = _seeded(0, lambda: DAT(NARROW))
    sd = src.state_dict()
    del sd['stages.2.blocks.3.attn.rpe_table']
    sd['stages.0.blocks.0.attn.extra'] = torch.zeros(1)
    path = tmp_path / 'broken.pth'
    torch.save(sd, path)
    with pytest.raises(KeyError) as err:
        _pretrained(path)
    msg = str(err.value)
    assert 'stages.2.blocks.3.attn.rpe_table' in msg and 'stages.0.blocks.0.attn.extra' in msg


def test_pretrained_other_arch_names_the_shape_mismatch(tmp_path):
    src = _seeded(0, lambda: DAT(NARROW))
    path = tmp_path / 'tiny.pth'
    torch.save(src.state_dict(), path)
    with pytest.raises(KeyError, match=r'shape mismatches.*stem\.0\.weight'):
        load_backbone_weights(DAT('tiny++'), str(path))


def test_pretrained_published_with_unknown_key_names_it(tmp_path, narrow_cls):
    pub = to_published(narrow_cls.backbone, 2, head=narrow_cls.head.fc)
    pub['stages.0.gamma'] = torch.zeros(1)
    path = tmp_path / 'odd.pth'
    torch.save({'model': pub}, path)
    with pytest.raises(KeyError, match=r'stages\.0\.gamma'):
        _pretrained(path)
