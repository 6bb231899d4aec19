"""Fast attention paths (dat_mm/ops) against the reference functions, forward and backward.

Tolerance, float32: the norm-relative error ``||fast - ref|| / ||ref||`` of the output and of
every gradient (q, k, v and rpb for neighbourhood attention; q, k, v, the sampling positions
and rpe_table for deformable attention) is at most 1e-5, the reference being evaluated in
float32 on the same inputs. (float64 runs are exact to ~1e-15 and are checked at 1e-12.)
Mixed precision: under bf16/fp16 autocast the same errors against the float32 reference are
at most 1e-2.

Odd sizes (tiles that do not divide the map, single-tile maps, maps of exactly the kernel
size, key grids of size 1) and detection-like sizes (stage shapes of an 800x1344 image) are
covered; the chunked deformable path is run with several chunk sizes so that its
recomputing backward pass, its kept-probabilities backward pass and chunk boundaries are all
exercised.
"""
import pytest
import torch
import torch.utils.checkpoint
import torch.nn.functional as F

import dat_mm.ops.deformable_chunked as dmha_chunked_mod
from dat_mm import DAT
from dat_mm.models.layers import DeformableAttention2d, NeighborhoodAttention2d
from dat_mm.models.layers.deformable_attn import grid_coords
from dat_mm.ops import dmha_chunked, dmha_reference, na2d_reference, na2d_tiled
from dat_mm.ops.neighborhood import window_starts
from dat_mm.ops.neighborhood_tiled import axis_plan

RTOL32 = 1e-5
RTOL_AMP = 1e-2


def _cpu_autocast_supports(dtype) -> bool:
    try:  # torch < 2.2's CPU autocast takes bfloat16 only
        with torch.autocast('cpu', dtype=dtype):
            return True
    except RuntimeError:
        return False


#: The half types CPU autocast runs here.
AMP_DTYPES = [pytest.param(t, marks=pytest.mark.skipif(
    not _cpu_autocast_supports(t), reason=f'CPU autocast of this torch has no {t}'))
    for t in (torch.bfloat16, torch.float16)]


def rel_err(got, exp):
    got, exp = got.detach().double(), exp.detach().double()
    return ((got - exp).norm() / exp.norm().clamp_min(1e-30)).item()


def _grad_out(shape, dtype, seed=123):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _run(fn, inputs, kwargs, dtype):
    """Output and gradients w.r.t. ``inputs`` (those that require grad)."""
    out = fn(*inputs, **kwargs)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(out, wrt, _grad_out(out.shape, out.dtype))
    return [out] + list(grads)


def _assert_all_close(got, exp, tol, names):
    assert len(got) == len(exp)
    for g, e, name in zip(got, exp, names):
        assert torch.isfinite(g).all(), name
        err = rel_err(g, e)
        assert err <= tol, f'{name}: relative error {err:.2e} > {tol:.0e}'


# -- neighbourhood attention -------------------------------------------------------------------
def _na_inputs(B, nh, H, W, c, dtype, with_rpb=True, ks=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, nh, H, W, c, generator=g).to(dtype).requires_grad_()
               for _ in range(3))
    rpb = (torch.randn(nh, 2 * ks - 1, 2 * ks - 1, generator=g).to(dtype).requires_grad_()
           if with_rpb else None)
    return q, k, v, rpb


NA_NAMES = ['out', 'q', 'k', 'v', 'rpb']


