"""Resizing v1 relative-position tables on load (fine-tuning at another resolution).

The authors fine-tune DAT-B at 384 from the 224 checkpoint with every table interpolated
bicubically (``F.interpolate(..., mode='bicubic')``, PyTorch's default ``align_corners=False``)
per head: the window table ``((2w-1)^2, heads)`` as a row-major ``(2w-1) x (2w-1)`` grid, the
deformable ``rpe_table`` ``(heads, 2H-1, 2W-1)`` as it is. The references below are written
here: a cubic-convolution oracle (Keys, ``a = -0.75``, half-pixel centres, edge-clamped taps)
built as per-axis matrices, and the authors' ``F.interpolate`` call with the grid unpacked
element by element. Small v1 archs (windows 3 and 5, image sizes 96 and 160) stand for the
224 / 384 pair; the real DAT-B 224 -> 384 and DAT-B++ pairs are built from their configs and
loaded once.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from PIL import Image

from dat_mm import DAT
from dat_mm.datasets.shapes import fill_polygon, shape_polygon
from dat_mm.models.layers import DeformableAttention2d, WindowAttention2d
from dat_mm.ops.position_tables import (can_resize_table, resize_position_table,
                                                  resize_tables_on_load)

from log_capture import CurrentLog

CFG_DIR = Path(__file__).resolve().parents[1] / 'configs' / 'mmpretrain'
TABLES = ('.relative_position_bias_table', '.rpe_table')
SMALL, LARGE = (96, 3), (160, 5)  # (img_size, window): the "224" and "384" models


def _v1_arch(img_size, window):
    win = dict(blocks='LS', use_pe=False)
    return dict(version=1, img_size=img_size, window_size=window, stages=[
        dict(dim=16, depth=2, num_heads=1, **win),
        dict(dim=32, depth=2, num_heads=2, **win),
        dict(dim=64, depth=2, num_heads=4, groups=2, blocks='LD', offset_kernel=5,
             offset_range_factor=2),
        dict(dim=128, depth=2, num_heads=8, groups=4, blocks='LD', offset_kernel=3,
             offset_range_factor=2)])


class _Logged(CurrentLog):
    """The log, and the resize lines in it."""

    def resized(self):
        return [m for m in self.messages if 'resized the position table' in m]


# ---- independent references -----------------------------------------------------------------
def _cubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1-D bicubic interpolation, align_corners=False."""
    a = -0.75

    def kernel(x):
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return 0.0

    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for tap in range(base - 1, base + 3):
            m[i, min(max(tap, 0), n_in - 1)] += kernel(src - tap)
    return m


def _oracle_grid(grid: torch.Tensor, size) -> torch.Tensor:
    """``(heads, h, w)`` -> ``(heads, H, W)`` by the cubic-convolution oracle, float64."""
    mh, mw = _cubic_matrix(grid.shape[1], size[0]), _cubic_matrix(grid.shape[2], size[1])
    return mh @ grid.double() @ mw.T


def _flat_to_grid(table: torch.Tensor) -> torch.Tensor:
    """Swin's ``(side^2, heads)`` table -> ``(heads, side, side)``: row ``i * side + j`` is
    relative offset ``(i - w + 1, j - w + 1)``."""
    side = math.isqrt(table.shape[0])
    grid = torch.empty(table.shape[1], side, side, dtype=table.dtype)
    for i in range(side):
        for j in range(side):
            grid[:, i, j] = table[i * side + j]
    return grid


def _grid_to_flat(grid: torch.Tensor) -> torch.Tensor:
    heads, side, _ = grid.shape
    table = torch.empty(side * side, heads, dtype=grid.dtype)
    for i in range(side):
        for j in range(side):
            table[i * side + j] = grid[:, i, j]
    return table


