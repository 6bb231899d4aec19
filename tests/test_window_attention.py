"""Window (L) and shifted-window (S) attention of DAT v1 against a transcription of Swin.

The oracle (tests/oracles.py: ``window_oracle``) loops over windows; the relative position
index of query ``(ya, xa)`` and key ``(yb, xb)`` is ``(ya - yb + w - 1) * (2w - 1) +
(xa - xb + w - 1)``; the shifted variant rolls by ``-ceil(7/2) = -4``, adds ``-100`` between
tokens of different Swin regions (slices ``(0, -w)``, ``(-w, -s)``, ``(-s, None)`` of the
padded map) and rolls back. Maps that are not window multiples are zero-padded at the
bottom/right and cropped back, as mmdet's Swin does.
"""
import pytest
import torch

from dat_mm.models.layers import WindowAttention2d
from oracles import window_oracle

DT = torch.float64


def _grads(out, inputs, seed=1):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    return torch.autograd.grad((out * w.to(out.dtype)).sum(), inputs)


def _module(dim=8, heads=2, shifted=False, seed=0):
    torch.manual_seed(seed)
    cls = WindowAttention2d
    m = (cls.shifted(dim, heads, 7) if shifted else cls(dim, heads, 7)).to(DT)
    with torch.no_grad():  # make the bias table matter (init std 0.01)
        m.relative_position_bias_table.normal_(0, 1.0)
    return m


def test_shift_is_ceil_half_window():
    assert WindowAttention2d.shifted(8, 2, 7).shift == 4
    assert WindowAttention2d(8, 2, 7).shift == 0


@pytest.mark.parametrize('shifted', [False, True])
@pytest.mark.parametrize('H,W', [(14, 14), (7, 7), (17, 19), (9, 10), (5, 3), (14, 21)])
def test_window_attention_matches_swin_transcription(shifted, H, W):
    m = _module(shifted=shifted)
    x = torch.randn(2, 8, H, W, dtype=DT, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    ref = window_oracle(m, x, 7, 4 if shifted else 0)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    names = ['x', 'proj_qkv.weight', 'proj_qkv.bias', 'proj_out.weight',
             'relative_position_bias_table']
    inputs = [x, m.proj_qkv.weight, m.proj_qkv.bias, m.proj_out.weight,
              m.relative_position_bias_table]
    for g, e, name in zip(_grads(out, inputs), _grads(ref, inputs), names):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11, msg=f'grad of {name}')


def test_shift_and_mask_matter_at_14x14():
    """Non-vacuity: at 14x14 the shifted variant differs from plain windows, from a shift
    without the mask, and from a shift of 3 (mmdet Swin's w // 2)."""
    m = _module(shifted=True)
    x = torch.randn(1, 8, 14, 14, dtype=DT)
    with torch.no_grad():
        out = m(x)
        plain = window_oracle(m, x, 7, 0)
        shift3 = window_oracle(m, x, 7, 3)
        # shift 4 but with a mask that never triggers (all tokens in one region)
        t = torch.roll(x, (-4, -4), (2, 3))
        nomask = torch.roll(window_oracle(m, t, 7, 0), (4, 4), (2, 3))
    for other in (plain, shift3, nomask):
        assert (out - other).abs().max() > 1e-3


def test_relative_position_bias_gets_gradient_everywhere():
    m = _module()
    x = torch.randn(1, 8, 14, 14, dtype=DT, requires_grad=True)
    (m(x) * torch.randn(1, 8, 14, 14, dtype=DT)).sum().backward()
    # a 7x7 window uses all 13x13 relative offsets
    assert (m.relative_position_bias_table.grad != 0).all()


def test_window_attention_parameters_and_init():
    torch.manual_seed(0)
    m = WindowAttention2d(96, 3, 7)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {'proj_qkv.weight': (288, 96), 'proj_qkv.bias': (288,),
                      'proj_out.weight': (96, 96), 'proj_out.bias': (96,),
                      'relative_position_bias_table': (169, 3)}
    assert abs(m.relative_position_bias_table.std().item() - 0.01) < 0.0015
    # the index table and the mask are recomputed, not saved (the converter drops them)
    assert set(m.state_dict()) == set(shapes)


def test_window_attention_rejects_bad_settings():
    with pytest.raises(ValueError, match='divisible'):
        WindowAttention2d(10, 3)
    with pytest.raises(ValueError, match='shift'):
        WindowAttention2d(8, 2, 7, shift=7)
