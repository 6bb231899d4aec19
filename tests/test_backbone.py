"""The DAT backbone against docs/model.md: presets (structure and parameter counts to the unit),
the whole forward pass against a composition of tests/oracles.py, shapes at several input
sizes, errors, with_cp, frozen_stages, state_dict round trips and the drop-path schedule.
"""
import math

import pytest
import torch
import torch.nn as nn

import dat_mm.models.backbones.dat as dat_module
from dat_mm import DAT
from dat_mm.models.layers import (ConvFFN, DeformableAttention2d, DropPath,
                                  NeighborhoodAttention2d, TokenMLP, WindowAttention2d)
from oracles import backbone_oracle

# -- the published models (docs/model.md), written out -----------------------------------------


def _datpp(dims, heads, groups, dpr):
    return dict(version=2, img_size=224, window=7, dims=dims, heads=heads, groups=groups,
                depths=(2, 4, 18, 2), patterns=('ND', 'ND', 'ND', 'DD'), strides=(8, 4, 2, 1),
                kernels=(9, 7, 5, 3), factors=(-1, -1, -1, -1), use_pe=(True,) * 4, dpr=dpr)


def _v1(dims, depths, heads, groups, dpr, img_size=224, window=7):
    # offset kernels of v1 D blocks: the authors' per-stage ksizes (9, 7, 5, 3); v1 D blocks
    # are in stages 2 and 3 only (not listed in docs/model.md; the parameter counts pin them)
    return dict(version=1, img_size=img_size, window=window, dims=dims, heads=heads,
                groups=(None, None) + groups, depths=depths,
                patterns=('LS', 'LS', 'LD', 'LD'), strides=(None, None, 1, 1),
                kernels=(None, None, 5, 3), factors=(None, None, 2, 2),
                use_pe=(False, False, True, True), dpr=dpr)


SPEC = {
    'tiny++': _datpp((64, 128, 256, 512), (2, 4, 8, 16), (1, 2, 4, 8), 0.2),
    'small++': _datpp((96, 192, 384, 768), (3, 6, 12, 24), (1, 2, 3, 6), 0.4),
    'base++': _datpp((128, 256, 512, 1024), (4, 8, 16, 32), (2, 4, 8, 16), 0.7),
    'tiny': _v1((96, 192, 384, 768), (2, 2, 6, 2), (3, 6, 12, 24), (3, 6), 0.2),
    'small': _v1((96, 192, 384, 768), (2, 2, 18, 2), (3, 6, 12, 24), (3, 6), 0.3),
    'base': _v1((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), (4, 8), 0.5),
    # the B-384 v1 model is built with img_size 384 (and, in the authors' config, windows 12)
    'base-384': _v1((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), (4, 8), 0.5,
                    img_size=384, window=12),
}
PARAMS_WITH_HEAD = {
    'tiny++': 23_962_876, 'small++': 53_127_366, 'base++': 93_690_640,
    'tiny': 28_319_138, 'small': 49_700_402, 'base': 87_881_632, 'base-384': 88_178_272,
}
PARAMS_NO_HEAD = {'tiny++': 23_448_852, 'small++': 52_356_830, 'base++': 92_663_592}
ARCHS = list(SPEC)


# Narrow versions of the published architectures (same block kinds, strides, kernels and
# formulas, fewer channels and blocks) keep the default suite fast; the presets themselves
# are checked structurally and by parameter count, and numerically in float32 (some slow).
NARROW_PP = dict(version=2, stages=[
    dict(dim=16, depth=2, num_heads=1, blocks='ND', groups=1, stride=8, offset_kernel=9),
    dict(dim=32, depth=2, num_heads=2, blocks='ND', groups=1, stride=4, offset_kernel=7),
    dict(dim=64, depth=2, num_heads=4, blocks='ND', groups=2, stride=2, offset_kernel=5),
    dict(dim=128, depth=2, num_heads=8, blocks='DD', groups=4, stride=1, offset_kernel=3)])
NARROW_PP_SPEC = dict(SPEC['tiny++'], depths=(2, 2, 2, 2), dims=(16, 32, 64, 128))


def _narrow_pp(**kw):
    return DAT(NARROW_PP, **kw)


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


def _oracle_arch(spec):
    """The per-stage settings the oracle needs, from a SPEC entry."""
    return dict(version=spec['version'], window=spec['window'], stages=[
        dict(pattern=spec['patterns'][i], depth=spec['depths'][i], stride=spec['strides'][i],
             offset_kernel=spec['kernels'][i], offset_range_factor=spec['factors'][i],
             use_pe=spec['use_pe'][i]) for i in range(4)])