@pytest.mark.parametrize('H,W,tile', [
    (7, 7, None),    # map == kernel: one tile, every query sees every key
    (9, 13, None),   # one tile per axis (<= tile + k - 1)
    (15, 8, None),   # two tiles along H, one along W
    (23, 31, None),  # tiles that do not divide the map
    (23, 31, 3),     # small tiles: many border patterns
    (17, 50, 7),
    (30, 19, 1),     # 1x1 tiles: one query per tile
    (12, 40, 16),    # tile larger than the map along H
    (23, 31, (2, 7)),  # rectangular tiles (the automatic choice at DAT++ stage shapes)
    (29, 14, (7, 2)),
])
@pytest.mark.parametrize('with_rpb', [True, False])
def test_na_tiled_matches_reference_float32(H, W, tile, with_rpb):
    inputs = _na_inputs(2, 3, H, W, 8, torch.float32, with_rpb)
    exp = _run(na2d_reference, inputs + (7,), {}, torch.float32)
    got = _run(na2d_tiled, inputs + (7,), dict(tile=tile), torch.float32)
    _assert_all_close(got, exp, RTOL32, NA_NAMES if with_rpb else NA_NAMES[:-1])
    with torch.no_grad():  # inference: the fused scaled_dot_product_attention path
        out = na2d_tiled(*inputs, 7, tile=tile)
    _assert_all_close([out], exp[:1], RTOL32, ['out (no grad)'])


@pytest.mark.parametrize('ks,H,W', [(3, 5, 11), (5, 14, 9), (9, 20, 23), (13, 13, 30)])
def test_na_tiled_other_kernel_sizes_float64(ks, H, W):
    inputs = _na_inputs(1, 2, H, W, 4, torch.float64, ks=ks)
    exp = _run(na2d_reference, inputs + (ks,), {}, torch.float64)
    got = _run(na2d_tiled, inputs + (ks,), dict(tile=4), torch.float64)
    _assert_all_close(got, exp, 1e-12, NA_NAMES)


def test_na_tiled_detection_size_float32():
    """Stage 2 of an 800x1344 image (50x84 map), head dim 32, as in DAT-T++."""
    inputs = _na_inputs(1, 2, 50, 84, 32, torch.float32)
    exp = _run(na2d_reference, inputs + (7,), {}, torch.float32)
    got = _run(na2d_tiled, inputs + (7,), {}, torch.float32)
    _assert_all_close(got, exp, RTOL32, NA_NAMES)
    with torch.no_grad():
        _assert_all_close([na2d_tiled(*inputs, 7)], exp[:1], RTOL32, ['out (no grad)'])


def test_na_tiled_accepts_strided_views_and_returns_mergeable_layout():
    """The module passes q, k, v as views of one qkv tensor; the result's layout makes the
    module's merge of heads a view (no copy)."""
    B, H, W, nh, c = 2, 11, 10, 2, 4
    qkv = torch.randn(B, H, W, 3, nh, c)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    rpb = torch.randn(nh, 13, 13)
    out = na2d_tiled(q, k, v, rpb, 7)
    torch.testing.assert_close(out, na2d_reference(q, k, v, rpb, 7), rtol=1e-5, atol=1e-6)
    merged = out.permute(0, 2, 3, 1, 4)
    assert merged.is_contiguous()


def test_na_axis_plan_covers_every_window():
    """Every query's clamped window lies inside its tile's halo, for many lengths/tiles."""
    for ks in (3, 7):
        for length in range(ks, 40):
            for tile in (1, 2, 5, 8):
                plan = axis_plan(length, ks, tile)
                keys = plan.keys.view(plan.n_tiles, plan.halo)
                starts = window_starts(length, ks).tolist()
                for i in range(length):
                    t = i // plan.tq
                    window = set(range(starts[i], starts[i] + ks))
                    assert window <= set(keys[t].tolist()), (length, ks, tile, i)


@pytest.mark.parametrize('amp_dtype', AMP_DTYPES)
def test_na_tiled_inference_under_autocast(amp_dtype):
    inputs = _na_inputs(2, 2, 19, 22, 16, torch.float32)
    exp = na2d_reference(*inputs, 7)
    half = [t.detach().to(amp_dtype) for t in inputs[:3]]
    with torch.no_grad(), torch.autocast('cpu', dtype=amp_dtype):
        out = na2d_tiled(*half, inputs[3].detach(), 7)
    assert out.dtype == amp_dtype
    _assert_all_close([out], [exp], RTOL_AMP, ['out'])


