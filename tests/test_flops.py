"""FLOP counting: the published figures, the per-operator rules, and independent cross-checks."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from dat_mm import DAT
from dat_mm.analysis import build_from_config, count_config, count_model, count_preset
from dat_mm.analysis.flops import (CATEGORIES, GRID_SAMPLE_FLOPS_PER_OUTPUT, PAPER_GFLOPS,
                                   SOFTMAX_FLOPS_PER_ELEMENT)
from dat_mm.models.layers import (DeformableAttention2d, NeighborhoodAttention2d,
                                  WindowAttention2d)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('arch,side', [('tiny++', 224), ('small++', 224), ('base++', 224)])
def test_dat_pp_within_5_percent_of_the_paper(arch, side):
    report = count_preset(arch, side)
    paper = PAPER_GFLOPS[(arch, side)]
    assert abs(report.flops / 1e9 / paper - 1) < 0.05, report.format()


@pytest.mark.parametrize('arch,side', [('base++', 384), ('tiny', 224), ('small', 224),
                                       ('base', 224), ('base-384', 384)])
def test_other_published_models_within_5_percent(arch, side):
    report = count_preset(arch, side)
    assert abs(report.flops / 1e9 / PAPER_GFLOPS[(arch, side)] - 1) < 0.05, report.format()


#: docs/flops.md's table of the published classifiers (G MACs, two decimals)
DOCUMENTED_GFLOPS = {('tiny++', 224): 4.27, ('small++', 224): 9.40, ('base++', 224): 16.53,
                     ('base++', 384): 49.70, ('tiny', 224): 4.58, ('small', 224): 9.00,
                     ('base', 224): 15.77, ('base-384', 384): 49.89}


def test_published_classifiers_count_the_documented_figures():
    for (arch, side), gflops in DOCUMENTED_GFLOPS.items():
        assert round(count_preset(arch, side).flops / 1e9, 2) == gflops, (arch, side)
    assert count_preset('tiny++').flops == 4_273_297_888  # every operator, to the unit


def test_classifier_params_match_the_spec():
    assert count_preset('tiny++').params == 23_962_876
    assert count_preset('base-384', 384).params == 88_178_272


def _count(module, shape, device=None):
    return count_model(module, shape, device=device).rows


def _total(rows, cat):
    return sum(r[cat] for r in rows.values())


@pytest.mark.parametrize('hw', [(9, 11), (5, 6)])
def test_neighborhood_attention_rule(hw):
    """Each query against its k*k window; maps under the kernel are counted padded to k."""
    B, C, heads, k = 2, 32, 4, 7
    H, W = hw
    Hp, Wp = max(H, k), max(W, k)
    na = NeighborhoodAttention2d(C, heads, k)
    rows = _count(na, (B, C, H, W))
    c = C // heads
    assert _total(rows, 'attn_matmul') == 2 * B * heads * Hp * Wp * k * k * c
    assert _total(rows, 'softmax') == SOFTMAX_FLOPS_PER_ELEMENT * B * heads * Hp * Wp * k * k
    # qkv on the padded map, the output projection after cropping back
    assert _total(rows, "linear") == B * Hp * Wp * C * 3 * C + B * H * W * C * C
    assert _total(rows, 'conv') == 0 and _total(rows, 'grid_sample') == 0


@pytest.mark.parametrize('stride,ks,hw', [(2, 5, (14, 14)), (4, 7, (13, 22)), (1, 3, (7, 5))])
def test_deformable_attention_rule(stride, ks, hw):
    """Every query against the Ns = Hk*Wk sampled keys; two grid_samples (keys, bias)."""
    B, C, heads, groups = 2, 48, 6, 3
    H, W = hw
    dmha = DeformableAttention2d(C, heads, groups, stride, ks)
    rows = _count(dmha, (B, C, H, W))
    pad = 0 if ks == stride else ks // 2
    Hk = (H + 2 * pad - ks) // stride + 1
    Wk = (W + 2 * pad - ks) // stride + 1
    Ns, M, c, gc = Hk * Wk, H * W, C // heads, C // groups
    assert _total(rows, 'attn_matmul') == 2 * B * heads * M * Ns * c
    assert _total(rows, 'softmax') == SOFTMAX_FLOPS_PER_ELEMENT * B * heads * M * Ns
    bilinear = GRID_SAMPLE_FLOPS_PER_OUTPUT[0]
    assert _total(rows, 'grid_sample') == bilinear * (B * C * Ns + B * heads * M * Ns)
    conv = (B * M * C * C  # proj_q
            + 2 * B * Ns * C * C  # proj_k, proj_v on the sampled points
            + B * M * C * C  # proj_out
            + B * groups * gc * Ns * ks * ks  # depth-wise offset conv
            + B * groups * 2 * Ns * gc)  # 1x1 offset conv to (y, x)
    assert _total(rows, 'conv') == conv


def test_window_attention_rule():
    B, C, heads, w, H, W = 1, 24, 3, 7, 14, 21
    attn = WindowAttention2d.shifted(C, heads, w)
    rows = _count(attn, (B, C, H, W))
    windows = (H // w) * (W // w)
    assert _total(rows, 'attn_matmul') == 2 * B * windows * (w * w) ** 2 * C
    assert _total(rows, 'softmax') == SOFTMAX_FLOPS_PER_ELEMENT * B * windows * heads * w ** 4


def test_sdpa_counts_like_the_explicit_attention():
    class Explicit(nn.Module):
        def forward(self, q):
            a = (q @ q.transpose(-1, -2)).softmax(-1)
            return a @ q

    class Fused(nn.Module):
        def forward(self, q):
            return nn.functional.scaled_dot_product_attention(q, q, q)

    shape = (2, 3, 50, 16)
    explicit, fused = _count(Explicit(), shape), _count(Fused(), shape)
    both = ('attn_matmul', 'softmax')  # one fused kernel: its softmax is counted with it
    assert sum(_total(explicit, c) for c in both) == sum(_total(fused, c) for c in both)
    assert _total(explicit, 'softmax') == SOFTMAX_FLOPS_PER_ELEMENT * 2 * 3 * 50 * 50


def test_matches_torch_flop_counter_on_matmul_like_ops():
    """Independent check: torch's FlopCounterMode counts conv/mm/bmm as 2 FLOPs per MAC.
    Both run the reference attention (our count always does; fast paths may tile the work
    differently)."""
    model = DAT('tiny++', out_indices=(0, 1, 2, 3), attn_backend='reference').eval()
    x = torch.randn(1, 3, 72, 104)
    report = count_model(model, tuple(x.shape))
    ours = sum(report.total(c) for c in ('conv', 'linear', 'attn_matmul'))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    assert counter.get_total_flops() == 2 * ours


def test_meta_device_counts_exactly_like_a_real_pass():
    real = count_model(DAT('tiny', out_indices=(3,)), (1, 3, 100, 120))
    meta = count_model(DAT('tiny', out_indices=(3,)), (1, 3, 100, 120), device='meta')
    assert real.rows == meta.rows and real.flops > 0


def test_counts_follow_the_input_size():
    small = count_preset('tiny++', 224).flops
    # 448 = 4x the pixels: convs / linears / NA scale by 4, DMHA's HW x Ns by 16 at the
    # strided stages (more keys per query), so the total grows by more than 4x.
    large = count_preset('tiny++', 448).flops
    assert 4 * small < large < 6 * small


def test_report_rows_cover_the_model():
    report = count_preset('tiny++')
    names = list(report.rows)
    assert names[:3] == ['backbone.stem', 'backbone.stage0', 'backbone.down0']
    assert 'head' in names and 'backbone.out norms' in names
    assert sum(r['params'] for r in report.rows.values()) == report.params
    assert report.rows['head']['linear'] == 512 * 1000
    text = report.format()
    assert 'paper (DAT-T++ classifier): 4.3G' in text and 'total' in text


def test_backend_choice_is_restored():
    model = DAT('tiny++', out_indices=(3,), attn_backend=None)
    count_model(model, (1, 3, 64, 64))
    assert all(m.backend is None for m in model.modules()
               if isinstance(m, (NeighborhoodAttention2d, DeformableAttention2d)))


def test_count_config_classifier_uses_the_test_size():
    report = count_config(str(ROOT / 'configs' / 'mmpretrain' / 'dat_b_pp_in1k_384.py'))
    assert report.input_shape == (1, 3, 384, 384)
    assert report.paper_gflops() == 49.7
    assert math.isclose(report.flops / 1e9, 49.7, rel_tol=0.05)


def test_count_config_dense_counts_the_backbone_only(tmp_path):
    cfg = tmp_path / 'det.py'
    cfg.write_text(
        "custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)\n"
        "model = dict(type='SomeDetector', backbone=dict(type='DAT', arch='tiny++'),\n"
        "             neck=dict(type='FPN'))\n")
    report = count_config(str(cfg), shape=(256, 320), backbone_only=True)
    assert report.input_shape == (1, 3, 256, 320)
    assert not any(name.startswith(('head', 'neck')) for name in report.rows)
    assert report.rows['out norms']['params'] == 2 * (64 + 128 + 256 + 512)
    assert report.paper_gflops() is None


def test_get_flops_cli(capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'get_flops', ROOT / 'tools' / 'analysis' / 'get_flops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(ROOT / 'configs' / 'mmpretrain' / 'dat_t_pp_in1k.py'),
                      '--shape', '224']) == 0
    out = capsys.readouterr().out
    assert 'backbone.stage2' in out and 'DAT-T++' in out
    assert tool.main(['--presets']) == 0
    out = capsys.readouterr().out
    for name in ('DAT-T++', 'DAT-S++', 'DAT-B++', 'DAT-B++ 384', 'DAT-T ', 'DAT-S ', 'DAT-B ',
                 'DAT-B 384'):
        assert name in out


# -- whole detectors and segmentors ------------------------------------------------------------
def _rows_flops(rows, prefix):
    return {k[len(prefix):]: sum(v[c] for c in CATEGORIES) for k, v in rows.items()
            if k.startswith(prefix)}


@pytest.mark.slow
def test_whole_detector_counts_backbone_neck_and_heads_at_the_recipe_box_numbers():
    """Mask R-CNN DAT-T++ (the published config) on a small image: the backbone rows are the
    backbone-only count, neck and heads have their rows, every counted operator is in exactly
    one row (the total is torch's counter's), and the heads saw the recipe's box numbers."""
    cfg = str(ROOT / 'configs' / 'mmdet' / 'mask_rcnn_dat_t_pp.py')
    whole = count_config(cfg, shape=(160, 224))
    alone = count_config(cfg, shape=(160, 224), backbone_only=True)
    assert _rows_flops(whole.rows, 'backbone.') == _rows_flops(alone.rows, '')
    for part in ('neck', 'rpn_head', 'roi_head'):
        assert sum(whole.rows[part][c] for c in CATEGORIES) > 0, part
    assert whole.rows['roi_head']['linear'] > 0 and whole.rows['neck']['linear'] == 0
    assert 'roi_head.bbox_roi_extractor: 1000 boxes' in whole.notes
    assert 'roi_head.mask_roi_extractor: 100 boxes' in whole.notes
    assert whole.params == sum(p.numel() for p in build_from_config(cfg)[0].parameters())
    text = whole.format()
    assert 'roi_head' in text and '1000 boxes' in text


