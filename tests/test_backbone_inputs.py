"""DAT's arguments and inputs: every bad value is an error that names the argument and the
problem, and every accepted value gives what it says.

* ``out_indices`` (int or sequence of ints, negatives from the end, unique and increasing),
  ``frozen_stages``, ``in_channels`` and ``check_finite``: exact error types and messages;
  ``out_channels`` always describes the returned maps.
* Input checks in ``forward`` (type, rank, channels, empty images, dtype) fail before any layer
  runs.
* A batch of 0 gives the reference's empty results on every attention path (ops and the whole
  backbone, forward and backward).
* Non-finite input: by default it stays within its own sample; ``check_finite=True`` rejects
  it, naming the samples and counts, and changes nothing for finite input.
"""
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from attention_spy import spy_attention
from dat_mm import DAT
from dat_mm.ops import ENV_VAR, dmha_chunked, dmha_reference, na2d_reference, na2d_tiled
from test_backbone import NARROW_PP, _v1_small_arch

DIMS = [16, 32, 64, 128]        # NARROW_PP's stage widths (all different: a wrong pairing shows)
SIZE = (64, 48)                 # stage maps 16x12, 8x6, 4x3, 2x2


@pytest.fixture(autouse=True)
def _automatic_backends(monkeypatch):
    """'automatic' must mean the chooser's own choice, whatever the caller's environment."""
    monkeypatch.delenv(ENV_VAR, raising=False)