def _authors_grid(grid: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(grid[None], size=size, mode='bicubic', align_corners=False)[0]


def _reference(table: torch.Tensor, own_shape) -> torch.Tensor:
    """The authors' resize of a state-dict table to ``own_shape``, written out here."""
    if table.ndim == 3:
        return _authors_grid(table, own_shape[1:])
    side = math.isqrt(own_shape[0])
    return _grid_to_flat(_authors_grid(_flat_to_grid(table), (side, side)))


# ---- the function ---------------------------------------------------------------------------
@pytest.mark.parametrize('src, dst', [((5, 5), (9, 9)), ((13, 13), (23, 23)),
                                      ((27, 27), (47, 47)), ((9, 9), (5, 5)), ((5, 7), (9, 13))])
def test_grid_table_equals_bicubic_oracle_and_authors_call(src, dst):
    table = torch.randn(3, *src, dtype=torch.float64)
    out = resize_position_table(table, dst, 'grid')
    assert out.shape == (3, *dst) and out.dtype == torch.float64
    torch.testing.assert_close(out, _oracle_grid(table, dst), rtol=0, atol=1e-12)
    t32 = table.float()
    assert torch.equal(resize_position_table(t32, dst, 'grid'), _authors_grid(t32, dst))


@pytest.mark.parametrize('src_window, dst_window', [(3, 5), (7, 12), (12, 7)])
def test_flat_table_equals_bicubic_oracle_and_authors_call(src_window, dst_window):
    side, new = 2 * src_window - 1, 2 * dst_window - 1
    table = torch.randn(side * side, 4, dtype=torch.float64)
    out = resize_position_table(table, new, 'flat')
    assert out.shape == (new * new, 4) and out.is_contiguous()
    expected = _grid_to_flat(_oracle_grid(_flat_to_grid(table), (new, new)))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    t32 = table.float()
    assert torch.equal(resize_position_table(t32, (new, new), 'flat'),
                       _reference(t32, (new * new, 4)))


def test_resize_keeps_constants_and_the_centre_entry():
    """A constant table stays constant, and the zero-offset entry of an odd table (7x7 ->
    12x12 windows: the centre of 13x13 -> of 23x23) keeps its value exactly."""
    const = torch.full((2, 13, 13), 0.25, dtype=torch.float64)
    torch.testing.assert_close(resize_position_table(const, (23, 23), 'grid'),
                               torch.full((2, 23, 23), 0.25, dtype=torch.float64))
    grid = torch.randn(2, 13, 13, dtype=torch.float64)
    out = resize_position_table(grid, (23, 23), 'grid')
    assert torch.equal(out[:, 11, 11], grid[:, 6, 6])


def test_half_precision_is_resized_in_float32():
    table = torch.randn(2, 5, 5).half()
    out = resize_position_table(table, (9, 9), 'grid')
    assert out.dtype == torch.float16
    assert torch.equal(out, _authors_grid(table.float(), (9, 9)).half())


def test_bad_tables_are_refused_by_name():
    with pytest.raises(ValueError, match='side'):
        resize_position_table(torch.zeros(10, 2), (5, 5), 'flat')
    with pytest.raises(ValueError, match='heads, h, w'):
        resize_position_table(torch.zeros(9, 2), (5, 5), 'grid')
    with pytest.raises(ValueError, match='layout'):
        resize_position_table(torch.zeros(2, 3, 3), (5, 5), 'chw')
    assert can_resize_table((25, 4), (81, 4), 'flat')
    assert not can_resize_table((25, 2), (81, 4), 'flat')
    assert not can_resize_table((24, 4), (81, 4), 'flat')
    assert can_resize_table((4, 5, 5), (4, 9, 9), 'grid')
    assert not can_resize_table((2, 5, 5), (4, 9, 9), 'grid')
    assert not can_resize_table((4, 5), (4, 9, 9), 'grid')


# ---- load_state_dict --------------------------------------------------------------------------
def test_small_window_v1_state_dict_loads_into_larger_window_model():
    small, large = DAT(_v1_arch(*SMALL)), DAT(_v1_arch(*LARGE))
    state = {k: v.clone() for k, v in small.state_dict().items()}
    own_shapes = {k: v.shape for k, v in large.state_dict().items()}
    differing = sorted(k for k in state if state[k].shape != own_shapes[k])
    assert differing and all(k.endswith(TABLES) for k in differing)
    assert any(k.endswith(TABLES[0]) for k in differing)
    assert any(k.endswith(TABLES[1]) for k in differing)
    with _Logged() as log:
        large.load_state_dict(state, strict=True)
    lines = log.resized()
    assert len(lines) == len(differing), lines
    for key, line in zip(differing, lines):
        assert line.startswith(key + ':'), line
        assert str(tuple(state[key].shape)) in line and str(tuple(own_shapes[key])) in line
    loaded = large.state_dict()
    for key, value in state.items():
        if key in differing:
            assert loaded[key].shape == own_shapes[key]
            assert torch.equal(loaded[key], _reference(value, own_shapes[key])), key
        else:
            assert torch.equal(loaded[key], value), key
    assert all(torch.equal(v, state[k]) for k, v in small.state_dict().items())


def test_same_shape_load_resizes_nothing():
    a, b = DAT(_v1_arch(*SMALL)), DAT(_v1_arch(*SMALL))
    with _Logged() as log:
        b.load_state_dict(a.state_dict(), strict=True)
    assert log.resized() == []
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in b.state_dict().items())


