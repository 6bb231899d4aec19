"""Neighbourhood attention (docs/model.md) against a brute-force per-pixel loop.

The oracle (tests/oracles.py: ``na_loop``, ``na_module_oracle``) follows docs/model.md:
window start ``clamp(i - k//2, 0, L - k)``, bias ``rpb[head, ky - qy + k - 1, kx - qx + k - 1]``,
softmax, weighted sum; maps smaller than k are zero-padded bottom/right *before* the qkv
projection (pad tokens are real tokens whose qkv is the projection bias) and cropped back.
"""
import pytest
import torch
import torch.nn.functional as F

from dat_mm.models.layers import NeighborhoodAttention2d
from dat_mm.ops import NA_BACKENDS, na2d_reference
from oracles import linear, na_loop, na_module_oracle

DT = torch.float64


def _qkv_rpb(B, nh, H, W, c, ks, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, nh, H, W, c, generator=g, dtype=DT, requires_grad=True)
               for _ in range(3))
    rpb = torch.randn(nh, 2 * ks - 1, 2 * ks - 1, generator=g, dtype=DT, requires_grad=True)
    return q, k, v, rpb


def _grads(out, inputs, seed=1):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    w = w.to(out.dtype)  # the same weights whatever the dtype of ``out``
    return torch.autograd.grad((out * w).sum(), inputs)


# -- functional level ------------------------------------------------------------------------
@pytest.mark.parametrize('H,W,ks,with_rpb', [
    (7, 7, 7, True), (9, 11, 7, True), (7, 13, 7, True), (12, 10, 7, True), (5, 6, 3, True),
    (6, 9, 5, True), (3, 3, 3, True), (8, 9, 7, False)])
def test_na2d_reference_matches_loop_forward_backward(H, W, ks, with_rpb):
    q, k, v, rpb = _qkv_rpb(2, 2, H, W, 4, ks)
    rpb_arg = rpb if with_rpb else None
    out = na2d_reference(q, k, v, rpb_arg, ks)
    ref = na_loop(q, k, v, rpb_arg, ks)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    inputs = (q, k, v, rpb) if with_rpb else (q, k, v)
    for got, exp, name in zip(_grads(out, inputs), _grads(ref, inputs), 'q k v rpb'.split()):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12, msg=f'grad of {name}')