def _raises(exc_type, fragments, fn, *args, **kwargs):
    """``fn`` raises exactly ``exc_type`` whose message contains every fragment."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert info.type is exc_type, f'{info.type.__name__}: {info.value}'
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f'{fragment!r} not in {message!r}'
    return message


def _map_size(stage):
    stride = 4 * 2 ** stage
    return math.ceil(SIZE[0] / stride), math.ceil(SIZE[1] / stride)


# -- out_indices ---------------------------------------------------------------------------------
@pytest.mark.parametrize('given,stages', [
    ((0, 1, 2, 3), (0, 1, 2, 3)),
    ([1, 3], (1, 3)),
    ((2,), (2,)),
    (2, (2,)),
    (-1, (3,)),
    ((-4, -1), (0, 3)),
    ((0, -2), (0, 2)),
    ((1, -2, 3), (1, 2, 3)),
    (range(1, 4), (1, 2, 3)),
    (np.int64(1), (1,)),
    ((np.int32(0), -3), (0, 1)),
], ids=lambda v: repr(v).replace(' ', ''))
def test_valid_out_indices_normalised_and_out_channels_match_the_maps(given, stages):
    torch.manual_seed(0)
    full = DAT(NARROW_PP).eval()
    m = DAT(NARROW_PP, out_indices=given).eval()
    assert m.out_indices == stages
    assert all(type(i) is int for i in m.out_indices)
    assert m.out_channels == [DIMS[i] for i in stages]
    # same weights as the full model: each returned map is that stage's output
    missing, unexpected = m.load_state_dict(full.state_dict(), strict=False)
    assert missing == []
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        outs, ref = m(x), full(x)
    assert len(outs) == len(m.out_channels)
    for o, c, i in zip(outs, m.out_channels, stages):
        assert o.shape == (1, c, *_map_size(i))
        torch.testing.assert_close(o, ref[i], rtol=0, atol=0)


@pytest.mark.parametrize('given,fragments', [
    ((3, 0), ['out_indices (3, 0) (stages (3, 0)) must name each stage once, in increasing '
              'order', 'e.g. (0, 3)']),
    ((2, 2), ['out_indices (2, 2) (stages (2, 2)) must name each stage once', 'e.g. (2,)']),
    ((1, -3), ['out_indices (1, -3) (stages (1, 1)) must name each stage once', 'e.g. (1,)']),
    ((-1, 0), ['out_indices (-1, 0) (stages (3, 0))', 'increasing order', 'e.g. (0, 3)']),
    ((-5,), ['out_indices (-5,): -5 is out of range; give stage indices in [-4, 3]',
             '4-stage arch']),
    ((0, 4), ['out_indices (0, 4): 4 is out of range; give stage indices in [-4, 3]']),
    (4, ['out_indices 4: 4 is out of range; give stage indices in [-4, 3]']),
    ((), ['out_indices () names no stage', '[-4, 3]']),
])
def test_bad_out_indices_values(given, fragments):
    _raises(ValueError, fragments, DAT, NARROW_PP, out_indices=given)


@pytest.mark.parametrize('given,fragments', [
    ('0', ["out_indices must be an int or a sequence of ints, got '0' (str)"]),
    (1.0, ['out_indices must be an int or a sequence of ints, got 1.0 (float)']),
    (None, ['out_indices must be an int or a sequence of ints, got None (NoneType)']),
    (True, ['out_indices must be an int or a sequence of ints, got True (bool)']),
    ({0, 1}, ['out_indices must be an int or a sequence of ints, got {0, 1} (set)']),
    ((0, '1'), ["out_indices (0, '1'): element '1' (str) is not an int", '[-4, 3]']),
    ((0, 1.0), ['out_indices (0, 1.0): element 1.0 (float) is not an int']),
    ((0, None), ['out_indices (0, None): element None (NoneType) is not an int']),
    ((True,), ['out_indices (True,): element True (bool) is not an int']),
])
def test_bad_out_indices_types(given, fragments):
    _raises(TypeError, fragments, DAT, NARROW_PP, out_indices=given)


# -- frozen_stages, in_channels, check_finite -----------------------------------------------------
@pytest.mark.parametrize('k', [-1, 0, 4, np.int64(2)])
def test_frozen_stages_accepted_range(k):
    m = DAT(NARROW_PP, frozen_stages=k)
    assert m.frozen_stages == int(k) and type(m.frozen_stages) is int


@pytest.mark.parametrize('given,exc,fragment', [
    (-2, ValueError, 'frozen_stages must be an int [-1, 4], got -2'),
    (5, ValueError, 'frozen_stages must be an int [-1, 4], got 5'),
    ('1', TypeError, "frozen_stages must be an int [-1, 4], got '1' (str)"),
    (1.0, TypeError, 'frozen_stages must be an int [-1, 4], got 1.0 (float)'),
    (True, TypeError, 'frozen_stages must be an int [-1, 4], got True (bool)'),
    (None, TypeError, 'frozen_stages must be an int [-1, 4], got None (NoneType)'),
])
def test_bad_frozen_stages(given, exc, fragment):
    _raises(exc, [fragment], DAT, NARROW_PP, frozen_stages=given)


@pytest.mark.parametrize('given,exc,fragment', [
    (0, ValueError, 'in_channels must be an int >= 1, got 0'),
    (-3, ValueError, 'in_channels must be an int >= 1, got -3'),
    (3.0, TypeError, 'in_channels must be an int >= 1, got 3.0 (float)'),
    ('3', TypeError, "in_channels must be an int >= 1, got '3' (str)"),
    (True, TypeError, 'in_channels must be an int >= 1, got True (bool)'),
    (None, TypeError, 'in_channels must be an int >= 1, got None (NoneType)'),
])
def test_bad_in_channels(given, exc, fragment):
    _raises(exc, [fragment], DAT, NARROW_PP, in_channels=given)


@pytest.mark.parametrize('c', [1, 5])
def test_other_in_channels_build_and_run(c):
    m = DAT(NARROW_PP, in_channels=c).eval()
    assert m.in_channels == c and m.stem[0].in_channels == c
    with torch.no_grad():
        outs = m(torch.randn(2, c, *SIZE))
    assert [tuple(o.shape) for o in outs] == [(2, d, *_map_size(i)) for i, d in enumerate(DIMS)]


@pytest.mark.parametrize('given', [1, 'yes', None])
def test_check_finite_must_be_a_bool(given):
    _raises(TypeError, [f'check_finite must be True or False, got {given!r}'], DAT, NARROW_PP,
            check_finite=given)


# -- input checks in forward ---------------------------------------------------------------------
@pytest.fixture
def stem_calls():
    """A DAT (3 input channels) and the list of its stem's calls."""
    m = DAT(NARROW_PP).eval()
    calls = []
    m.stem.register_forward_pre_hook(lambda mod, inp: calls.append(1))
    return m, calls


@pytest.mark.parametrize('x,exc,fragments', [
    (torch.randn(2, 4, 32, 32), ValueError,
     ['3-channel input (shape (N, 3, H, W))', 'got 4 channels', '(input shape (2, 4, 32, 32))']),
    (torch.randn(2, 1, 32, 32), ValueError, ['3-channel', 'got 1 channels']),
    (torch.randn(3, 32, 32), ValueError,
     ['DAT expects an NCHW batch of shape (N, 3, H, W), got a tensor of shape (3, 32, 32)']),
    (torch.randn(1, 1, 3, 32, 32), ValueError,
     ['of shape (N, 3, H, W), got a tensor of shape (1, 1, 3, 32, 32)']),
    (torch.randn(1, 3, 0, 32), ValueError,
     ['(N, 3, H, W) with H, W >= 1', 'empty image of shape (1, 3, 0, 32)']),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError,
     ['DAT expects a floating-point input', 'torch.uint8']),
    (np.zeros((1, 3, 32, 32), np.float32), TypeError,
     ['DAT expects an NCHW torch.Tensor of shape (N, 3, H, W), got ndarray']),
], ids=['4-channels', '1-channel', '3-D', '5-D', 'zero-height', 'uint8', 'numpy'])
def test_bad_input_is_a_clear_error_before_any_layer_runs(stem_calls, x, exc, fragments):
    m, calls = stem_calls
    _raises(exc, fragments, m, x)
    assert calls == []
    with torch.no_grad():
        m(torch.randn(1, 3, 32, 32))
    assert calls == [1]   # the hook does see a valid call


