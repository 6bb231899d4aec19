"""Deformable multi-head attention (docs/model.md) against a transcription of its steps 1-8.

The oracle (tests/oracles.py: ``dmha_oracle``) recomputes everything from the module's
parameters with its own bilinear sampler (``align_corners=True`` semantics, zero padding),
its own LN / GELU and a per-head loop; the structural settings (stride, offset kernel, range
factor, version) come from the test, not from the module.

The size-1 edge case: the DAT++ formulas divide by ``Hk - 1``, ``Wk - 1``, ``H - 1``, ``W - 1``.
dat_mm documents that an axis of length 1 gets the single coordinate 0 (and a range-limited
offset on such an axis uses ``factor`` instead of ``factor / 0``); the oracle encodes that
rule and the tests below check both the numbers and that everything stays finite.
"""
import pytest
import torch

from dat_mm.models.layers import DeformableAttention2d
from dat_mm.ops import DMHA_BACKENDS, deformable_rpe_bias, dmha_reference
from oracles import axis_coord, bilinear_yx, dmha_oracle

DT = torch.float64


def _grads(out, inputs, seed=1):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return torch.autograd.grad((out * w.to(out.dtype)).sum(), inputs)


def _module(dim, heads, groups, stride, ks, factor=-1.0, use_pe=True, table=(6, 7), version=2,
            seed=0, offset_scale=4.0, dtype=DT, backend=None):
    """A module with its offsets made large (the default init gives small ones) so that the
    clamp, the range limit and off-grid sampling are all exercised."""
    torch.manual_seed(seed)
    m = DeformableAttention2d(dim, heads, groups, stride, ks, offset_range_factor=factor,
                              use_pe=use_pe, table_size=table, version=version,
                              backend=backend).to(dtype)
    with torch.no_grad():
        m.conv_offset[3].weight.mul_(offset_scale)
        if use_pe:
            m.rpe_table.normal_(0, 1.0)
    return m


def _check_module(m, x, **settings):
    x = x.clone().requires_grad_(True)
    out = m(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    ref = dmha_oracle(m, x, **settings)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-11)
    names = ['x'] + [n for n, _ in m.named_parameters()]
    inputs = [x] + [p for _, p in m.named_parameters()]
    got, exp = _grads(out, inputs), _grads(ref, inputs)
    for g, e, name in zip(got, exp, names):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-10, msg=f'grad of {name}')
    return out


# (dim, heads, groups, stride, offset kernel, H, W)
DATPP_CASES = [
    (16, 4, 2, 2, 3, 9, 11),    # odd map, stride 2, 2 groups
    (12, 3, 1, 1, 3, 7, 5),     # stride 1 (stage 3 of DAT++)
    (16, 4, 4, 4, 7, 13, 10),   # one head per group
    (8, 2, 1, 8, 9, 16, 17),    # stage-0 settings (stride 8, kernel 9)
    (8, 2, 2, 2, 2, 8, 6),      # kernel == stride: padding 0
    (24, 6, 3, 2, 5, 6, 9),     # 3 groups (DAT-S++ style), 2 heads per group
]


@pytest.mark.parametrize('dim,heads,groups,stride,ks,H,W', DATPP_CASES)
def test_dmha_datpp_matches_spec_forward_backward(dim, heads, groups, stride, ks, H, W):
    m = _module(dim, heads, groups, stride, ks)
    x = torch.randn(2, dim, H, W, dtype=DT)
    _check_module(m, x, stride=stride, offset_kernel=ks, offset_range_factor=-1.0, version=2)


@pytest.mark.parametrize('factor', [0.0, 2.0, 0.5])
def test_dmha_datpp_range_limited_offsets(factor):
    m = _module(16, 4, 2, 2, 3, factor=factor)
    x = torch.randn(1, 16, 9, 8, dtype=DT)
    _check_module(m, x, stride=2, offset_kernel=3, offset_range_factor=factor, version=2)


