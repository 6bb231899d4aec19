"""The fused forms (DAT(fused=True), the default) against the plain modules, outputs and all
gradients: the depth-wise residual folded into its convolution (dat_mm.ops.dwconv_residual),
the ConvFFN's GELU-recompute path (dat_mm.ops.gelu_conv1x1), its memory saving and its choice;
drop path; layer input checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dat_mm.models.layers import ConvFFN, DATBlock, NeighborhoodAttention2d
from dat_mm.models.layers.drop import drop_path
from dat_mm.ops.dwconv_residual import residual_dwconv
from dat_mm.ops.gelu_conv1x1 import can_run_gelu_conv1x1, gelu_conv1x1
from oracles import conv_ffn_oracle


def rel_err(got, exp):
    return ((got.double() - exp.double()).norm() / exp.double().norm().clamp_min(1e-30)).item()


def _map(B, C, H, W, dtype=torch.float32, channels_last=False, seed=0):
    x = torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(True)


def _grads(out, tensors, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, tensors, g)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('bias', [True, False])
def test_gelu_conv1x1_equals_plain_modules(channels_last, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 5, 1, bias=bias)
    s = _map(2, 12, 7, 9, channels_last=channels_last)
    out = gelu_conv1x1(s, conv)
    exp = conv(F.gelu(s))
    assert torch.allclose(out, exp, rtol=0, atol=1e-6)
    params = [s, conv.weight] + ([conv.bias] if bias else [])
    for name, a, b in zip(('input', 'weight', 'bias'), _grads(out, params), _grads(exp, params)):
        assert rel_err(a, b) < 1e-6, name


def test_gelu_conv1x1_partial_requires_grad_and_tanh_gelu():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 3, 1)
    s = _map(1, 8, 5, 5)
    with torch.no_grad():
        s_frozen = s.detach()
    conv.bias.requires_grad_(False)
    out = gelu_conv1x1(s_frozen, conv, approximate='tanh')
    exp = conv(F.gelu(s_frozen, approximate='tanh'))
    gw, = _grads(out, [conv.weight])
    ew, = _grads(exp, [conv.weight])
    assert rel_err(gw, ew) < 1e-6
    conv.weight.requires_grad_(False)
    out = gelu_conv1x1(s, conv)
    gs, = _grads(out, [s])
    es, = _grads(conv(F.gelu(s)), [s])
    assert rel_err(gs, es) < 1e-6


def test_gelu_conv1x1_refuses_what_it_cannot_compute():
    s = torch.randn(1, 4, 3, 3)
    assert can_run_gelu_conv1x1(s, nn.Conv2d(4, 2, 1))
    for x, conv, reason in [(s, nn.Conv2d(4, 2, 3, padding=1), 'plain 1x1'),
                            (s, nn.Conv2d(4, 2, 1, groups=2), 'plain 1x1'),
                            (s.double(), nn.Conv2d(4, 2, 1), 'dtype')]:
        assert not can_run_gelu_conv1x1(x, conv)
        with pytest.raises(ValueError, match=reason):
            can_run_gelu_conv1x1(x, conv, raise_error=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not can_run_gelu_conv1x1(s, nn.Conv2d(4, 2, 1))
        with pytest.raises(ValueError, match='autocast'):
            can_run_gelu_conv1x1(s, nn.Conv2d(4, 2, 1), raise_error=True)


def _ffn_pair(dim=8, **kw):
    torch.manual_seed(0)
    fast = ConvFFN(dim, **kw)
    plain = ConvFFN(dim, fused=False, drop=kw.get('drop', 0.0))
    plain.load_state_dict(fast.state_dict())
    for m in (fast.dwc, plain.dwc):  # non-trivial depth-wise weights
        nn.init.normal_(m.weight, std=0.3)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('size', [(7, 9), (14, 14)])
def test_conv_ffn_recompute_matches_plain_and_oracle(channels_last, size):
    fast, plain = _ffn_pair()
    x = _map(2, 8, *size, channels_last=channels_last)
    out, exp = fast(x), plain(x)
    assert out.grad_fn is not None and 'GeluConv1x1' in type(out.grad_fn).__name__
    assert 'GeluConv1x1' not in type(exp.grad_fn).__name__
    assert rel_err(out, exp) < 2e-6
    assert rel_err(out, conv_ffn_oracle(fast, x)) < 2e-6
    tensors_fast = [x] + list(fast.parameters())
    tensors_plain = [x] + list(plain.parameters())
    names = ['input'] + [n for n, _ in fast.named_parameters()]
    for name, a, b in zip(names, _grads(out, tensors_fast), _grads(exp, tensors_plain)):
        assert rel_err(a, b) < 1e-5, name


def _saved_bytes(fn):
    sizes = {}

    def pack(t):
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes.values())


def test_conv_ffn_recompute_keeps_one_hidden_map_less():
    fast, plain = _ffn_pair(dim=16)
    x = _map(2, 16, 12, 12, channels_last=True)
    hidden_map = 2 * 64 * 12 * 12 * 4
    saved_fast, saved_plain = _saved_bytes(lambda: fast(x)), _saved_bytes(lambda: plain(x))
    assert saved_plain - saved_fast == hidden_map


def test_conv_ffn_inference_leaves_input_alone_and_matches():
    fast, plain = _ffn_pair()
    x = torch.randn(1, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    x0 = x.clone()
    with torch.no_grad():
        out = fast(x)
    assert torch.equal(x, x0)
    assert rel_err(out, plain(x)) < 2e-6


def test_conv_ffn_recompute_choice():
    x = _map(1, 8, 5, 5)
    # dropout after the activation in training: the plain GELU and linear2
    fast, _ = _ffn_pair(drop=0.1)
    fast.train()
    assert 'GeluConv1x1' not in type(fast(x).grad_fn).__name__
    fast.eval()
    assert 'GeluConv1x1' in type(fast(x).grad_fn).__name__
    # autocast: the plain GELU and linear2
    fast, _ = _ffn_pair()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert 'GeluConv1x1' not in type(fast(x).grad_fn).__name__
    # fused=False: never
    assert 'GeluConv1x1' not in type(ConvFFN(8, fused=False)(x).grad_fn).__name__


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 2e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize('ks', [3, 5])
@pytest.mark.parametrize('channels_last', [False, True])
def test_residual_dwconv_equals_conv_plus_input(dtype, tol, ks, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, ks, 1, ks // 2, groups=6).to(dtype)
    nn.init.normal_(conv.weight, std=0.3)
    x = _map(2, 6, 7, 9, dtype=dtype, channels_last=channels_last)
    out, exp = residual_dwconv(x, conv), x + conv(x)
    assert 'Convolution' in type(out.grad_fn).__name__      # one convolution, no separate sum
    assert rel_err(out, exp) < tol
    tensors = [x, conv.weight, conv.bias]
    for name, a, b in zip(('input', 'weight', 'bias'), _grads(out, tensors),
                          _grads(exp, tensors)):
        assert rel_err(a, b) < 10 * tol, name


def test_residual_dwconv_in_half_precision_is_the_two_step_form():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, 1, 1, groups=4)
    x = torch.randn(1, 4, 5, 5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, exp = residual_dwconv(x, conv), x + conv(x)
    assert torch.equal(out, exp)
    conv16 = conv.to(torch.bfloat16)
    x16 = x.to(torch.bfloat16)
    assert torch.equal(residual_dwconv(x16, conv16), x16 + conv16(x16))


@pytest.mark.parametrize('training', [True, False])
def test_block_fused_equals_plain(training):
    torch.manual_seed(0)
    mlp = ConvFFN(8)
    fast = DATBlock(8, nn.Identity(), mlp, drop_path=0.0).train(training)
    plain = DATBlock(8, nn.Identity(), ConvFFN(8, fused=False), fused=False).train(training)
    plain.load_state_dict(fast.state_dict())
    nn.init.normal_(fast.lpu.weight, std=0.3)
    plain.load_state_dict(fast.state_dict())
    x = _map(2, 8, 6, 7, channels_last=True)
    out, exp = fast(x), plain(x)
    assert rel_err(out, exp) < 2e-6
    tensors_fast, tensors_plain = [x] + list(fast.parameters()), [x] + list(plain.parameters())
    names = ['input'] + [n for n, _ in fast.named_parameters()]
    for name, a, b in zip(names, _grads(out, tensors_fast), _grads(exp, tensors_plain)):
        assert rel_err(a, b) < 1e-5, name


def test_conv_ffn_under_autocast_matches_float32():
    fast, plain = _ffn_pair()
    x = _map(2, 8, 9, 9, channels_last=True)
    exp = plain(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = fast(x)
    assert rel_err(out.float(), exp) < 2e-2


@pytest.mark.parametrize('p,training', [(0.3, True), (0.3, False), (0.0, True)])
def test_drop_path_drops_whole_samples_and_rescales_the_rest(p, training):
    torch.manual_seed(7)
    branch = torch.randn(64, 4, 3, 5)
    out = drop_path(branch, p, training)
    if not (p and training):
        assert out is branch
        return
    kept = [bool((out[i] != 0).any()) for i in range(64)]
    for i in range(64):
        want = branch[i] / (1 - p) if kept[i] else torch.zeros_like(branch[i])
        assert torch.allclose(out[i], want, atol=1e-6)
    assert 0 < kept.count(False) < 64 * p * 2   # ~19 of 64 dropped


def test_neighborhood_attention_names_a_wrong_channel_count():
    na = NeighborhoodAttention2d(16, 2)
    with pytest.raises(ValueError, match='built for 16 channels, got a map of 8'):
        na(torch.randn(1, 8, 9, 9))