@pytest.mark.parametrize('make', [
    lambda heads, window: WindowAttention2d(16, heads, window),
    lambda heads, window: DeformableAttention2d(16, heads, 1, 1, 3, 2.0, True,
                                                (window, window), version=1)],
    ids=['window', 'deformable'])
def test_another_number_of_heads_still_fails_with_size_mismatch(make):
    src, dst = make(2, 3), make(4, 5)
    table = 'rpe_table' if isinstance(src, DeformableAttention2d) else \
        'relative_position_bias_table'
    with _Logged() as log, pytest.raises(RuntimeError, match=f'size mismatch for {table}'):
        dst.load_state_dict(src.state_dict())
    assert log.resized() == []
    same_heads = make(4, 3)
    with _Logged() as log:
        dst.load_state_dict(same_heads.state_dict())
    assert len(log.resized()) == 1


def test_a_flat_table_that_is_no_window_table_is_left_alone():
    dst = WindowAttention2d(16, 2, 5)
    state = dict(dst.state_dict(), relative_position_bias_table=torch.zeros(24, 2))
    with _Logged() as log, pytest.raises(RuntimeError, match='size mismatch'):
        dst.load_state_dict(state)
    assert log.resized() == []


def test_hook_leaves_absent_and_foreign_entries_alone():
    m = DeformableAttention2d(16, 2, 1, 1, 3, 2.0, False, (3, 3), version=1)
    assert m.rpe_table is None
    state = {'rpe_table': torch.zeros(2, 5, 5)}
    resize_tables_on_load((('rpe_table', 'grid'),), m, state, '')
    assert state['rpe_table'].shape == (2, 5, 5)
    with pytest.raises(RuntimeError, match='Unexpected key'):
        m.load_state_dict(dict(m.state_dict(), rpe_table=torch.zeros(2, 5, 5)))


# ---- the published presets and configs ----------------------------------------------------------
def _build_cfg(name, **overrides):
    """The config ``name`` (``model.``-relative ``overrides`` merged) and its classifier."""
    from mmengine.registry import init_default_scope
    MODELS = pytest.importorskip('mmpretrain.registry').MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(str(CFG_DIR / name))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split('.')
        node = cfg.model
        for name in parents:
            node = node[name]
        node[leaf] = value
    return cfg, MODELS.build(cfg.model)


def _config_backbone(name):
    MODELS = pytest.importorskip('mmpretrain.registry').MODELS
    cfg = Config.fromfile(str(CFG_DIR / name))
    return cfg, MODELS.build(cfg.model.backbone)


def test_v1_224_backbone_loads_into_the_384_config_backbone():
    """DAT-B 224 -> DAT-B 384 (the configs' backbones): every differing key is a table with
    the same heads, and the whole state dict loads."""
    cfg, model = _config_backbone('dat_b_in1k_384.py')
    assert cfg.model.init_cfg == dict(type='Pretrained', checkpoint='checkpoints/dat_b_in1k.pth')
    cfg_224, model_224 = _config_backbone('dat_b_in1k.py')
    assert cfg_224.published_checkpoint == cfg.model.init_cfg.checkpoint
    state, own = model_224.state_dict(), model.state_dict()
    differing = [k for k in state if state[k].shape != own[k].shape]
    assert len(differing) == 24 and all(k.endswith(TABLES) for k in differing)
    with _Logged() as log:
        model.load_state_dict(state, strict=True)
    assert len(log.resized()) == 24
    key = 'stages.3.blocks.1.attn.rpe_table'
    assert tuple(state[key].shape) == (32, 13, 13) and tuple(own[key].shape) == (32, 23, 23)
    assert f'{key}: resized the position table bicubically from (32, 13, 13) to (32, 23, 23)' \
        in log.messages
    assert torch.equal(model.state_dict()[key], _reference(state[key], own[key].shape))
    key = 'stages.0.blocks.1.attn.relative_position_bias_table'
    assert tuple(state[key].shape) == (169, 4) and tuple(own[key].shape) == (529, 4)
    assert torch.equal(model.state_dict()[key], _reference(state[key], own[key].shape))


def test_dat_pp_384_keeps_the_224_tables():
    """DAT-B++ 384 is the same backbone as DAT-B++ 224 (tables sampled in normalised
    coordinates): identical table shapes, nothing resized on load."""
    cfg, model = _config_backbone('dat_b_pp_in1k_384.py')
    _, model_224 = _config_backbone('dat_b_pp_in1k.py')
    assert cfg.model.init_cfg.checkpoint == 'checkpoints/dat_b_pp_in1k.pth'
    own, state = model.state_dict(), model_224.state_dict()
    assert list(own) == list(state)
    assert len([k for k in own if k.endswith('.rpe_table')]) == 14
    assert len([k for k in own if k.endswith('.rpb')]) == 12
    assert all(own[k].shape == state[k].shape for k in own)
    with _Logged() as log:
        model.load_state_dict(state, strict=True)
    assert log.resized() == []