@pytest.mark.parametrize('factor', [2.0, -1.0, 0.0])
@pytest.mark.parametrize('H,W,stride,ks', [(7, 7, 1, 3), (14, 14, 1, 5), (6, 10, 2, 3)])
def test_dmha_v1_matches_spec_forward_backward(factor, H, W, stride, ks):
    """v1 formulas: ref ``(i+0.5)/n*2-1`` for keys and queries; range ``tanh*factor/n`` only
    when factor > 0; ``tanh(ref + off)`` when negative. The table is that of the input size
    (v1's training resolution), as the published v1 requires."""
    m = _module(12, 3, 3, stride, ks, factor=factor, table=(H, W), version=1)
    x = torch.randn(2, 12, H, W, dtype=DT)
    _check_module(m, x, stride=stride, offset_kernel=ks, offset_range_factor=factor, version=1)


@pytest.mark.parametrize('version', [1, 2])
def test_dmha_without_position_bias(version):
    m = _module(16, 4, 2, 2, 3, use_pe=False, version=version, table=(9, 11))
    assert m.rpe_table is None
    x = torch.randn(1, 16, 9, 11, dtype=DT)
    _check_module(m, x, stride=2, offset_kernel=3, offset_range_factor=-1.0, version=version,
                  use_pe=False)


def test_dmha_table_serves_any_input_size_unchanged():
    """DAT++: the table is built for img_size and sampled in normalised coordinates; it is
    never resized (same parameter, any input size)."""
    m = _module(16, 4, 2, 2, 3, table=(56, 56))
    assert m.rpe_table.shape == (4, 111, 111)
    for H, W in [(5, 7), (12, 9)]:
        _check_module(m, torch.randn(1, 16, H, W, dtype=DT), stride=2, offset_kernel=3,
                      offset_range_factor=-1.0, version=2)
    assert m.rpe_table.shape == (4, 111, 111)


@pytest.mark.parametrize('version,factor', [(2, -1.0), (2, 2.0), (1, 2.0), (1, -1.0)])
def test_dmha_sampling_positions_match_spec(version, factor):
    """The module's sampling positions equal steps 2-4 of docs/model.md."""
    m = _module(16, 4, 2, 2, 3, factor=factor, version=version, table=(9, 7))
    x = torch.randn(2, 16, 9, 7, dtype=DT)
    _, pos_oracle = dmha_oracle(m, x, stride=2, offset_kernel=3, offset_range_factor=factor,
                                version=version, return_positions=True)
    pos, ref = m.sampling_positions(m.proj_q(x).reshape(4, 8, 9, 7))
    assert pos.shape == (4, 5, 4, 2)
    torch.testing.assert_close(pos.reshape(2, 2, 5, 4, 2), pos_oracle)
    ref_y = torch.tensor([axis_coord(i, 5, version, 'ref') for i in range(5)], dtype=DT)
    ref_x = torch.tensor([axis_coord(i, 4, version, 'ref') for i in range(4)], dtype=DT)
    torch.testing.assert_close(ref[0, :, 0, 0], ref_y)
    torch.testing.assert_close(ref[0, 0, :, 1], ref_x)
    if version == 2 and factor < 0:
        assert pos.abs().max() <= 1.0 and (pos.abs() == 1.0).any()  # the clamp acts