# -- deformable attention ----------------------------------------------------------------------
def _dmha_inputs(B, nh, g, H, W, Hk, Wk, c, table, dtype, use_pe=True, version=2,
                 pos_mode='clamped', seed=0):
    gen = torch.Generator().manual_seed(seed)
    M, Ns = H * W, Hk * Wk
    q = torch.randn(B, nh, M, c, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(B, nh, Ns, c, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(B, nh, Ns, c, generator=gen).to(dtype).requires_grad_()
    raw = torch.rand(B, g, Ns, 2, generator=gen) * 2.4 - 1.2
    if pos_mode == 'clamped':      # DAT++: many positions exactly on the border +-1
        pos = raw.clamp(-1, 1)
    elif pos_mode == 'outside':    # range-limited offsets may leave [-1, 1]: zero padding
        pos = raw * 1.5
    else:                          # v1: tanh
        pos = raw.tanh()
    pos = pos.to(dtype).requires_grad_()
    q_coords = grid_coords(H, W, version, 'query', dtype, 'cpu').reshape(-1, 2)
    rpe = (torch.randn(nh, 2 * table[0] - 1, 2 * table[1] - 1, generator=gen).to(dtype)
           .requires_grad_() if use_pe else None)
    return q, k, v, pos, q_coords, rpe, c ** -0.5


def _dmha_run(fn, inputs, **kwargs):
    q, k, v, pos, q_coords, rpe, scale = inputs
    wrt = [q, k, v] + ([pos, rpe] if rpe is not None else [])
    out = fn(q, k, v, pos, q_coords, rpe, scale, **kwargs)
    grads = torch.autograd.grad(out, wrt, _grad_out(out.shape, out.dtype))
    return [out] + list(grads)


DM_NAMES = ['out', 'q', 'k', 'v', 'pos', 'rpe_table']

# (B, heads, groups, H, W, Hk, Wk, c, table)
DM_CASES = [
    (2, 4, 2, 9, 13, 3, 5, 8, (7, 7)),     # odd query map, 2 groups
    (1, 3, 3, 5, 6, 5, 6, 4, (9, 9)),      # one head per group, Ns == M
    (2, 4, 1, 17, 11, 4, 3, 8, (11, 6)),   # non-square table
    (2, 2, 1, 1, 7, 1, 3, 8, (5, 5)),      # 1-pixel-high map and key grid
    (1, 16, 8, 7, 7, 7, 7, 32, (7, 7)),    # DAT-T++ stage 3 at 224
]


@pytest.mark.parametrize('case', DM_CASES)
@pytest.mark.parametrize('chunk', [None, 5, 1])
@pytest.mark.parametrize('pos_mode', ['clamped', 'outside'])
@pytest.mark.parametrize('bias_method', ['separable', 'grid'])
def test_dmha_chunked_matches_reference_float32(case, chunk, pos_mode, bias_method):
    B, nh, g, H, W, Hk, Wk, c, table = case
    inputs = _dmha_inputs(B, nh, g, H, W, Hk, Wk, c, table, torch.float32, pos_mode=pos_mode)
    exp = _dmha_run(dmha_reference, inputs)
    got = _dmha_run(dmha_chunked, inputs, chunk=chunk, bias_method=bias_method)
    _assert_all_close(got, exp, RTOL32, DM_NAMES)


@pytest.mark.parametrize('pos_mode', ['clamped', 'outside', 'tanh'])
@pytest.mark.parametrize('case', [
    (2, 4, 2, 7, 23, 3, 5, 8, (5, 5)),     # map wider than the table: chosen automatically
    (1, 2, 1, 11, 4, 4, 3, 8, (9, 3)),     # map narrower than the table, non-square table
    (3, 6, 3, 3, 31, 2, 7, 4, (2, 9)),     # batch 3, 3 groups, 3-wide table rows
    (1, 2, 1, 6, 9, 3, 3, 8, (1, 2)),      # a single-row table
])
def test_dmha_separable_bias_is_exact_float64(case, pos_mode):
    """The two-step bias and its backward (table and position gradients), against the
    reference in float64: equal to rounding, for positions on, inside and far outside the
    border (zero padding), and with the backward from kept and from recomputed chunks."""
    B, nh, g, H, W, Hk, Wk, c, table = case
    inputs = _dmha_inputs(B, nh, g, H, W, Hk, Wk, c, table, torch.float64, pos_mode=pos_mode)
    if pos_mode == 'outside':   # up to 3x outside: both corners of some samples are padding
        inputs = inputs[:3] + (inputs[3].detach().mul(2).requires_grad_(),) + inputs[4:]
    exp = _dmha_run(dmha_reference, inputs)
    for chunk in (None, 2 * W + 1):
        got = _dmha_run(dmha_chunked, inputs, chunk=chunk, bias_method='separable')
        _assert_all_close(got, exp, 1e-12, DM_NAMES)


def test_dmha_bias_method_choice():
    """Separable where the query grid is at least as wide as the table, grid_sample elsewhere
    and for query coordinates that are not a grid; asking for the separable bias there is an
    error."""
    wide = _dmha_inputs(1, 2, 1, 4, 13, 2, 3, 4, (7, 7), torch.float32)
    narrow = _dmha_inputs(1, 2, 1, 4, 12, 2, 3, 4, (7, 7), torch.float32)
    assert dmha_chunked_mod._Plan(*wide, None).sep is not None
    assert dmha_chunked_mod._Plan(*narrow, None).sep is None
    assert dmha_chunked_mod._Plan(*narrow, None, 'separable').sep is not None
    assert dmha_chunked_mod._Plan(*wide, None, 'grid').sep is None
    q, k, v, pos, qc, rpe, scale = wide
    shuffled = qc[torch.randperm(qc.shape[0], generator=torch.Generator().manual_seed(0))]
    assert dmha_chunked_mod._Plan(q, k, v, pos, shuffled, rpe, scale, None).sep is None
    with pytest.raises(ValueError, match='on a grid'):
        dmha_chunked(q, k, v, pos, shuffled, rpe, scale, bias_method='separable')
    with pytest.raises(ValueError, match='bias_method'):
        dmha_chunked(q, k, v, pos, qc, rpe, scale, bias_method='bilinear')
    exp = _dmha_run(dmha_reference, (q, k, v, pos, shuffled, rpe, scale))
    _assert_all_close(_dmha_run(dmha_chunked, (q, k, v, pos, shuffled, rpe, scale)), exp,
                      RTOL32, DM_NAMES)
    # non-finite query coordinates are not a grid: the grid_sample path propagates them as the
    # reference does
    for bad in (float('nan'), float('inf')):
        odd = qc.clone()
        odd[0, 0] = bad
        assert dmha_chunked_mod._Plan(q, k, v, pos, odd, rpe, scale, None).sep is None
        with torch.no_grad():
            got = dmha_chunked(q, k, v, pos, odd, rpe, scale)
            ref = dmha_reference(q, k, v, pos, odd, rpe, scale)
        torch.testing.assert_close(got, ref, equal_nan=True)


@pytest.mark.parametrize('save_budget', [0, 1 << 40])
def test_dmha_chunked_recompute_and_kept_backward_agree(monkeypatch, save_budget):
    """Backward from recomputed chunks (detection sizes) and from kept probabilities."""
    monkeypatch.setattr(dmha_chunked_mod, 'SAVE_PROBS_BYTES', save_budget)
    inputs = _dmha_inputs(2, 4, 2, 11, 9, 3, 4, 8, (6, 6), torch.float64)
    exp = _dmha_run(dmha_reference, inputs)
    got = _dmha_run(dmha_chunked, inputs, chunk=7)
    _assert_all_close(got, exp, 1e-12, DM_NAMES)


@pytest.mark.parametrize('use_pe,bias_method', [(True, 'grid'), (True, 'separable'),
                                                (False, None)])
def test_dmha_chunked_kept_tensors_pass_saved_tensor_hooks(use_pe, bias_method):
    """The probabilities kept for the backward pass are saved tensors, so saved-tensor hooks
    (what non-reentrant activation checkpointing uses to free them) see every byte of them;
    and through a checkpointed call the gradients stay the reference's."""
    B, nh, g, H, W, Hk, Wk, c = 2, 4, 2, 9, 7, 3, 4, 8
    inputs = _dmha_inputs(B, nh, g, H, W, Hk, Wk, c, (5, 5), torch.float64, use_pe=use_pe)
    q, k, v, pos, q_coords, rpe, scale = inputs
    packed = []

    def pack(t):
        packed.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dmha_chunked(q, k, v, pos, q_coords, rpe, scale, chunk=5, bias_method=bias_method)
    M, Ns = H * W, Hk * Wk
    probs = nh * B * M * Ns                                  # kept in chunks of queries
    # the bias's saved tensor: the sampling grid, or the separable bias's x-slope
    grids = {'grid': g * B * M * Ns * 2, 'separable': nh * B * M * Ns, None: 0}[bias_method]
    inputs_and_out = sum(t.numel() for t in (q, k, v, pos, q_coords) + ((rpe,) if use_pe
                                                                       else ())) + q.numel()
    assert sum(packed) == inputs_and_out + probs + grids
    exp = _dmha_run(dmha_reference, inputs)
    got = _dmha_run(lambda *a, **kw: torch.utils.checkpoint.checkpoint(
        dmha_chunked, *a, use_reentrant=False, **kw), inputs, chunk=5, bias_method=bias_method)
    names = DM_NAMES if use_pe else DM_NAMES[:4]
    _assert_all_close(got, exp, 1e-12, names)


@pytest.mark.parametrize('version', [1, 2])
def test_dmha_chunked_without_bias_and_v1_coordinates(version):
    inputs = _dmha_inputs(2, 4, 2, 6, 9, 3, 3, 8, (5, 5), torch.float32, use_pe=False,
                          version=version, pos_mode='tanh')
    exp = _dmha_run(dmha_reference, inputs)
    got = _dmha_run(dmha_chunked, inputs, chunk=4)
    _assert_all_close(got, exp, RTOL32, DM_NAMES[:4])   # no table: pos gets no gradient


def test_dmha_chunked_partial_requires_grad():
    """Frozen table / positions: only the requested gradients, equal to the reference's."""
    q, k, v, pos, qc, rpe, scale = _dmha_inputs(1, 2, 1, 5, 7, 2, 3, 4, (4, 4), torch.float64)
    pos = pos.detach()
    rpe = rpe.detach()
    for fn in (dmha_reference, dmha_chunked):
        out = fn(q, k, v, pos, qc, rpe, scale)
        grads = torch.autograd.grad(out.sum(), (q, v))
        if fn is dmha_reference:
            exp = [out] + list(grads)
        else:
            _assert_all_close([out] + list(grads), exp, 1e-12, ['out', 'q', 'v'])


@pytest.mark.slow
def test_dmha_chunked_detection_size_float32():
    """DAT-T++ stage 2 at 800x1344: 50x84 queries against a 25x42 key grid, 8 heads, 4 groups,
    in several chunks (the reference builds the full (1, 8, 4200, 1050) tensors)."""
    inputs = _dmha_inputs(1, 8, 4, 50, 84, 25, 42, 32, (14, 14), torch.float32)
    exp = _dmha_run(dmha_reference, inputs)
    got = _dmha_run(dmha_chunked, inputs)
    _assert_all_close(got, exp, RTOL32, DM_NAMES)


def test_dmha_chunked_detection_like_stage3_float32():
    """DAT-T++ stage 3 at 800x1344 (25x42 queries and keys, 16 heads, 8 groups), chunked."""
    inputs = _dmha_inputs(1, 16, 8, 25, 42, 25, 42, 32, (7, 7), torch.float32)
    exp = _dmha_run(dmha_reference, inputs)
    got = _dmha_run(dmha_chunked, inputs, chunk=300)
    _assert_all_close(got, exp, RTOL32, DM_NAMES)


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, RTOL32)])
@pytest.mark.parametrize('bias_method', ['grid', 'separable'])
@pytest.mark.parametrize('case', DM_CASES[:3])
def test_dmha_chunked_no_grad_fused_equals_reference(case, bias_method, dtype, tol,
                                                      monkeypatch):
    """Without autograd the chunks go through ATen's fused CPU attention kernel with the bias
    as its additive mask: the reference's output, with either bias, at odd sizes; the
    autograd path (probabilities kept for the backward pass at these sizes) agrees too."""
    flash = dmha_chunked_mod._FLASH_CPU
    if flash is None:
        pytest.skip('this torch has no fused CPU attention kernel')
    calls = []
    monkeypatch.setattr(dmha_chunked_mod, '_FLASH_CPU',
                        lambda *a, **kw: calls.append(1) or flash(*a, **kw))
    q, k, v, pos, qc, rpe, scale = _dmha_inputs(*case, dtype)
    with torch.no_grad():
        fused = dmha_chunked(q, k, v, pos, qc, rpe, scale, chunk=10, bias_method=bias_method)
        exp = dmha_reference(q, k, v, pos, qc, rpe, scale)
    assert calls, 'the fused kernel was not used'
    n = len(calls)
    grad_path = dmha_chunked(q, k, v, pos, qc, rpe, scale, chunk=10, bias_method=bias_method)
    assert len(calls) == n  # small call: probabilities kept, no fused kernel
    _assert_all_close([fused, fused], [exp, grad_path.detach()], tol, ['reference', 'autograd'])