# -- parameter counts and structure ----------------------------------------------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_classifier_parameter_count_equals_spec(arch):
    """backbone (with the last stage's LN = the published cls_norm) + Linear(C3, 1000)."""
    backbone = DAT(arch, out_indices=(3,))
    c3 = SPEC[arch]['dims'][3]
    head = nn.Linear(c3, 1000)
    assert _n_params(backbone) + _n_params(head) == PARAMS_WITH_HEAD[arch]


@pytest.mark.parametrize('arch', list(PARAMS_NO_HEAD))
def test_backbone_without_head_parameter_count_equals_spec(arch):
    assert _n_params(DAT(arch, out_indices=(3,), out_norm=False)) == PARAMS_NO_HEAD[arch]


@pytest.mark.parametrize('arch', ARCHS)
def test_preset_structure_follows_spec(arch):
    spec = SPEC[arch]
    m = DAT(arch)
    v2 = spec['version'] == 2
    assert m.num_features == list(spec['dims'])
    assert m.out_channels == list(spec['dims'])
    # stem and down projections
    if v2:
        convs = [m.stem[0], m.stem[3]]
        assert [(c.kernel_size, c.stride, c.padding) for c in convs] == [((3, 3), (2, 2),
                                                                          (1, 1))] * 2
        assert convs[0].out_channels == spec['dims'][0] // 2
    else:
        assert (m.stem[0].kernel_size, m.stem[0].stride) == ((4, 4), (4, 4))
    for i, down in enumerate(m.downsamples):
        conv = down[0]
        assert conv.bias is None and conv.out_channels == spec['dims'][i + 1]
        expect = ((3, 3), (2, 2), (1, 1)) if v2 else ((2, 2), (2, 2), (0, 0))
        assert (conv.kernel_size, conv.stride, conv.padding) == expect
    fmap = spec['img_size'] // 4
    for i, stage in enumerate(m.stages):
        blocks = stage.blocks
        assert len(blocks) == spec['depths'][i]
        for j, block in enumerate(blocks):
            kind = spec['patterns'][i][j % 2]
            attn = block.attn
            assert (block.lpu is not None) == v2
            assert isinstance(block.mlp, ConvFFN if v2 else TokenMLP)
            if kind == 'N':
                assert isinstance(attn, NeighborhoodAttention2d)
                assert attn.kernel_size == 7 and attn.num_heads == spec['heads'][i]
            elif kind == 'D':
                assert isinstance(attn, DeformableAttention2d)
                assert attn.num_heads == spec['heads'][i]
                assert attn.groups == spec['groups'][i]
                assert attn.conv_offset[0].stride == (spec['strides'][i],) * 2
                assert attn.conv_offset[0].kernel_size == (spec['kernels'][i],) * 2
                assert attn.offset_range_factor == spec['factors'][i]
                assert attn.version == spec['version']
                if spec['use_pe'][i]:
                    assert attn.rpe_table.shape == (spec['heads'][i], 2 * fmap - 1, 2 * fmap - 1)
                else:
                    assert attn.rpe_table is None
            else:
                assert isinstance(attn, WindowAttention2d)
                assert attn.window_size == spec['window']
                assert attn.shift == (math.ceil(spec['window'] / 2) if kind == 'S' else 0)
                assert attn.num_heads == spec['heads'][i]
        fmap //= 2


# -- the whole forward pass against the oracles (tests/oracles.py) ---------------------------
def _compare_with_oracle(model, spec, x, dtype=torch.float64, **kw):
    """float64 where affordable (tight tolerance); float32 for the preset-sized models (float64
    grouped convolutions are very slow on CPU), with a tolerance far below the effect of any
    formula mistake (outputs are LayerNorm-ed, O(1))."""
    model = model.to(dtype).eval()
    x = x.to(dtype)
    with torch.no_grad():
        outs = model(x)
        refs = backbone_oracle(model, x, _oracle_arch(spec), **kw)
    assert len(outs) == len(refs)
    tol = dict(rtol=1e-8, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-3)
    for o, r in zip(outs, refs):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, **tol)


@pytest.mark.parametrize('size', [(32, 32), (40, 72)])
def test_narrow_datpp_forward_equals_spec_composition(size):
    """stem, LPU, NA, DMHA, ConvFFN, down projections and output norms recomputed from the
    spec (float64); 32x32 reaches a 1x1 stage-3 map (size-1 key and query grids), 40x72 is
    not a multiple of 32 and pads the small NA maps."""
    torch.manual_seed(0)
    _compare_with_oracle(_narrow_pp(), NARROW_PP_SPEC, torch.randn(1, 3, *size))