# -- a batch of 0 --------------------------------------------------------------------------------
def _na_inputs(B, dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, 2, 9, 17, 4, generator=g).to(dtype).requires_grad_(requires_grad)
               for _ in range(3))
    rpb = torch.randn(2, 13, 13, generator=g).to(dtype).requires_grad_(requires_grad)
    return q, k, v, rpb


def _dm_inputs(B, with_table, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    nh, groups, M, Ns, c = 4, 2, 12, 6, 4
    q = torch.randn(B, nh, M, c, generator=g)
    k = torch.randn(B, nh, Ns, c, generator=g)
    v = torch.randn(B, nh, Ns, c, generator=g)
    pos = torch.rand(B, groups, Ns, 2, generator=g) * 2 - 1
    table = torch.randn(nh, 7, 9, generator=g) if with_table else None
    tensors = [t.requires_grad_(requires_grad) if t is not None else None
               for t in (q, k, v, pos, table)]
    q_coords = torch.rand(M, 2, generator=g) * 2 - 1
    return tensors[:4] + [q_coords, tensors[4], 0.5]


def _empty_grads_equal(fast, ref, inputs):
    """Output shapes/dtypes equal; every input the reference differentiates (all but the
    sampling positions when there is no bias table) gets a gradient of its shape, equal to the
    reference's (zeros), and no other input gets one."""
    assert fast.shape == ref.shape and fast.dtype == ref.dtype and fast.numel() == 0
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    g_fast = torch.autograd.grad(fast.sum(), wrt, allow_unused=True)
    g_ref = torch.autograd.grad(ref.sum(), wrt, allow_unused=True)
    assert [g is None for g in g_fast] == [g is None for g in g_ref]
    assert sum(g is not None for g in g_ref) >= 3          # q, k, v at least
    for t, a, b in zip(wrt, g_fast, g_ref):
        if b is None:
            continue
        assert a.shape == t.shape and b.shape == t.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not a.any()


@pytest.mark.parametrize('tile', [None, 2, (2, 4)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_tiled_neighbourhood_attention_empty_batch_forward(tile, dtype):
    """Without autograd (the fused-kernel branch for non-empty input)."""
    q, k, v, rpb = _na_inputs(0, dtype)
    with torch.no_grad():
        ref = na2d_reference(q, k, v, rpb, 7)
        out = na2d_tiled(q, k, v, rpb, 7, tile=tile)
    assert out.shape == ref.shape == (0, 2, 9, 17, 4)
    assert out.dtype == ref.dtype == dtype


@pytest.mark.parametrize('tile', [None, 2, (2, 4)])
@pytest.mark.parametrize('with_rpb', [True, False])
def test_tiled_neighbourhood_attention_empty_batch_backward(tile, with_rpb):
    q, k, v, rpb = _na_inputs(0, requires_grad=True)
    rpb = rpb if with_rpb else None
    inputs = (q, k, v, rpb)
    _empty_grads_equal(na2d_tiled(*inputs, 7, tile=tile), na2d_reference(*inputs, 7), inputs)


@pytest.mark.parametrize('chunk', [None, 3])
@pytest.mark.parametrize('with_table', [True, False])
def test_chunked_deformable_attention_empty_batch(chunk, with_table):
    args = _dm_inputs(0, with_table)
    with torch.no_grad():
        ref, out = dmha_reference(*args), dmha_chunked(*args, chunk=chunk)
    assert out.shape == ref.shape == (0, 4, 12, 4) and out.dtype == ref.dtype
    args = _dm_inputs(0, with_table, requires_grad=True)
    _empty_grads_equal(dmha_chunked(*args, chunk=chunk), dmha_reference(*args), args)


ARCHS = {'datpp': (NARROW_PP, {('neighborhood', 'tiled'): 3, ('deformable', 'chunked'): 5}),
         'v1': (_v1_small_arch(), {('deformable', 'chunked'): 2})}


@pytest.mark.parametrize('backend', ['reference', None], ids=['reference', 'automatic'])
@pytest.mark.parametrize('arch', list(ARCHS))
def test_backbone_empty_batch_forward_and_backward(arch, backend):
    spec, fast_calls = ARCHS[arch]
    torch.manual_seed(0)
    m = DAT(spec, attn_backend=backend, drop_path_rate=0.1)
    with torch.no_grad():
        shapes = [tuple(o.shape[1:]) for o in m.eval()(torch.randn(1, 3, *SIZE))]
    expected_calls = fast_calls if backend is None else {
        (kind, 'reference'): n for (kind, _), n in fast_calls.items()}
    # eval, no autograd
    with spy_attention() as calls, torch.no_grad():
        outs = m.eval()(torch.randn(0, 3, *SIZE))
    assert calls == expected_calls
    assert [tuple(o.shape) for o in outs] == [(0,) + s for s in shapes]
    assert all(o.dtype == torch.float32 and o.is_contiguous() for o in outs)
    # training, backward: every parameter gets a zero gradient, as for the reference
    x = torch.randn(0, 3, *SIZE, requires_grad=True)
    with spy_attention() as calls:
        outs = m.train()(x)
        sum(o.sum() for o in outs).backward()
    assert calls == expected_calls
    assert [tuple(o.shape) for o in outs] == [(0,) + s for s in shapes]
    assert x.grad.shape == x.shape
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any(), name


# -- non-finite input ----------------------------------------------------------------------------
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
@pytest.mark.parametrize('backend', ['reference', None], ids=['reference', 'automatic'])
def test_non_finite_input_stays_in_its_sample_by_default(backend, bad):
    torch.manual_seed(0)
    m = DAT(NARROW_PP, attn_backend=backend).eval()
    assert m.check_finite is False
    x = torch.randn(2, 3, *SIZE)
    x[1, 0, 10, 7] = bad
    with torch.no_grad():
        batch, alone = m(x), m(x[:1])
    for o, r in zip(batch, alone):
        assert torch.isfinite(o[0]).all()
        torch.testing.assert_close(o[:1], r, rtol=0, atol=1e-5)
        assert not torch.isfinite(o[1]).all()


def _with_non_finite(B, where):
    x = torch.randn(B, 3, *SIZE)
    for sample, value, pixel in where:
        x[sample, 1, pixel, 3] = value
    return x


@pytest.mark.parametrize('B,where,fragments', [
    (2, [(1, float('nan'), 5)],
     ['DAT input has 1 non-finite value(s) (NaN or Inf) in batch sample(s) [1] of 2',
      '(sample 1: 1)', 'check_finite=True']),
    (3, [(0, float('inf'), 0), (2, float('nan'), 1), (0, -float('inf'), 2)],
     ['3 non-finite value(s)', 'batch sample(s) [0, 2] of 3', '(sample 0: 2, sample 2: 1)']),
])
def test_check_finite_rejects_before_any_layer_runs(B, where, fragments):
    m = DAT(NARROW_PP, check_finite=True).eval()
    calls = []
    m.stem.register_forward_pre_hook(lambda mod, inp: calls.append(1))
    _raises(ValueError, fragments, m, _with_non_finite(B, where))
    assert calls == []


def test_check_finite_changes_nothing_for_finite_input():
    torch.manual_seed(0)
    off = DAT(NARROW_PP).eval()
    on = DAT(NARROW_PP, check_finite=True).eval()
    on.load_state_dict(off.state_dict())
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        for a, b in zip(on(x), off(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert [o.shape[0] for o in on(x[:0])] == [0] * 4   # an empty batch has nothing bad
    # shape-only (meta) runs, as FLOP counting does, have no values to check
    meta = DAT(NARROW_PP, check_finite=True).to('meta').eval()
    outs = meta(torch.empty(1, 3, *SIZE, device='meta'))
    assert [tuple(o.shape) for o in outs] == [(1, d, *_map_size(i)) for i, d in enumerate(DIMS)]


def test_check_finite_from_a_config_override():
    """What ``--cfg-options model.backbone.check_finite=True`` does to a config."""
    cfg = Config(dict(model=dict(backbone=dict(type='DAT', arch=NARROW_PP))))
    assert MODELS.build(cfg.model.backbone).check_finite is False
    cfg.merge_from_dict({'model.backbone.check_finite': True})
    m = MODELS.build(cfg.model.backbone).eval()
    assert m.check_finite is True
    _raises(ValueError, ['batch sample(s) [1] of 2'], m,
            _with_non_finite(2, [(1, float('nan'), 0)]))