def test_every_operator_lands_in_exactly_one_row():
    """The per-part split of the counter's nested module counts neither loses nor repeats an
    operator: the rows add up to torch's FlopCounterMode total with the same rules."""
    from dat_mm.analysis.flops import CUSTOM_RULES

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = DAT('tiny++', out_indices=(1, 3), attn_backend='reference')
            self.neck = nn.Conv2d(128, 32, 1)
            self.head = nn.Linear(512, 10)

        def forward(self, x):
            a, b = self.backbone(x)
            return self.neck(a).sum() + self.head(b.mean((2, 3))).sum() + (a.softmax(1)).sum()

    model = Wrapper().eval()
    x = torch.randn(1, 3, 64, 96)
    report = count_model(model, tuple(x.shape))
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_RULES)
    with counter, torch.no_grad():
        model(x)
    assert 2 * report.flops == counter.get_total_flops()
    assert report.rows['(outside modules)']['softmax'] == SOFTMAX_FLOPS_PER_ELEMENT * 128 * 8 * 12
    assert report.rows['neck']['conv'] == 8 * 12 * 128 * 32
    assert report.rows['head']['linear'] == 512 * 10


def test_whole_segmentor_counts_the_decode_head_not_the_auxiliary_one():
    cfg = str(ROOT / 'configs' / 'mmseg' / 'upernet_dat_t_pp.py')
    whole = count_config(cfg, shape=(128, 160))
    assert sum(whole.rows['decode_head'][c] for c in CATEGORIES) > 0
    assert whole.rows['auxiliary_head']['params'] > 0
    assert sum(whole.rows['auxiliary_head'][c] for c in CATEGORIES) == 0
    alone = count_config(cfg, shape=(128, 160), backbone_only=True)
    assert _rows_flops(whole.rows, 'backbone.') == _rows_flops(alone.rows, '')
