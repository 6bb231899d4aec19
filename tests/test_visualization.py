"""Capture of deformable sampling positions / attention, drawing, and the visualisation tool."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from dat_mm import DAT
from dat_mm.models.layers import DeformableAttention2d
from dat_mm.visualization import (capture_deformable, deformable_blocks, find_backbone,
                                  to_image_pixels, to_map_pixels)
from dat_mm.visualization.draw import draw_sampling_points, group_colors

ROOT = Path(__file__).resolve().parents[1]

# A small DAT++: every deformable setting of the published models (groups > 1, strides 4/2/1,
# offset kernels 5/3, padding ks//2), at a fraction of the cost.
SMALL_PP = dict(version=2, img_size=64, stages=[
    dict(dim=16, depth=2, num_heads=2, blocks='ND', groups=2, stride=4, offset_kernel=5),
    dict(dim=32, depth=2, num_heads=4, blocks='DN', groups=2, stride=2, offset_kernel=3),
    dict(dim=32, depth=2, num_heads=4, blocks='DD', groups=4, stride=1, offset_kernel=3),
])
# DAT v1 semantics (range-limited offsets, (i + 0.5) / n coordinates, window blocks).
SMALL_V1 = dict(version=1, img_size=56, window_size=7, stages=[
    dict(dim=16, depth=2, num_heads=2, blocks='LS', use_pe=False),
    dict(dim=32, depth=2, num_heads=4, blocks='LD', groups=2, stride=1, offset_kernel=3,
         offset_range_factor=2),
])
ONLY_NA = dict(version=2, img_size=32, stages=[
    dict(dim=16, depth=1, num_heads=2, blocks='N'),
    dict(dim=32, depth=1, num_heads=2, blocks='N'),
])


def _small_pp(**kw):
    torch.manual_seed(0)
    return DAT(arch=SMALL_PP, out_indices=(0, 1, 2), **kw).eval()


def _spec_ref(n: int, version: int) -> torch.Tensor:
    """Reference points of one axis, written from docs/model.md (not from dat_mm's helper)."""
    i = torch.arange(n, dtype=torch.float64)
    if version == 1:
        return (i + 0.5) / n * 2 - 1
    return (i + 0.5) / (n - 1) * 2 - 1


def _conv_out(n: int, k: int, s: int) -> int:
    p = 0 if k == s else k // 2
    return (n + 2 * p - k) // s + 1


def _run_with_offsets(model, x, blocks=None):
    """Forward under capture, also grabbing each block's own conv_offset output."""
    raw = {}
    handles = []
    for i, j in deformable_blocks(model):
        conv = model.stages[i].blocks[j].attn.conv_offset
        handles.append(conv.register_forward_hook(
            lambda m, a, out, key=(i, j): raw.__setitem__(key, out.detach().double())))
    try:
        with torch.no_grad(), capture_deformable(model, blocks) as cap:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return cap, raw


# -- capture: positions ------------------------------------------------------------------------
def test_positions_are_reference_plus_block_offsets_dat_pp():
    model = _small_pp()
    # Larger offsets so that the clamp to [-1, 1] of DAT++ is exercised.
    for i, j in deformable_blocks(model):
        model.stages[i].blocks[j].attn.conv_offset[-1].weight.data.mul_(30)
    B, Hin, Win = 2, 52, 76  # odd sizes: maps 13x19, 7x10, 4x5
    x = torch.randn(B, 3, Hin, Win)
    cap, raw = _run_with_offsets(model, x)
    assert [(r.stage, r.block) for r in cap] == [(0, 1), (1, 0), (2, 0), (2, 1)]
    clamped = 0
    maps = {0: (13, 19), 1: (7, 10), 2: (4, 5)}  # stride 4, 8, 16 with ceil (3x3 s2 p1 convs)
    for rec in cap:
        stage = SMALL_PP['stages'][rec.stage]
        H, W = maps[rec.stage]
        g, ks, s = stage['groups'], stage['offset_kernel'], stage['stride']
        Hk, Wk = _conv_out(H, ks, s), _conv_out(W, ks, s)
        assert rec.query_size == (H, W)
        assert rec.pos.shape == rec.ref.shape == (B, g, Hk, Wk, 2)
        assert rec.key_size == (Hk, Wk) and rec.groups == g
        off = raw[rec.stage, rec.block]  # (B*g, 2, Hk, Wk), channel 0 = y
        assert off.shape == (B * g, 2, Hk, Wk)
        ref = torch.stack(torch.meshgrid(_spec_ref(Hk, 2), _spec_ref(Wk, 2), indexing='ij'), -1)
        expect = (ref + off.permute(0, 2, 3, 1)).clamp(-1, 1).reshape(B, g, Hk, Wk, 2)
        torch.testing.assert_close(rec.ref.double(), ref.expand(B, g, Hk, Wk, 2),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(rec.pos.double(), expect, rtol=0, atol=1e-5)
        clamped += int((expect.abs() == 1).sum())
        # Groups differ: each has its own offsets.
        assert not torch.allclose(rec.pos[:, 0], rec.pos[:, 1])
    assert clamped > 0


def test_positions_are_reference_plus_block_offsets_dat_v1():
    torch.manual_seed(0)
    model = DAT(arch=SMALL_V1, out_indices=(0, 1)).eval()
    B = 1
    cap, raw = _run_with_offsets(model, torch.randn(B, 3, 56, 56))
    (rec,) = list(cap)
    assert (rec.stage, rec.block) == (1, 1)
    Hk = Wk = 7
    off = raw[1, 1]
    ref = torch.stack(torch.meshgrid(_spec_ref(Hk, 1), _spec_ref(Wk, 1), indexing='ij'), -1)
    rng = torch.tensor([1 / Hk, 1 / Wk], dtype=torch.float64)
    expect = ref + off.permute(0, 2, 3, 1).tanh() * rng * 2  # range factor 2, no clamp
    torch.testing.assert_close(rec.pos.double(), expect.reshape(B, 2, Hk, Wk, 2),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(rec.ref.double(), ref.expand(B, 2, Hk, Wk, 2), rtol=0,
                               atol=1e-6)


# -- capture: attention ------------------------------------------------------------------------
def test_attention_is_a_distribution_and_reproduces_the_block_output():
    model = _small_pp()
    x = torch.randn(2, 3, 40, 56)
    attn_mod = model.stages[1].blocks[0].attn
    seen = {}
    h1 = attn_mod.proj_v.register_forward_hook(lambda m, a, o: seen.__setitem__('v', o))
    h2 = attn_mod.register_forward_hook(lambda m, a, o: seen.__setitem__('out', o))
    try:
        with torch.no_grad(), capture_deformable(model, [(1, 0), (2, -1)]) as cap:
            feats = model(x)
    finally:
        h1.remove()
        h2.remove()
    with torch.no_grad():
        plain = model(x)
    for a, b in zip(feats, plain):  # capturing does not change what the model computes
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert [(r.stage, r.block) for r in cap] == [(1, 0), (2, 1)]
    for rec in cap:
        B, nh = 2, rec.num_heads
        assert rec.attn.shape == (B, nh) + rec.query_size + rec.key_size
        assert (rec.attn >= 0).all()
        torch.testing.assert_close(rec.attn.sum(dim=(-2, -1)),
                                   torch.ones(B, nh, *rec.query_size), rtol=0, atol=1e-5)
        recv = rec.received_attention()
        assert recv.shape == (B, rec.groups) + rec.key_size
        torch.testing.assert_close(recv.sum(dim=(-2, -1)), torch.ones(B, rec.groups),
                                   rtol=0, atol=1e-5)
    # The captured weights are the ones the block used: attn @ v -> proj_out = block output.
    rec = cap[1, 0]
    B, nh, c = 2, attn_mod.num_heads, attn_mod.head_dim
    H, W = rec.query_size
    Ns = rec.key_size[0] * rec.key_size[1]
    v = seen['v'].reshape(B, nh, c, Ns).transpose(-1, -2)
    out = rec.attn.reshape(B, nh, H * W, Ns) @ v
    out = attn_mod.proj_out(out.transpose(-1, -2).reshape(B, nh * c, H, W))
    torch.testing.assert_close(out, seen['out'], rtol=1e-4, atol=1e-5)
    # Per-group / per-query views.
    q = rec.query_attention(2, 3)
    hpg = rec.heads_per_group
    torch.testing.assert_close(q[:, 1], rec.attn[:, hpg:2 * hpg, 2, 3].mean(1))
    with pytest.raises(ValueError, match='outside'):
        rec.query_attention(H, 0)


def test_capture_restores_taps_and_costs_nothing_outside():
    model = _small_pp()
    mods = [m for m in model.modules() if isinstance(m, DeformableAttention2d)]
    assert not any(m.tap.enabled for m in mods)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match='boom'):
        with capture_deformable(model) as failed:
            assert all(m.tap.enabled for m in mods)
            raise RuntimeError('boom')
    assert not any(m.tap.enabled for m in mods)
    # Nested captures both record; the inner one leaves the outer one's tap on.
    with torch.no_grad(), capture_deformable(model, 'last') as outer:
        with capture_deformable(model, (2, 1), attention=False) as inner:
            model(x)
        assert model.stages[2].blocks[1].attn.tap.enabled
        assert not model.stages[2].blocks[0].attn.tap.enabled
        model(x)
    assert not any(m.tap.enabled for m in mods)
    assert len(inner) == 1 and inner[0].attn is None and len(outer) == 2
    # The hooks are gone: a tap switched on by hand afterwards reaches none of the captures.
    seen = []
    tap = model.stages[2].blocks[1].attn.tap
    tap.enabled = True
    handle = tap.register_forward_hook(lambda mod, args, out: seen.append(out['attn'].shape))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        tap.enabled = False
    assert seen == [(1, 4, 2, 2, 2, 2)]
    assert len(inner) == 1 and len(outer) == 2 and len(failed) == 0
    with pytest.raises(ValueError, match='attention=False'):
        inner[0].received_attention()
    with pytest.raises(KeyError, match='not chosen'):
        inner[2, 0]
    # A tap enabled by someone else stays enabled after a capture of its block.
    tap.enabled = True
    with capture_deformable(model, (2, 1)):
        pass
    assert tap.enabled


def test_capture_finds_the_backbone_inside_a_model():
    class Detector(nn.Module):  # the shape of an mmdet/mmseg/mmpretrain model
        def __init__(self):
            super().__init__()
            self.backbone = _small_pp()
            self.neck = nn.Conv2d(32, 8, 1)

        def forward(self, x):
            return self.neck(self.backbone(x)[-1])

    class Wrapper(nn.Module):  # DDP-like
        def __init__(self):
            super().__init__()
            self.module = Detector()

    wrapped = Wrapper()
    assert find_backbone(wrapped) is wrapped.module.backbone
    with torch.no_grad(), capture_deformable(wrapped, [(0, 1)]) as cap:
        wrapped.module(torch.randn(1, 3, 32, 32))
    assert cap[0, 1].pos.shape == (1, 2, 2, 2, 2)


# -- capture: clear errors ---------------------------------------------------------------------
@pytest.mark.parametrize('blocks, match', [
    ((4, 0), r'stage 4 is out of range: the backbone has 3 stages .*\(0, 1\), \(1, 0\)'),
    ((0, 2), r'block 2 is out of range: stage 0 has 2 blocks .*deformable blocks: \[1\]'),
    ((0, 0), r'stage 0 block 0 is a neighborhood block, not a deformable one; '
             r'deformable blocks of stage 0: \[1\]'),
    ([(1, 1)], r'stage 1 block 1 is a neighborhood block'),
    ([(0, 1), 'x'], r'\(stage, block\) integers'),
    ('first', r"blocks must be None, 'all', 'last'"),
])
def test_bad_block_choice_is_a_clear_error(blocks, match):
    model = _small_pp()
    with pytest.raises(ValueError, match=match):
        capture_deformable(model, blocks)


def test_no_deformable_blocks_is_a_clear_error():
    with pytest.raises(ValueError, match='has no deformable blocks.*stage 0: neighborhood'):
        capture_deformable(DAT(arch=ONLY_NA, out_indices=(0, 1)))
    with pytest.raises(ValueError, match='holds no DAT backbone'):
        capture_deformable(nn.Sequential(nn.Conv2d(3, 3, 1)))
    short = DAT(arch=SMALL_PP, out_indices=(0,))
    with pytest.raises(ValueError, match='stage 2 never runs.*out_indices=\\(0,\\)'):
        capture_deformable(short, (2, 0))
    assert capture_deformable(short).blocks == [(0, 1)]


# -- coordinates -------------------------------------------------------------------------------
def test_normalised_positions_to_pixels():
    pos = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])  # (y, x)
    torch.testing.assert_close(to_map_pixels(pos, (5, 9)),
                               torch.tensor([[0.0, 0.0], [4.0, 8.0], [2.0, 4.0]]))
    # A 5x9 map spread over a 40x72 input (stride 8): pixel i centred at (i + 0.5) * 8.
    torch.testing.assert_close(to_image_pixels(pos, (5, 9), (40, 72)),
                               torch.tensor([[4.0, 4.0], [36.0, 68.0], [20.0, 36.0]]))
    # A 1-pixel axis: every coordinate is that pixel.
    torch.testing.assert_close(to_image_pixels(torch.tensor([[0.3, -1.0]]), (1, 4), (32, 128)),
                               torch.tensor([[16.0, 16.0]]))