# ---- fine-tuning starts from the small model's predictions ---------------------------------------
SCENES = [('circle', (220, 40, 40)), ('square', (40, 200, 60)), ('triangle', (50, 70, 220)),
          ('star', (230, 210, 40))]


def _scene(kind, color, size):
    """One shape on a plain background, drawn at ``size`` (the same scene at every size)."""
    img = Image.new('RGB', (size, size), (120, 120, 120))
    fill_polygon(img, shape_polygon(kind, size / 2, size / 2, 0.6 * size, 0.3), color)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)
    return (x - 127.5) / 64.0


def _images(size):
    return torch.stack([_scene(kind, color, size) for kind, color in SCENES])


def _margins(logits):
    """Per row: the top logit minus the runner-up."""
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def test_fine_tune_at_the_larger_size_starts_from_the_small_models_predictions(tmp_path):
    """A small v1 classifier (windows 3, size 96) whose head puts each of four generated scenes
    in its own class is saved; the classifier for windows 5 and size 160, built from
    dat_b_in1k_384.py with its ``init_cfg`` pointing at that file, initialises through
    mmengine with resized tables and gives every scene, drawn at 160, the same top class.

    The head is the nearest-prototype rule on the small model's pooled features ``f_i``
    (``logit_i(f) = 2 f.f_i - |f_i|^2 = |f|^2 - |f - f_i|^2``), so the prediction at 160 is
    the small-size scene whose features are nearest: it depends on the whole backbone.
    The same head on a freshly initialised backbone must not reproduce the classes."""
    n = len(SCENES)
    common = {'head.in_channels': 128, 'head.num_classes': n}
    _, small = _build_cfg('dat_b_in1k_384.py', **common, **{
        'backbone.arch': _v1_arch(*SMALL), 'init_cfg': None})
    small.eval()
    with torch.no_grad():
        protos = small.neck(small.backbone(_images(SMALL[0])))[0]
        small.head.fc.weight.copy_(2 * protos)
        small.head.fc.bias.copy_(-(protos * protos).sum(1))
        logits_small = small(_images(SMALL[0]), mode='tensor')
    assert logits_small.argmax(1).tolist() == list(range(n))
    assert (_margins(logits_small) > 1.0).all(), logits_small
    path = tmp_path / 'small_224.pth'
    torch.save(small.state_dict(), path)

    _, large = _build_cfg('dat_b_in1k_384.py', **common, **{
        'backbone.arch': _v1_arch(*LARGE), 'init_cfg.checkpoint': str(path)})
    fresh = {k: v.clone() for k, v in large.state_dict().items()}
    saved = small.state_dict()
    resized = [k for k in saved if saved[k].shape != fresh[k].shape]
    assert resized and all(k.endswith(TABLES) for k in resized)
    with _Logged() as log:
        large.init_weights()
    assert len(log.resized()) == len(resized)
    assert not [m for m in log.messages if 'mismatch' in m or 'do not match' in m]
    for key, value in large.state_dict().items():
        expected = _reference(saved[key], fresh[key].shape) if key in resized else saved[key]
        assert torch.equal(value, expected), key
    large.eval()
    with torch.no_grad():
        logits_large = large(_images(LARGE[0]), mode='tensor')
    assert logits_large.shape == (n, n) and torch.isfinite(logits_large).all()
    assert logits_large.argmax(1).tolist() == list(range(n)), logits_large
    assert (_margins(logits_large) > 1.0).all(), logits_large

    large.load_state_dict(dict(fresh, **{k: v for k, v in saved.items() if k.startswith('head.')}))
    with torch.no_grad():
        logits_fresh = large(_images(LARGE[0]), mode='tensor')
    assert logits_fresh.argmax(1).tolist() != list(range(n)), logits_fresh


def test_fine_tune_without_the_224_file_fails_naming_it(tmp_path):
    absent = tmp_path / 'dat_b_in1k.pth'
    _, model = _build_cfg('dat_b_in1k_384.py', **{
        'backbone.arch': _v1_arch(*LARGE), 'head.in_channels': 128, 'head.num_classes': 4,
        'init_cfg.checkpoint': str(absent)})
    with pytest.raises(Exception, match='dat_b_in1k.pth'):
        model.init_weights()