def test_dmha_chunked_fused_override(monkeypatch):
    """``fused=False`` keeps the explicit softmax (the reference's numbers, kernel never
    called); ``fused=True`` where the kernel cannot run is an error saying why."""
    flash = dmha_chunked_mod._FLASH_CPU
    calls = []
    if flash is not None:
        monkeypatch.setattr(dmha_chunked_mod, '_FLASH_CPU',
                            lambda *a, **kw: calls.append(1) or flash(*a, **kw))
    q, k, v, pos, qc, rpe, scale = _dmha_inputs(*DM_CASES[0], torch.float64)
    with torch.no_grad():
        got = dmha_chunked(q, k, v, pos, qc, rpe, scale, chunk=10, fused=False)
        exp = dmha_reference(q, k, v, pos, qc, rpe, scale)
    assert not calls
    _assert_all_close([got], [exp], 1e-12, ['out'])
    # small autograd call: its probabilities are kept for the backward pass
    with pytest.raises(ValueError, match=r'fused=True\).*(probabilities are kept|no fused CPU)'):
        dmha_chunked(q, k, v, pos, qc, rpe, scale, fused=True)
    with torch.no_grad(), pytest.raises(ValueError, match=r'(float32/float64 CPU|no fused CPU)'):
        dmha_chunked(*(t.half() for t in (q, k, v, pos, qc, rpe)), scale, fused=True)
    with pytest.raises(ValueError, match="fused must be True, False or None, got 'yes'"):
        dmha_chunked(q, k, v, pos, qc, rpe, scale, fused='yes')