# -- drawing -----------------------------------------------------------------------------------
def test_draw_sampling_points_marks_points_in_group_colours():
    img = np.full((60, 90, 3), 128, np.uint8)
    points = np.array([[[20.5, 30.5], [70.5, 10.5]], [[45.5, 45.5], [5.5, 55.5]]])
    weights = np.array([[1.0, 0.0], [0.5, 0.25]])
    out = draw_sampling_points(img, points, weights, query=(80, 50), caption=[],
                               legend=False, dim=0.0, radius=(1.0, 6.0))
    assert out.size == (90, 60) and out.mode == 'RGB'
    arr = np.asarray(out).astype(int)
    c0, c1 = group_colors(2)
    # The centre of a point is a blend of its group colour over the grey image.
    for (x, y), col in (((20, 30), c0), ((45, 45), c1)):
        px = arr[y, x]
        expect = np.array(col) * 190 / 255 + 128 * (1 - 190 / 255)
        assert np.abs(px - expect).max() < 12, (px, expect)
    assert (arr[2, 2] == 128).all()  # untouched background
    with pytest.raises(ValueError, match='weights must be'):
        draw_sampling_points(img, points, weights[:1])


# -- the tool ----------------------------------------------------------------------------------
CLS_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)
model = dict(type='ImageClassifier', backbone=dict(type='DAT', arch={arch}, out_indices=({last},)),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=10, in_channels=32,
                       loss=dict(type='CrossEntropyLoss')))