def test_na2d_reference_attention_probabilities_cover_the_clamped_window():
    """Border windows are shifted, not zero-padded: each query's k*k probabilities sum to 1
    and the corner query attends to the same keys as its inner neighbour (same window)."""
    ks = 7
    q, k, v, rpb = _qkv_rpb(1, 1, 9, 11, 3, ks)
    out, attn = na2d_reference(q, k, v, rpb, ks, return_attn=True)
    assert attn.shape == (1, 1, 9, 11, ks * ks)
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, 1, 9, 11, dtype=DT))
    # queries 0..3 along an axis share the window starting at 0: with v set to a one-hot of
    # the key position, the output reveals which keys were read
    H, W = 9, 11
    onehot = torch.eye(H * W, dtype=DT).reshape(1, 1, H, W, H * W)
    zeros = torch.zeros(1, 1, H, W, H * W, dtype=DT)
    out = na2d_reference(zeros, zeros, onehot, None, ks)  # uniform attention over the window
    for qy, qx in [(0, 0), (3, 3), (8, 10), (4, 5), (8, 0)]:
        y0 = min(max(qy - ks // 2, 0), H - ks)
        x0 = min(max(qx - ks // 2, 0), W - ks)
        expect = torch.zeros(H, W, dtype=DT)
        expect[y0:y0 + ks, x0:x0 + ks] = 1.0 / ks ** 2
        torch.testing.assert_close(out[0, 0, qy, qx].reshape(H, W), expect)


def test_na2d_reference_rejects_maps_smaller_than_kernel():
    q, k, v, rpb = _qkv_rpb(1, 1, 5, 9, 2, 7)
    with pytest.raises(ValueError, match='7'):
        na2d_reference(q, k, v, rpb, 7)


def test_na2d_reference_gradcheck_k3():
    q, k, v, rpb = _qkv_rpb(1, 2, 4, 5, 3, 3, seed=3)
    assert torch.autograd.gradcheck(lambda *a: na2d_reference(*a, 3), (q, k, v, rpb))


def test_na2d_reference_gradcheck_k7_on_8x9():
    # fast mode (random projections of the Jacobians): the full one needs ~1200 evaluations
    q, k, v, rpb = _qkv_rpb(1, 1, 8, 9, 2, 7, seed=4)
    assert torch.autograd.gradcheck(lambda *a: na2d_reference(*a, 7), (q, k, v, rpb),
                                    fast_mode=True)


# -- module level ----------------------------------------------------------------------------
def _module(dim=8, heads=2, ks=7, seed=0, dtype=DT, backend=None):
    torch.manual_seed(seed)
    m = NeighborhoodAttention2d(dim, heads, kernel_size=ks, backend=backend).to(dtype)
    with torch.no_grad():  # rpb init is tiny (std 0.02); make its effect clearly visible
        m.rpb.normal_(0, 0.5)
    return m


MODULE_SIZES = [(9, 11), (7, 13), (3, 5), (1, 8), (6, 6), (8, 2), (1, 1)]


@pytest.mark.parametrize('H,W', MODULE_SIZES)
def test_na_module_matches_loop_forward_backward(H, W):
    m = _module()
    x = torch.randn(2, 8, H, W, dtype=DT, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    ref = na_module_oracle(m, x, 7)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    names = ['x', 'qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias', 'rpb']
    inputs = [x, m.qkv.weight, m.qkv.bias, m.proj.weight, m.proj.bias, m.rpb]
    for got, exp, name in zip(_grads(out, inputs), _grads(ref, inputs), names):
        torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-11, msg=f'grad of {name}')


@pytest.mark.parametrize('H,W', [(3, 5), (1, 8), (6, 6), (9, 4)])
def test_na_module_pad_tokens_are_real_tokens(H, W):
    """The oracle's padding semantics matter: padding *after* the projection (pad tokens with
    zero q/k/v) or masking them out gives clearly different numbers, and the module agrees
    with pad-before-projection."""
    m = _module(seed=2)
    with torch.no_grad():
        m.qkv.bias.normal_(0, 1.0)
    x = torch.randn(1, 8, H, W, dtype=DT)
    with torch.no_grad():
        out = m(x)
        ref = na_module_oracle(m, x, 7)
        # alternative semantics: qkv computed on the unpadded map, zero-padded afterwards
        t = x.permute(0, 2, 3, 1)
        qkv = linear(m.qkv, t)
        qkv = F.pad(qkv, (0, 0, 0, max(0, 7 - W), 0, max(0, 7 - H)))
        Hp, Wp = qkv.shape[1:3]
        qkv = qkv.reshape(1, Hp, Wp, 3, 2, 4)
        q, k, v = (qkv[:, :, :, i].permute(0, 3, 1, 2, 4) for i in range(3))
        alt = na_loop(q * 4 ** -0.5, k, v, m.rpb, 7).permute(0, 2, 3, 1, 4).reshape(1, Hp, Wp, 8)
        alt = linear(m.proj, alt[:, :H, :W]).permute(0, 3, 1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert (out - alt).abs().max() > 1e-3


def test_na_module_gradients_reach_rpb_and_projections():
    m = _module(dim=16, heads=4)
    x = torch.randn(1, 16, 9, 10, dtype=DT, requires_grad=True)
    (m(x) * torch.randn(1, 16, 9, 10, dtype=DT)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # every rpb entry a query at this size can use gets gradient; with a 9x10 map and k=7 the
    # relative offsets span -6..6 along both axes, so the whole table is used
    assert (m.rpb.grad != 0).all()


def test_na_module_gradcheck_small_map_with_padding():
    m = _module(dim=4, heads=2, ks=3, seed=5)
    names = ['qkv.weight', 'rpb', 'proj.bias']
    params = {n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters()}
    x = torch.randn(1, 4, 2, 4, dtype=DT, requires_grad=True)  # H=2 < k=3: padded

    def f(x, *ps):
        return torch.func.functional_call(m, {**params, **dict(zip(names, ps))}, (x,))

    assert torch.autograd.gradcheck(f, (x, *[params[n] for n in names]))


@pytest.mark.parametrize('backend', NA_BACKENDS)
@pytest.mark.parametrize('H,W', [(9, 11), (3, 5)])
def test_na_module_float32_each_backend_matches_float64_oracle(backend, H, W):
    m = _module(dim=16, heads=4, dtype=torch.float32, backend=backend)
    x = torch.randn(2, 16, H, W, requires_grad=True)
    out = m(x)
    m64 = _module(dim=16, heads=4, dtype=torch.float32)
    m64.load_state_dict(m.state_dict())
    m64 = m64.double()
    x64 = x.detach().double().requires_grad_(True)
    ref = na_module_oracle(m64, x64, 7)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    g32 = _grads(out, [x, m.rpb, m.qkv.weight])
    g64 = _grads(ref, [x64, m64.rpb, m64.qkv.weight])
    for a, b, name in zip(g32, g64, ['x', 'rpb', 'qkv.weight']):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4, msg=f'grad of {name}')


def test_na_module_rpb_shape_and_init():
    torch.manual_seed(0)
    m = NeighborhoodAttention2d(64, 16, kernel_size=7)
    assert m.rpb.shape == (16, 13, 13)
    assert abs(m.rpb.std().item() - 0.02) < 0.002
    assert m.qkv.weight.shape == (192, 64) and m.proj.weight.shape == (64, 64)


def test_na_module_rejects_bad_settings():
    with pytest.raises(ValueError, match='divisible'):
        NeighborhoodAttention2d(10, 3)
    with pytest.raises(ValueError, match='odd'):
        NeighborhoodAttention2d(8, 2, kernel_size=6)