def test_tiny_pp_forward_equals_spec_composition_float32():
    torch.manual_seed(0)
    _compare_with_oracle(DAT('tiny++'), SPEC['tiny++'], torch.randn(1, 3, 64, 64),
                         dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize('size', [(32, 32), (40, 72)])
def test_tiny_pp_forward_equals_spec_composition_odd_sizes(size):
    torch.manual_seed(0)
    _compare_with_oracle(DAT('tiny++'), SPEC['tiny++'], torch.randn(1, 3, *size),
                         dtype=torch.float32)


def _v1_small_arch():
    window = dict(blocks='LS', use_pe=False)
    return dict(version=1, img_size=224, stages=[
        dict(dim=32, depth=2, num_heads=2, **window),
        dict(dim=64, depth=2, num_heads=4, **window),
        dict(dim=128, depth=2, num_heads=8, groups=2, blocks='LD', offset_kernel=5,
             offset_range_factor=2),
        dict(dim=256, depth=2, num_heads=8, groups=4, blocks='LD', offset_kernel=3,
             offset_range_factor=2)])


def test_small_v1_forward_equals_spec_composition_at_224():
    """A narrow v1 (same block kinds as the published ones) at its training resolution."""
    torch.manual_seed(0)
    spec = dict(SPEC['tiny'], depths=(2, 2, 2, 2))
    _compare_with_oracle(DAT(_v1_small_arch()), spec, torch.randn(1, 3, 224, 224))


@pytest.mark.slow
def test_tiny_v1_forward_equals_spec_composition_at_224():
    torch.manual_seed(0)
    _compare_with_oracle(DAT('tiny'), SPEC['tiny'], torch.randn(1, 3, 224, 224),
                         dtype=torch.float32)


def test_forward_equals_oracle_for_a_subset_of_outputs_without_norms():
    torch.manual_seed(0)
    m = _narrow_pp(out_indices=(1, 2), out_norm=False)
    assert m.out_channels == [32, 64] and m.num_features == [16, 32, 64, 128]
    _compare_with_oracle(m, NARROW_PP_SPEC, torch.randn(1, 3, 48, 40), out_indices=(1, 2),
                         out_norm=False)


# -- shapes ----------------------------------------------------------------------------------
def _check_shapes(arch, size):
    torch.manual_seed(0)
    m = DAT(arch).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *size))
    assert isinstance(outs, tuple) and len(outs) == 4
    for o, stride, c in zip(outs, (4, 8, 16, 32), SPEC[arch]['dims']):
        assert o.shape == (1, c, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert torch.isfinite(o).all()


def _shape_cases():
    for arch in ARCHS:
        for size in [(224, 224), (200, 333), (64, 64)]:
            slow = arch != 'tiny++' and not (arch == 'tiny' and size == (64, 64))
            yield pytest.param(arch, size, marks=[pytest.mark.slow] if slow else [],
                               id=f'{arch}-{size[0]}x{size[1]}')


@pytest.mark.parametrize('arch,size', list(_shape_cases()))
def test_output_shapes_and_finite(arch, size):
    _check_shapes(arch, size)


@pytest.mark.parametrize('size', [(32, 32), (33, 47), (96, 40), (45, 100)])
def test_datpp_small_and_odd_inputs(size):
    _check_shapes('tiny++', size)


def test_datpp_32x32_gradients_finite():
    """A 32x32 input gives a 1x1 stage-3 map: size-1 query and key grids in training too."""
    torch.manual_seed(0)
    m = _narrow_pp(drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    sum(o.sum() for o in m(x)).backward()
    assert torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# -- errors ----------------------------------------------------------------------------------
def test_wrong_channel_count_is_a_clear_error():
    m = DAT('tiny++')
    with pytest.raises(ValueError, match=r'3-channel.*got 4 channels'):
        m(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match='NCHW'):
        m(torch.randn(3, 64, 64))


def test_unknown_arch_names_the_problem():
    with pytest.raises(ValueError, match=r"unknown DAT arch 'huge\+\+'.*tiny\+\+"):
        DAT('huge++')


def _stage(**kw):
    base = dict(dim=32, depth=2, num_heads=2, blocks='ND', groups=1, stride=2,
                offset_kernel=3)
    base.update(kw)
    return base


@pytest.mark.parametrize('bad,pattern', [
    (dict(stages=[_stage(dim=30, num_heads=4)] * 4), r'stage 0.*dim 30.*num_heads 4'),
    (dict(stages=[_stage(), _stage(depth=3)] * 2), r'stage 1.*depth 3.*pattern'),
    (dict(stages=[_stage(), _stage(), _stage(num_heads=4, groups=3), _stage()]),
     r'stage 2.*num_heads 4.*groups 3'),
    (dict(stages=[_stage(blocks='NX')] * 4), r"unknown block kind 'X'"),
    (dict(stages=[_stage(dims=32)] * 4), r"unknown keys \['dims'\]"),
    (dict(stages=[{k: v for k, v in _stage().items() if k != 'blocks'}] * 4),
     r"missing required keys \['blocks'\]"),
    (dict(stages=[_stage(depth=0)] * 4), r'depth must be a positive integer'),
    (dict(stages=[_stage()] * 4, version=3), r'version must be 1.*or 2'),
    (dict(stages=[_stage()] * 4, widths=1), r"unknown keys \['widths'\]"),
    (dict(version=2), r"missing required key 'stages'"),
    (dict(stages=[_stage()] * 4, na_kernel=6), r'na_kernel must be odd'),
])
def test_inconsistent_custom_arch_names_the_problem(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        DAT(bad)


def test_valid_custom_arch_builds_and_runs():
    m = DAT(dict(stages=[_stage(dim=16, num_heads=2), _stage(dim=32, num_heads=2),
                         _stage(dim=32, num_heads=4, groups=2), _stage(dim=64, blocks='DD')]))
    outs = m.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32, 32, 64]


def test_bad_out_indices_and_frozen_stages():
    with pytest.raises(ValueError, match='out_indices'):
        DAT('tiny++', out_indices=(4,))
    with pytest.raises(ValueError, match='frozen_stages'):
        DAT('tiny++', frozen_stages=5)


def test_registered_in_mmengine_models():
    from mmengine.registry import MODELS
    assert MODELS.get('DAT') is DAT
    m = MODELS.build(dict(type='DAT', arch='tiny++', out_indices=(2, 3)))
    assert isinstance(m, DAT) and m.out_channels == [256, 512]


# -- with_cp ---------------------------------------------------------------------------------
def _small_v1(**kw):
    return DAT(_v1_small_arch(), **kw)


@pytest.mark.parametrize('build', [
    _narrow_pp, _small_v1,
    pytest.param(lambda **kw: DAT('tiny++', **kw), marks=pytest.mark.slow)],
    ids=['datpp-narrow', 'v1-small', 'tiny++'])
def test_with_cp_same_outputs_and_gradients(build, monkeypatch):
    torch.manual_seed(0)
    ref = build(drop_path_rate=0.3).train()
    torch.manual_seed(1)
    cpm = build(drop_path_rate=0.3, with_cp=True).train()
    cpm.load_state_dict(ref.state_dict())
    calls = []
    original = dat_module.cp.checkpoint
    monkeypatch.setattr(dat_module.cp, 'checkpoint',
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    x = torch.randn(2, 3, 32, 48)
    grads = []
    outs = []
    for m in (ref, cpm):
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(123)  # same drop-path masks
        o = m(xi)
        w = torch.Generator().manual_seed(5)
        sum((t * torch.randn(t.shape, generator=w)).sum() for t in o).backward()
        outs.append(o)
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    n_blocks = sum(len(s.blocks) for s in cpm.stages)
    assert len(calls) == n_blocks  # every block was checkpointed
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- memory format ---------------------------------------------------------------------------
@pytest.mark.parametrize('build', [_narrow_pp, _small_v1], ids=['datpp-narrow', 'v1-small'])
def test_channels_last_same_outputs_and_gradients(build):
    torch.manual_seed(0)
    nchw = build(drop_path_rate=0.0, channels_last=False).train()
    cl = build(drop_path_rate=0.0, channels_last=True).train()
    cl.load_state_dict(nchw.state_dict())
    auto = build(drop_path_rate=0.0).train()
    assert auto.channels_last is None   # None: channels_last for CPU inputs
    x = torch.randn(2, 3, 40, 56)
    results, inner = [], []
    for m in (nchw, cl, auto):
        m.stem[0].register_forward_hook(   # the first conv sees the converted input
            lambda mod, inp, out: inner.append(not inp[0].is_contiguous()))
    auto(x)
    for m in (nchw, cl):
        xi = x.clone().requires_grad_(True)
        o = m(xi)
        assert all(t.is_contiguous() for t in o)   # NCHW out, whatever the inner layout
        w = torch.Generator().manual_seed(5)
        sum((t * torch.randn(t.shape, generator=w)).sum() for t in o).backward()
        results.append((o, [xi.grad] + [p.grad for p in m.parameters()]))
    assert inner == [True, False, True]   # auto (CPU), NCHW, channels_last
    (o1, g1), (o2, g2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -- frozen_stages ---------------------------------------------------------------------------
def _expected_frozen(name, k):
    """dat_mm's documented rule: k >= 0 freezes the stem; k >= 1 also the first k stages,
    the down projections between them and their output norms."""
    parts = name.split('.')
    if parts[0] == 'stem':
        return k >= 0
    if parts[0] in ('stages', 'norms'):
        return int(parts[1]) < k
    if parts[0] == 'downsamples':
        return int(parts[1]) < k - 1
    raise AssertionError(name)


def _is_frozen_module(name, k):
    parts = name.split('.')
    if len(parts) == 1:
        return name == 'stem' and k >= 0
    return _expected_frozen(name + '.weight', k)


@pytest.mark.parametrize('k', [-1, 0, 1, 2, 3, 4])
def test_frozen_stages_requires_grad_and_eval_mode(k):
    m = DAT('tiny++', frozen_stages=k)
    m.train()
    for name, p in m.named_parameters():
        assert p.requires_grad == (not _expected_frozen(name, k)), name
    for name, mod in m.named_modules():
        if name and name.split('.')[0] in ('stem', 'stages', 'norms', 'downsamples'):
            assert mod.training == (not _is_frozen_module(name, k)), name
    if k == 4:
        assert not any(p.requires_grad for p in m.parameters())


@pytest.mark.parametrize('k', [0, 2])
def test_frozen_stages_get_no_gradient(k):
    m = _narrow_pp(frozen_stages=k).train()
    outs = m(torch.randn(1, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    for name, p in m.named_parameters():
        if _expected_frozen(name, k):
            assert p.grad is None, name
        else:
            assert p.grad is not None, name


def test_frozen_parts_stay_in_eval_mode_after_train():
    m = _narrow_pp(frozen_stages=2, drop_path_rate=0.2)
    m.train()
    frozen = [m.stem, m.stages[0], m.stages[1], m.downsamples[0], m.norms[0], m.norms[1]]
    for part in frozen:
        assert all(not sub.training for sub in part.modules())
    for part in [m.stages[2], m.stages[3], m.downsamples[1], m.downsamples[2], m.norms[3]]:
        assert all(sub.training for sub in part.modules())
    # in eval mode a frozen stage's drop-path is off: the frozen prefix is deterministic
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = m(x)[:2]
        b = m(x)[:2]
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


# -- state dict ------------------------------------------------------------------------------
@pytest.mark.parametrize('build', [
    _narrow_pp, _small_v1, pytest.param(lambda: DAT('tiny++'), marks=pytest.mark.slow)],
    ids=['datpp-narrow', 'v1-small', 'tiny++'])
def test_state_dict_round_trip(build, tmp_path):
    torch.manual_seed(0)
    a = build().eval()
    path = tmp_path / 'backbone.pth'
    torch.save(a.state_dict(), path)
    torch.manual_seed(1)
    b = build().eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        before = b(x)
        assert any((u - v).abs().max() > 1e-3 for u, v in zip(a(x), before))
        b.load_state_dict(torch.load(path, weights_only=True), strict=True)
        for u, v in zip(a(x), b(x)):
            torch.testing.assert_close(u, v, rtol=0, atol=0)
    # recomputable buffers (index tables, masks) are not part of the saved state
    assert not any(k.endswith(('relative_position_index', 'attn_mask')) for k in a.state_dict())


# -- drop path -------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,rate', [('tiny++', None), ('tiny++', 0.5), ('tiny', None),
                                       ('small++', 0.3)])
def test_drop_path_schedule_is_linear_over_all_blocks(arch, rate):
    m = DAT(arch, drop_path_rate=rate)
    rate = SPEC[arch]['dpr'] if rate is None else rate
    got = [b.drop_path.p for s in m.stages for b in s.blocks]
    n = sum(SPEC[arch]['depths'])
    assert len(got) == n
    expect = [rate * i / (n - 1) for i in range(n)]
    assert got == pytest.approx(expect, abs=1e-7)


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    x = torch.ones(1000, 3, 2, 2)
    y = dp(x)
    per_sample = y.reshape(1000, -1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 400 < (per_sample[:, 0] == 0).sum() < 600
    assert torch.equal(dp.eval()(x), x)