data_preprocessor = dict(num_classes=10, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='ResizeEdge', scale=80, edge='short', backend='pillow',
                      interpolation='bicubic'),
                 dict(type='CenterCrop', crop_size=64),
                 dict(type='PackInputs')]
test_dataloader = dict(batch_size=1, dataset=dict(type='CustomDataset', data_root='',
                                                  pipeline=test_pipeline))
"""
DET_CONFIG = """
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py',
          'mmdet::_base_/datasets/coco_instance.py']
default_scope = 'mmdet'
custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, type='DAT', arch={arch}, out_indices=(0, 1, 2)),
             neck=dict(in_channels=[16, 32, 32], out_channels=16))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(200, 120), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""


def _tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'visualize_deformable', ROOT / 'tools' / 'visualize_deformable.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _image(path, h=75, w=101):
    """Shapes on a textured background, saved as PNG."""
    from PIL import Image
    rng = np.random.default_rng(1)
    img = (rng.random((h, w, 3)) * 50 + 90).astype(np.uint8)
    img[10:40, 15:50] = (220, 40, 40)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 50) ** 2 + (xx - 70) ** 2 < 15 ** 2] = (40, 200, 60)
    Image.fromarray(img).save(path)
    return str(path)


def _check_png(path, size):
    from PIL import Image
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == 'PNG' and im.size == size and im.mode == 'RGB'
        return np.asarray(im.convert('RGB'))