# -- gradients -------------------------------------------------------------------------------
def test_dmha_gradients_reach_offsets_and_rpe_table():
    m = _module(16, 4, 2, 2, 3, offset_scale=1.0)
    x = torch.randn(2, 16, 10, 9, dtype=DT, requires_grad=True)
    (m(x) * torch.randn(2, 16, 10, 9, dtype=DT)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f'no gradient reaches {name}'
    for name in ('conv_offset.0.weight', 'conv_offset.0.bias', 'conv_offset.1.weight',
                 'conv_offset.3.weight', 'rpe_table'):
        assert dict(m.named_parameters())[name].grad.abs().max() > 1e-6, name


def test_dmha_offset_gradient_flows_through_sampling_and_bias():
    """The offsets' gradient is the sum of a key-sampling part and a bias-sampling part
    (oracle with the positions detached in one path or the other); both parts are non-zero
    and the module's gradient equals their sum, so neither path is cut."""
    m = _module(8, 2, 1, 2, 3, offset_scale=1.0)
    x = torch.randn(1, 8, 8, 8, dtype=DT)
    w = [m.conv_offset[3].weight, m.conv_offset[0].weight]
    settings = dict(stride=2, offset_kernel=3, offset_range_factor=-1.0, version=2)
    full = _grads(m(x), w)
    only_bias = _grads(dmha_oracle(m, x, **settings, detach_pos_in='sampling'), w)
    only_sampling = _grads(dmha_oracle(m, x, **settings, detach_pos_in='bias'), w)
    for f, b, s in zip(full, only_bias, only_sampling):
        assert b.abs().max() > 1e-4 and s.abs().max() > 1e-4
        assert (f - b).abs().max() > 1e-4 and (f - s).abs().max() > 1e-4
        torch.testing.assert_close(f, b + s, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize('version,factor,H,W', [(2, -1.0, 5, 6), (2, 1.5, 4, 5),
                                                 (1, 2.0, 5, 5), (1, -1.0, 4, 6)])
def test_dmha_module_gradcheck(version, factor, H, W):
    m = _module(4, 2, 2, 2, 3, factor=factor, version=version, table=(3, 3), seed=7,
                offset_scale=1.0)
    names = ['rpe_table', 'conv_offset.0.weight', 'conv_offset.3.weight', 'proj_q.bias',
             'proj_k.weight']
    params = {n: p.detach().clone() for n, p in m.named_parameters()}
    x = torch.randn(1, 4, H, W, dtype=DT, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(m, {**params, **dict(zip(names, ps))}, (x,))

    inputs = (x, *[params[n].clone().requires_grad_(True) for n in names])
    # full Jacobians for the first (published DAT++) case; random projections of them
    # (fast mode) for the others, to keep the default suite quick
    fast = (version, factor) != (2, -1.0)
    assert torch.autograd.gradcheck(f, inputs, fast_mode=fast)


def test_dmha_reference_gradcheck():
    """The functional core: softmax(q k^T scale + bias(pos)) v, gradients wrt q, k, v, the
    positions and the table."""
    g = torch.Generator().manual_seed(0)
    B, nh, groups, M, Ns, c = 1, 2, 2, 5, 4, 2
    q, k, v = (torch.randn(B, nh, n, c, generator=g, dtype=DT, requires_grad=True)
               for n in (M, Ns, Ns))
    pos = (torch.rand(B, groups, Ns, 2, generator=g, dtype=DT) * 1.8 - 0.9).requires_grad_(True)
    q_coords = torch.rand(M, 2, generator=g, dtype=DT) * 2 - 1
    table = torch.randn(nh, 3, 5, generator=g, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, pos, table: dmha_reference(q, k, v, pos, q_coords, table, 0.5),
        (q, k, v, pos, table))


def test_dmha_reference_and_bias_match_formula():
    g = torch.Generator().manual_seed(1)
    B, nh, groups, M, Ns, c = 2, 6, 3, 7, 4, 5
    q, k, v = (torch.randn(B, nh, n, c, generator=g, dtype=DT) for n in (M, Ns, Ns))
    pos = torch.rand(B, groups, Ns, 2, generator=g, dtype=DT) * 2 - 1
    q_coords = torch.rand(M, 2, generator=g, dtype=DT) * 2 - 1
    table = torch.randn(nh, 9, 5, generator=g, dtype=DT)
    bias = torch.empty(B, nh, M, Ns, dtype=DT)
    for n in range(nh):
        j = n // (nh // groups)
        dy = (q_coords[None, :, None, 0] - pos[:, j, None, :, 0]) * 0.5
        dx = (q_coords[None, :, None, 1] - pos[:, j, None, :, 1]) * 0.5
        bias[:, n] = bilinear_yx(table[n][None, None].expand(B, 1, 9, 5), dy.reshape(B, -1),
                                 dx.reshape(B, -1)).reshape(B, M, Ns)
    torch.testing.assert_close(deformable_rpe_bias(pos, q_coords, table), bias)
    expect = torch.softmax(q @ k.transpose(-1, -2) * 0.3 + bias, -1) @ v
    torch.testing.assert_close(dmha_reference(q, k, v, pos, q_coords, table, 0.3), expect)
    expect = torch.softmax(q @ k.transpose(-1, -2) * 0.3, -1) @ v
    torch.testing.assert_close(dmha_reference(q, k, v, pos, q_coords, None, 0.3), expect)


# -- the size-1 edge case --------------------------------------------------------------------
# (dim, heads, groups, stride, ks, H, W, factor): key grid and/or query grid of size 1
EDGE_CASES = [
    (8, 2, 1, 1, 3, 1, 1, -1.0),    # 1x1 stage-3 map (a 32x32 input of DAT++)
    (8, 2, 1, 1, 3, 1, 6, -1.0),    # 1-pixel-high stage-3 map
    (8, 2, 2, 1, 3, 5, 1, -1.0),    # 1-pixel-wide
    (8, 2, 1, 8, 9, 7, 13, -1.0),   # stage-0 map under 8 pixels high: Hk == 1, H == 7
    (8, 2, 1, 2, 3, 2, 5, -1.0),    # Hk == 1 with H == 2
    (8, 2, 1, 1, 3, 1, 4, 2.0),     # range-limited offset on a length-1 key axis
    (8, 2, 1, 8, 9, 5, 20, 3.0),
]


@pytest.mark.parametrize('dim,heads,groups,stride,ks,H,W,factor', EDGE_CASES)
def test_dmha_size_one_grids_stay_finite_and_match_documented_rule(dim, heads, groups, stride,
                                                                   ks, H, W, factor):
    """dat_mm's documented rule: an axis of length 1 gets coordinate 0 (the published formula
    gives inf/NaN); forward and backward are finite and equal the oracle with that rule."""
    m = _module(dim, heads, groups, stride, ks, factor=factor, table=(7, 7))
    x = torch.randn(2, dim, H, W, dtype=DT)
    _check_module(m, x, stride=stride, offset_kernel=ks, offset_range_factor=factor, version=2)
    pos, ref = m.sampling_positions(m.proj_q(x).reshape(2 * groups, dim // groups, H, W))
    Hk, Wk = pos.shape[1:3]
    assert torch.isfinite(pos).all() and torch.isfinite(ref).all()
    if Hk == 1:
        assert (ref[..., 0] == 0).all()
    if Wk == 1:
        assert (ref[..., 1] == 0).all()


def test_dmha_size_one_float32_gradients_finite():
    m = _module(8, 2, 1, 1, 3, table=(7, 7), dtype=torch.float32)
    x = torch.randn(1, 8, 1, 1, requires_grad=True)
    m(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


# -- other backends, init, validation --------------------------------------------------------
@pytest.mark.parametrize('backend', DMHA_BACKENDS)
def test_dmha_float32_each_backend_matches_float64_oracle(backend):
    m = _module(16, 4, 2, 2, 3, dtype=torch.float32, backend=backend)
    x = torch.randn(2, 16, 9, 11, requires_grad=True)
    out = m(x)
    m64 = _module(16, 4, 2, 2, 3)
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    x64 = x.detach().double().requires_grad_(True)
    ref = dmha_oracle(m64, x64, stride=2, offset_kernel=3, offset_range_factor=-1.0, version=2)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    g32 = _grads(out, [x, m.rpe_table, m.conv_offset[3].weight])
    g64 = _grads(ref, [x64, m64.rpe_table, m64.conv_offset[3].weight])
    for a, b, name in zip(g32, g64, ['x', 'rpe_table', 'conv_offset.3.weight']):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4, msg=f'grad of {name}')


def test_dmha_parameter_shapes_and_init():
    torch.manual_seed(0)
    m = DeformableAttention2d(128, 4, 2, 8, 9, table_size=(56, 56))
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {
        'conv_offset.0.weight': (64, 1, 9, 9), 'conv_offset.0.bias': (64,),
        'conv_offset.1.weight': (64,), 'conv_offset.1.bias': (64,),
        'conv_offset.3.weight': (2, 64, 1, 1),
        'proj_q.weight': (128, 128, 1, 1), 'proj_q.bias': (128,),
        'proj_k.weight': (128, 128, 1, 1), 'proj_k.bias': (128,),
        'proj_v.weight': (128, 128, 1, 1), 'proj_v.bias': (128,),
        'proj_out.weight': (128, 128, 1, 1), 'proj_out.bias': (128,),
        'rpe_table': (4, 111, 111),
    }
    assert abs(m.rpe_table.std().item() - 0.01) < 0.0005
    assert m.conv_offset[0].stride == (8, 8) and m.conv_offset[0].padding == (4, 4)


def test_dmha_rejects_bad_settings():
    with pytest.raises(ValueError, match='divisible'):
        DeformableAttention2d(16, 3, 1, 1, 3)
    with pytest.raises(ValueError, match='groups'):
        DeformableAttention2d(16, 4, 3, 1, 3)
    with pytest.raises(ValueError, match='version'):
        DeformableAttention2d(16, 4, 2, 1, 3, version=3)