def test_dmha_chunked_rejects_double_backward():
    q, k, v, pos, qc, rpe, scale = _dmha_inputs(1, 2, 1, 4, 5, 2, 2, 4, (3, 3), torch.float64)
    out = dmha_chunked(q, k, v, pos, qc, rpe, scale)
    (gq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        gq.sum().backward()


# -- modules and the whole backbone ------------------------------------------------------------
def _module_grads(m, x, backend, amp_dtype=None):
    m.backend = backend
    m.zero_grad()
    x = x.clone().requires_grad_()
    with torch.autocast('cpu', dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        out = m(x)
    (out.float() * _grad_out(out.shape, torch.float32)).sum().backward()
    names = ['out', 'x'] + [n for n, p in m.named_parameters()
                             if not n.endswith('proj_k.bias')]  # analytically zero gradient
    params = dict(m.named_parameters())
    vals = [out.detach(), x.grad] + [params[n].grad.clone() for n in names[2:]]
    return names, vals


def _smooth(B, C, H, W, seed=0):
    """A smooth random map: bilinear sampling gradients are well conditioned on it."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(B, C, max(2, H // 4), max(2, W // 4), generator=g),
                         size=(H, W), mode='bicubic', align_corners=True)


def _na_module():
    torch.manual_seed(0)
    return NeighborhoodAttention2d(32, 2)


def _dmha_module(large_offsets=True):
    torch.manual_seed(0)
    m = DeformableAttention2d(32, 4, 2, 2, 5, table_size=(7, 7))
    if large_offsets:
        with torch.no_grad():
            m.conv_offset[3].weight.mul_(4.0)   # clamping and far off-grid sampling
            m.rpe_table.normal_(0, 1.0)
    return m


def _dmha_module_as_initialised():
    return _dmha_module(large_offsets=False)


@pytest.mark.parametrize('make,backend,size', [
    (_na_module, 'tiled', (19, 26)), (_na_module, 'tiled', (5, 9)),   # 5x9: padded to 7x9
    (_dmha_module, 'chunked', (17, 23)), (_dmha_module, 'chunked', (3, 5))])
def test_modules_fast_backend_matches_reference_float32(make, backend, size):
    m = make()
    x = _smooth(2, 32, *size)
    names, exp = _module_grads(m, x, 'reference')
    _, got = _module_grads(m, x, backend)
    _assert_all_close(got, exp, RTOL32, names)


@pytest.mark.parametrize('amp_dtype', AMP_DTYPES)
@pytest.mark.parametrize('make,backend', [(_na_module, 'tiled'),
                                          (_dmha_module_as_initialised, 'chunked')])
def test_modules_under_autocast_match_float32_reference(make, backend, amp_dtype):
    """The output within 1e-2 of the float32 reference; every gradient within 1e-2 of it or no
    worse than the reference path under the same autocast. (The gradients that flow through the
    offset branch - x, conv_offset.*, proj_q.* - are 2-6% off float32 under fp16/bf16 autocast
    with either path: the half-precision convolutions and the cancellation in the softmax
    gradient bound them, not the attention path; the functions alone are held to 1e-2 below.)"""
    m = make()
    x = _smooth(2, 32, 19, 26)
    names, exp = _module_grads(m, x, 'reference')
    _, ref_amp = _module_grads(m, x, 'reference', amp_dtype)
    _, got = _module_grads(m, x, backend, amp_dtype)
    assert got[0].dtype == amp_dtype
    for name, g, r, e in zip(names, got, ref_amp, exp):
        err, ref_err = rel_err(g, e), rel_err(r, e)
        assert torch.isfinite(g).all(), name
        assert err <= max(RTOL_AMP, 1.25 * ref_err), (name, err, ref_err)
    assert rel_err(got[0], exp[0]) <= RTOL_AMP


@pytest.mark.parametrize('amp_dtype', AMP_DTYPES)
def test_attention_functions_under_autocast(amp_dtype):
    """The functions alone, fed half-precision q/k/v (what the modules give them under
    autocast): within 1e-2 of the float32 reference on the same values."""
    qn, kn, vn, rpb = _na_inputs(2, 2, 15, 18, 16, torch.float32)
    half = [t.detach().to(amp_dtype).requires_grad_() for t in (qn, kn, vn)]
    with torch.autocast('cpu', dtype=amp_dtype):
        got = _run(na2d_tiled, tuple(half) + (rpb, 7), {}, amp_dtype)
    exp = _run(na2d_reference, tuple(t.detach().float().requires_grad_() for t in half)
               + (rpb, 7), {}, torch.float32)
    assert got[0].dtype == amp_dtype and got[1].dtype == amp_dtype
    _assert_all_close(got, exp, RTOL_AMP, NA_NAMES)

    q, k, v, pos, qc, rpe, scale = _dmha_inputs(2, 4, 2, 9, 13, 3, 5, 16, (7, 7), torch.float32)
    half = [t.detach().to(amp_dtype).requires_grad_() for t in (q, k, v)]
    with torch.autocast('cpu', dtype=amp_dtype):
        got = _dmha_run(dmha_chunked, tuple(half) + (pos, qc, rpe, scale), chunk=20)
    exp = _dmha_run(dmha_reference, tuple(t.detach().float().requires_grad_() for t in half)
                    + (pos, qc, rpe, scale))
    assert got[0].dtype == amp_dtype and got[4].dtype == torch.float32
    _assert_all_close(got, exp, RTOL_AMP, DM_NAMES)


@pytest.mark.slow
def test_backbone_fast_paths_match_reference_float32():
    """DAT-T++ on an odd-sized image, training mode (no drop path): every output and every
    parameter gradient within 1e-5 of the reference path."""
    torch.manual_seed(0)
    model = DAT('tiny++', drop_path_rate=0.0)
    x = _smooth(1, 3, 67, 93)
    results = []
    for backend in ('reference', None):
        for mod in model.modules():
            if isinstance(mod, (NeighborhoodAttention2d, DeformableAttention2d)):
                mod.backend = backend
        model.zero_grad()
        outs = model(x)
        sum((o * _grad_out(o.shape, o.dtype, seed=i)).sum() for i, o in enumerate(outs)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()
                 if not n.endswith('proj_k.bias')}
        results.append(([o.detach() for o in outs], grads))
    (ref_outs, ref_grads), (outs, grads) = results
    _assert_all_close(outs, ref_outs, RTOL32, [f'out{i}' for i in range(4)])
    _assert_all_close(list(grads.values()), list(ref_grads.values()), RTOL32, list(grads))


@pytest.mark.parametrize('groups', [1, 2])
def test_dmha_chunked_grid_sample_split_over_threads(groups):
    """With fewer offset groups than threads the bias rows are split over several batch entries
    of grid_sample (ATen's CPU kernel runs one thread per entry); values and gradients stay
    those of the reference."""
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        inputs = _dmha_inputs(1, 4, groups, 10, 12, 3, 4, 8, (6, 6), torch.float64)
        q, k, v, pos, qc, rpe, scale = inputs
        plan = dmha_chunked_mod._Plan(q, k, v, pos, qc, rpe, scale, 20, 'grid')
        assert plan.split == 4 // groups and plan._split(20) == plan.split
        exp = _dmha_run(dmha_reference, inputs)
        # 120 queries: 6 chunks of 20
        got = _dmha_run(dmha_chunked, inputs, chunk=20, bias_method='grid')
        _assert_all_close(got, exp, 1e-12, DM_NAMES)
        # 30 % 4 != 0: unsplit fallback
        got = _dmha_run(dmha_chunked, inputs, chunk=30, bias_method='grid')
        _assert_all_close(got, exp, 1e-12, DM_NAMES)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize('make,backend', [(_na_module, 'tiled'), (_dmha_module, 'chunked')])
def test_modules_channels_last(make, backend):
    """channels_last maps and weights: same numbers, and the output stays channels_last."""
    m = make()
    x = _smooth(2, 32, 17, 23)
    names, exp = _module_grads(m, x, 'reference')
    m = m.to(memory_format=torch.channels_last)
    m.backend = backend
    with torch.no_grad():
        out = m(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    _, got = _module_grads(m, x.contiguous(memory_format=torch.channels_last), backend)
    _assert_all_close(got, exp, RTOL32, names)