@pytest.fixture
def cls_config(tmp_path):
    pytest.importorskip('mmpretrain')
    path = tmp_path / 'cls_small.py'
    path.write_text(CLS_CONFIG.format(arch=repr(SMALL_PP), last=2))
    return str(path)


@pytest.fixture
def det_config(tmp_path):
    pytest.importorskip('mmdet')
    path = tmp_path / 'det_small.py'
    path.write_text(DET_CONFIG.format(arch=repr(SMALL_PP)))
    return str(path)


def test_tool_classifier_png_of_the_image_size(tmp_path, cls_config):
    tool = _tool()
    image = _image(tmp_path / 'shapes.png')
    out = tmp_path / 'out' / 'vis.png'
    info = tool.visualize(tool.parse_args([cls_config, image, '--out', str(out)]))
    assert info['random_init'] and info['frame'] == 'image'
    assert (info['stage'], info['block']) == (2, 1)  # default: last deformable block
    assert info['input_size'] == (64, 64)
    drawn = _check_png(out, (101, 75))
    assert np.abs(drawn.astype(int) - _check_png(image, (101, 75))).max() > 50
    # With a query, on the model's view (the 64x64 centre crop), 'none' as checkpoint.
    out2 = tmp_path / 'q.png'
    assert tool.main([cls_config, 'none', image, '--stage', '1', '--block', '0',
                      '--query', '10,60', '--model-view', '--groups', '1',
                      '--out', str(out2)]) == 0
    _check_png(out2, (64, 64))


