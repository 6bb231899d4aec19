"""tools/model_converters/dat_official_to_mm.py on synthetic checkpoints in the published layout.

The published checkpoints are not available offline, so each test builds one from our own
model with the authors' key names (tests/published_layout.py: the inverse mapping, written from
docs/model.md independently of dat_mm/converters.py), converts it with the CLI and checks the
result against the model it came from.
"""
import importlib.util
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from dat_mm import DAT
from dat_mm.apis import build_model_from_config

from published_layout import to_published

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'model_converters' / 'dat_official_to_mm.py'
CFG_TPP = str(ROOT / 'configs' / 'mmpretrain' / 'dat_t_pp_in1k.py')
CFG_T = str(ROOT / 'configs' / 'mmpretrain' / 'dat_t_in1k.py')


def _load_tool():
    spec = importlib.util.spec_from_file_location('dat_official_to_mm', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

def to_published_backbone(backbone, dense=False):
    """Backbone state in the authors' layout: ImageNet (norms.3 -> cls_norm) or det/seg."""
    return OrderedDict(to_published(backbone, backbone.arch.version, dense))


def published_classifier(model):
    """{'model': ...} as in LeapLabTHU/DAT's ImageNet checkpoints, from an ImageClassifier."""
    state = to_published_backbone(model.backbone)
    state['cls_head.weight'] = model.head.fc.weight.detach().clone()
    state['cls_head.bias'] = model.head.fc.bias.detach().clone()
    return {'model': state, 'epoch': 299, 'max_accuracy': 83.9}


def build(config):
    return build_model_from_config(config).eval()


def randomize(model):
    """Non-default values everywhere, so that a tensor loaded into the wrong place shows."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def run_cli(*args):
    return tool.main([str(a) for a in args])


@pytest.fixture(scope='module')
def tpp_model():
    torch.manual_seed(1)
    return randomize(build(CFG_TPP))


@pytest.fixture(scope='module')
def tpp_published(tpp_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('published') / 'dat_pp_tiny_in1k_224.pth'
    torch.save(published_classifier(tpp_model), path)
    return path


def test_key_names_follow_the_spec(tpp_published):
    keys = set(torch.load(tpp_published, weights_only=True)['model'])
    for key in ('patch_proj.0.weight', 'patch_proj.1.norm.weight', 'patch_proj.4.norm.bias',
                'stages.0.layer_norms.3.norm.weight', 'stages.0.local_perception_units.1.weight',
                'stages.0.attns.0.rpb', 'stages.0.attns.0.qkv.weight',
                'stages.0.attns.1.proj_q.weight', 'stages.0.attns.1.conv_offset.0.weight',
                'stages.0.attns.1.conv_offset.1.norm.weight',
                'stages.0.attns.1.conv_offset.3.weight', 'stages.0.attns.1.rpe_table',
                'stages.2.mlps.17.linear1.0.weight', 'stages.2.mlps.17.dwc.weight',
                'down_projs.2.0.weight', 'down_projs.2.1.norm.bias', 'cls_norm.norm.weight',
                'cls_head.weight'):
        assert key in keys, key
    assert 'stages.0.attns.1.conv_offset.3.bias' not in keys


def test_cli_classifier_loads_strict_with_identical_outputs(tpp_model, tpp_published, tmp_path):
    dst = tmp_path / 'dat_t_pp_in1k.pth'
    proc = subprocess.run([sys.executable, str(TOOL), str(tpp_published), str(dst),
                           '--config', CFG_TPP], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert 'fits' in proc.stdout
    ckpt = torch.load(dst, weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert ckpt['meta']['backbone_only'] is False and ckpt['meta']['epoch'] == 299
    assert all(k.startswith(('backbone.', 'head.fc.')) for k in ckpt['state_dict'])

    fresh = build(CFG_TPP)
    fresh.load_state_dict(ckpt['state_dict'], strict=True)
    for k, v in tpp_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tpp_model(x, mode='tensor')
        got = fresh(x, mode='tensor')
    assert got.shape == (1, 1000)
    assert torch.equal(got, expected)


def test_backbone_only_loads_through_init_cfg(tpp_model, tpp_published, tmp_path):
    dst = tmp_path / 'dat_t_pp_backbone.pth'
    assert run_cli(tpp_published, dst, '--backbone-only', '--config', CFG_TPP) == 0
    state = torch.load(dst, weights_only=True)['state_dict']
    assert not any(k.startswith(('backbone.', 'head.', 'norms.')) for k in state)

    backbone = DAT('tiny++', out_indices=(0, 1, 2, 3),
                   init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    untouched = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.init_weights()
    src = tpp_model.backbone.state_dict()
    own = backbone.state_dict()
    for k, v in own.items():
        if k.startswith('norms.'):  # det/seg output norms: not in an ImageNet checkpoint
            assert torch.equal(v, untouched[k]), k
        else:
            assert torch.equal(v, src[k]), k
    # the classifier's cls_norm is not carried over into the dense backbone's norms.3
    assert not torch.equal(own['norms.3.weight'], src['norms.3.weight'])


def _corrupt_and_expect(tmp_path, capsys, published, mutate, expect, config=CFG_TPP):
    ckpt = torch.load(published, weights_only=True)
    mutate(ckpt['model'])
    bad = tmp_path / 'corrupt.pth'
    torch.save(ckpt, bad)
    dst = tmp_path / 'out.pth'
    assert run_cli(bad, dst, '--config', config) == 1
    err = capsys.readouterr().err
    for name in expect:
        assert name in err, err
    assert not dst.exists()


def test_unmappable_keys_are_named(tpp_published, tmp_path, capsys):
    def mutate(state):
        state['head_dist.weight'] = torch.zeros(3)
        state['pos_embed'] = torch.zeros(3)
    _corrupt_and_expect(tmp_path, capsys, tpp_published, mutate,
                        ['head_dist.weight', 'pos_embed'])


def test_unknown_key_under_a_known_prefix_is_named_as_published(tpp_published, tmp_path, capsys):
    def mutate(state):
        state['stages.1.attns.1.extra_table'] = torch.zeros(3)
    _corrupt_and_expect(tmp_path, capsys, tpp_published, mutate,
                        ['have no place in dat_mm', 'stages.1.attns.1.extra_table'])


def test_missing_key_is_named(tpp_published, tmp_path, capsys):
    def mutate(state):
        del state['stages.1.attns.1.rpe_table']
        del state['cls_head.bias']
    _corrupt_and_expect(tmp_path, capsys, tpp_published, mutate,
                        ['backbone.stages.1.blocks.1.attn.rpe_table', 'head.fc.bias'])


def test_wrong_shape_is_named(tpp_published, tmp_path, capsys):
    def mutate(state):
        state['stages.0.attns.0.rpb'] = torch.zeros(2, 11, 11)
    _corrupt_and_expect(tmp_path, capsys, tpp_published, mutate,
                        ['backbone.stages.0.blocks.0.attn.rpb', '(2, 11, 11)'])


def test_checkpoint_of_another_arch_fails_against_the_config(tpp_published, tmp_path, capsys):
    # a T++ checkpoint checked against the S++ config: every shape differs
    dst = tmp_path / 'out.pth'
    assert run_cli(tpp_published, dst, '--config',
                   ROOT / 'configs' / 'mmpretrain' / 'dat_s_pp_in1k.py') == 1
    assert 'shape mismatches' in capsys.readouterr().err


def test_pickled_objects_are_refused_with_the_reason(tmp_path, capsys):
    bad = tmp_path / 'with_objects.pth'
    torch.save({'model': {'patch_proj.0.weight': torch.zeros(1)}, 'config': Path('x')}, bad)
    assert run_cli(bad, tmp_path / 'out.pth') == 1
    err = capsys.readouterr().err
    assert 'refused' in err and 'PosixPath' in err and 'torch.save' in err


def test_no_weights_in_file_is_an_error(tmp_path, capsys):
    bad = tmp_path / 'empty.pth'
    torch.save({'optimizer': {}}, bad)
    assert run_cli(bad, tmp_path / 'out.pth') == 1
    assert "neither 'model'" in capsys.readouterr().err


def test_dense_checkpoint_keeps_neck_and_heads(tmp_path):
    """A published mmdet 2 checkpoint: backbone. prefix with per-stage norms, plus neck/heads."""
    torch.manual_seed(2)
    backbone = randomize(DAT('tiny++', out_indices=(0, 1, 2, 3)))
    state = OrderedDict(('backbone.' + k, v)
                        for k, v in to_published_backbone(backbone, dense=True).items())
    assert 'backbone.norms.0.norm.weight' in state
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 64, 1, 1)
    state['rpn_head.rpn_conv.weight'] = torch.randn(256, 256, 3, 3)
    state['roi_head.bbox_head.fc_cls.bias'] = torch.randn(81)
    src = tmp_path / 'mrcn_tiny_1x.pth'
    torch.save({'state_dict': state, 'meta': {'epoch': 12}}, src)

    dst = tmp_path / 'converted.pth'
    assert run_cli(src, dst) == 0
    out = torch.load(dst, weights_only=True)['state_dict']
    expected = {'backbone.' + k: v for k, v in backbone.state_dict().items()}
    expected.update({k: v for k, v in state.items() if not k.startswith('backbone.')})
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert torch.equal(out[k], v), k

    # backbone only: the dense checkpoint's output norms come along and load through init_cfg
    bb = tmp_path / 'backbone.pth'
    assert run_cli(src, bb, '--backbone-only') == 0
    fresh = DAT('tiny++', out_indices=(0, 1, 2, 3),
                init_cfg=dict(type='Pretrained', checkpoint=str(bb)))
    fresh.init_weights()
    for k, v in backbone.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_dense_checkpoint_with_foreign_part_is_refused(tmp_path, capsys):
    backbone = DAT('tiny++', out_indices=(0, 1, 2, 3))
    state = OrderedDict(('backbone.' + k, v)
                        for k, v in to_published_backbone(backbone, dense=True).items())
    state['ema_backbone.stem.0.weight'] = torch.zeros(1)
    src = tmp_path / 'dense.pth'
    torch.save({'state_dict': state}, src)
    assert run_cli(src, tmp_path / 'out.pth') == 1
    assert 'ema_backbone.stem.0.weight' in capsys.readouterr().err


@pytest.mark.slow
def test_v1_classifier_with_published_buffers(tmp_path):
    """DAT v1: window blocks' index/mask buffers in the published file are dropped."""
    torch.manual_seed(3)
    model = randomize(build(CFG_T))
    published = published_classifier(model)
    assert any(k.endswith('attn_mask') for k in published['model'])
    assert 'stages.0.attns.0.relative_position_bias_table' in published['model']
    assert 'stages.0.mlps.0.chunk.linear1.weight' in published['model']
    src = tmp_path / 'dat_tiny_in1k_224.pth'
    torch.save(published, src)
    dst = tmp_path / 'dat_t_in1k.pth'
    assert run_cli(src, dst, '--config', CFG_T) == 0
    fresh = build(CFG_T)
    fresh.load_state_dict(torch.load(dst, weights_only=True)['state_dict'], strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(fresh(x, mode='tensor'), model(x, mode='tensor'))