def _marker_image(path, h=90, w=120, box=(30, 20, 38, 26)):
    """A white rectangle (x0, y0, x1, y1: pixels x0..x1-1, y0..y1-1) on black; its centre
    ((x0 + x1) / 2, (y0 + y1) / 2) in continuous pixel coordinates is the known point."""
    from PIL import Image
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    Image.fromarray(img).save(path)
    return str(path), np.array([(x0 + x1) / 2, (y0 + y1) / 2])


def _centroid(view):
    """Brightness-weighted centre (x, y) of the marker in an image, pixel k centred at k + .5."""
    weight = view.astype(np.float64).mean(-1)
    yy, xx = np.mgrid[:weight.shape[0], :weight.shape[1]] + 0.5
    return np.array([(xx * weight).sum(), (yy * weight).sum()]) / weight.sum()


def _keep_ratio(w, h, long_edge, short_edge):
    """mmcv's Resize(keep_ratio=True) output size: a common factor, rounded half up."""
    s = min(long_edge / max(w, h), short_edge / min(w, h))
    return int(w * s + 0.5), int(h * s + 0.5)


def _map_with(tool, scope, pipeline, image):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    pytest.importorskip(scope)
    with DefaultScope.overwrite_default_scope(scope):
        return tool.run_pipeline(Config(dict(test_pipeline=pipeline)), image)


def test_geometry_mmdet_resize_flip_pad(tmp_path):
    """mmdet's Resize / RandomFlip record homography_matrix; Pad (bottom/right) moves nothing."""
    tool = _tool()
    image, point = _marker_image(tmp_path / 'marker.png')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(200, 120), keep_ratio=True),
                dict(type='RandomFlip', prob=1.0),
                dict(type='Pad', size_divisor=32),
                dict(type='PackDetInputs')]
    data, loaded, view, geo = _map_with(tool, 'mmdet', pipeline, image)
    rw, rh = _keep_ratio(120, 90, 200, 120)  # 160 x 120
    assert view.shape[:2] == (128, 160) and data['inputs'].shape[-2:] == (128, 160)
    expect = np.array([rw - point[0] * rw / 120, point[1] * rh / 90])  # flipped horizontally
    np.testing.assert_allclose(geo.to_view(point), expect, atol=1e-6)
    np.testing.assert_allclose(geo.to_orig(expect), point, atol=1e-6)
    np.testing.assert_allclose(_centroid(view), expect, atol=0.2)


def test_geometry_mmseg_resize_and_vertical_flip(tmp_path):
    """mmseg's pipelines use mmcv's Resize (scale_factor) and RandomFlip (flip, direction)."""
    tool = _tool()
    image, point = _marker_image(tmp_path / 'marker.png')
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(160, 100), keep_ratio=True),
                dict(type='RandomFlip', prob=1.0, direction='vertical'),
                dict(type='PackSegInputs')]
    data, loaded, view, geo = _map_with(tool, 'mmseg', pipeline, image)
    rw, rh = _keep_ratio(120, 90, 160, 100)  # 133 x 100
    assert view.shape[:2] == (rh, rw)
    expect = np.array([point[0] * rw / 120, rh - point[1] * rh / 90])
    np.testing.assert_allclose(geo.to_view(point), expect, atol=1e-6)
    np.testing.assert_allclose(_centroid(view), expect, atol=0.2)


def test_geometry_mmpretrain_resize_edge_center_crop(tmp_path):
    """ResizeEdge records scale_factor; mmcv's CenterCrop records only the new shape, so the
    tool takes the offset it computes from the shapes: half the margin."""
    tool = _tool()
    image, point = _marker_image(tmp_path / 'marker.png', h=75, w=101, box=(24, 30, 32, 36))
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='ResizeEdge', scale=80, edge='short', backend='pillow',
                     interpolation='bicubic'),
                dict(type='CenterCrop', crop_size=64),
                dict(type='PackInputs')]
    data, loaded, view, geo = _map_with(tool, 'mmpretrain', pipeline, image)
    rw, rh = int(80 * 101 / 75), 80  # short edge (height) to 80: 107 x 80
    assert loaded.shape[:2] == (75, 101) and view.shape[:2] == (64, 64)
    expect = np.array([point[0] * rw / 101 - (rw - 64) / 2, point[1] * rh / 75 - (rh - 64) / 2])
    # Python rounds the half-pixel margin (107 - 64) / 2 = 21.5 to 22.
    expect[0] -= 0.5
    np.testing.assert_allclose(geo.to_view(point), expect, atol=1e-6)
    np.testing.assert_allclose(_centroid(view), expect, atol=0.2)


@pytest.mark.parametrize('step, name', [
    (dict(type='RandomCrop', crop_size=64), 'RandomCrop'),
    (dict(type='Rotate', angle=30.0, prob=1.0, random_negative_prob=0.0), 'Rotate'),
])
def test_geometry_not_recorded_is_a_clear_error(tmp_path, capsys, step, name):
    """A transform that moves pixels and records nothing cannot be mapped back: the tool says
    which one, and draws on the model's view when asked to."""
    pytest.importorskip('mmpretrain')
    cfg = tmp_path / 'cls_crop.py'
    cfg.write_text(CLS_CONFIG.format(arch=repr(SMALL_PP), last=2).replace(
        "dict(type='CenterCrop', crop_size=64)", repr(step)))
    tool = _tool()
    image = _image(tmp_path / 'shapes.png')
    out = tmp_path / 'x.png'
    assert tool.main([str(cfg), image, '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert f'test pipeline step {name} changed the image geometry' in err, err
    assert '--model-view' in err and not out.exists()
    assert tool.main([str(cfg), image, '--model-view', '--out', str(out)]) == 0
    assert out.exists()


def test_tool_detector_png_with_checkpoint(tmp_path, det_config):
    tool = _tool()
    image = _image(tmp_path / 'shapes.png', h=90, w=120)
    torch.manual_seed(3)
    ckpt = tmp_path / 'backbone.pth'
    torch.save(DAT(arch=SMALL_PP, out_indices=(0, 1, 2)).state_dict(), ckpt)
    out = tmp_path / 'det.png'
    info = tool.visualize(tool.parse_args([det_config, str(ckpt), image, '--stage', '0',
                                           '--query', '60,40', '--show-ref',
                                           '--out', str(out)]))
    assert not info['random_init'] and 'backbone only' in info['weights']
    assert info['input_size'] == (128, 160)  # 120x90 resized to 160x120, padded to 32
    assert info['query_size'] == (32, 40) and info['key_size'] == (8, 10)
    _check_png(out, (120, 90))
    # A checkpoint that does not fit the backbone is an error, not a silent random model.
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': {'backbone.stem.0.weight': torch.zeros(1)}}, bad)
    with pytest.raises(KeyError, match='does not fit DAT'):
        tool.visualize(tool.parse_args([det_config, str(bad), image]))


@pytest.mark.parametrize('extra, match', [
    (['--stage', '7'], 'stage 7 is out of range'),
    (['--stage', '0', '--block', '0'], 'stage 0 block 0 is a neighborhood block'),
    (['--stage', '2', '--block', '5'], 'block 5 is out of range: stage 2 has 2 blocks'),
    (['--query', '500,5'], r'outside the image \(101x75'),
    (['--groups', '9'], r'--groups \[9\] out of range'),
])
def test_tool_bad_choices_are_clear_errors(tmp_path, cls_config, capsys, extra, match):
    tool = _tool()
    image = _image(tmp_path / 'shapes.png')
    assert tool.main([cls_config, image, '--out', str(tmp_path / 'x.png')] + extra) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / 'x.png').exists()


def test_tool_without_deformable_blocks_is_a_clear_error(tmp_path):
    """Run as a command: a config whose backbone has only neighbourhood blocks."""
    pytest.importorskip('mmpretrain')
    only_na = dict(ONLY_NA, stages=[ONLY_NA['stages'][0], dict(ONLY_NA['stages'][1], dim=32)])
    cfg = tmp_path / 'cls_na.py'
    cfg.write_text(CLS_CONFIG.format(arch=repr(only_na), last=1))
    image = _image(tmp_path / 'shapes.png')
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'visualize_deformable.py'),
                           str(cfg), 'none', image, '--out', str(tmp_path / 'x.png')],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert 'has no deformable blocks' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'x.png').exists()


@pytest.mark.parametrize('config, pipeline', [
    ('configs/mmpretrain/dat_t_pp_in1k.py', None),  # its own Resize(256) + CenterCrop(224)
    ('configs/mmdet/mask_rcnn_dat_t_pp.py',         # its own pipeline at 1333x800 is slow on CPU
     "[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(160, 128), keep_ratio=True),"
     " dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',"
     " 'scale_factor'))]"),
])
def test_tool_on_the_project_configs(tmp_path, config, pipeline):
    """The published DAT-T++ configs, randomly initialised, on a generated image."""
    if not (ROOT / config).is_file():
        pytest.skip(f'{config} is not in this checkout')
    pytest.importorskip('mmdet' if 'mmdet' in config else 'mmpretrain')
    cfg = str(ROOT / config)
    if pipeline is not None:
        cfg = tmp_path / 'small.py'
        cfg.write_text(f"_base_ = [{str(ROOT / config)!r}]\n"
                       f"test_dataloader = dict(dataset=dict(pipeline={pipeline}))\n")
        cfg = str(cfg)
    tool = _tool()
    image = _image(tmp_path / 'shapes.png', h=90, w=120)
    out = tmp_path / 'real.png'
    info = tool.visualize(tool.parse_args([cfg, 'none', image, '--stage', '2', '--block', '-1',
                                           '--query', '40,30', '--out', str(out)]))
    assert (info['stage'], info['block']) == (2, 17) and info['groups'] == 4
    _check_png(out, (120, 90))
