"""The model code is device-clean: every tensor it creates follows its inputs' device.

Users run these models on GPUs. A factory call without ``device=`` (``torch.arange``,
``torch.zeros``, ``torch.tensor``, ``torch.linspace``, ...) in a forward pass, in a fast path's
backward pass or in a cached plan would put its tensor on the *default* device instead: on a
GPU run a host tensor, i.e. a device-mismatch error or a silent host-to-device copy per call.

This is checked on the CPU by making ``meta`` the default device while the model and its
inputs live explicitly on the CPU. Any factory call without ``device=`` then makes a meta
tensor, and the computation fails (meta and CPU operands do not mix), returns meta tensors, or
returns garbage (a CPU tensor indexed by meta indices holds uninitialised values). Every check
therefore asserts that outputs and gradients are CPU tensors and equal, within 1e-6, to the
same computation without the meta default device (bit-identical in practice).

What makes the check complete in torch 2.x:

* ``with torch.device('meta')`` and ``torch.set_default_device('meta')`` both push a
  ``DeviceContext`` torch-function mode that fills in ``device=`` of factory calls (both are
  verified below). The autograd engine runs backward passes without torch-function modes, so
  the Python ``backward`` of dat_mm's own ``autograd.Function``s escapes either construct;
  :func:`meta_default` re-enters the context inside each of them.
* Planning tensors that dat_mm caches across calls are dropped before each checked run, so
  that their construction runs under the meta default too.

Models and inputs are built outside the context (parameters on the CPU); only forward and
backward run inside it. The same checks run with the fast paths under bfloat16 autocast.
"""
import functools
import sys
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn

import dat_mm.models.layers.deformable_attn as deformable_attn_mod
import dat_mm.ops.deformable_chunked as dmha_chunked_mod
import dat_mm.ops.neighborhood_tiled as na_tiled_mod
from dat_mm import DAT
from dat_mm.models.layers import (ConvFFN, DeformableAttention2d, NeighborhoodAttention2d,
                                  WindowAttention2d)
from dat_mm.models.layers.deformable_attn import grid_coords
from dat_mm.models.layers.drop import drop_path_schedule
from dat_mm.ops import dmha_chunked, dmha_reference, na2d_reference, na2d_tiled

META = torch.device('meta')
CPU = torch.device('cpu')
TOL = 1e-6
BF16 = torch.bfloat16


# -- the check ---------------------------------------------------------------------------------
def _dat_mm_functions():
    """Every ``autograd.Function`` with its own ``backward`` defined in dat_mm (or in this
    file, for the checks of the check)."""
    found, todo = [], list(torch.autograd.Function.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        own = cls.__module__.startswith('dat_mm.') or cls.__module__ == __name__
        if own and 'backward' in vars(cls):
            found.append(cls)
    return found


def _clear_caches():
    """Drop dat_mm's cached planning tensors (``lru_cache`` functions and the tiling plans)."""
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(('dat_mm.models', 'dat_mm.ops')):
            continue
        for obj in list(vars(module).values()):
            if callable(getattr(obj, 'cache_clear', None)) and \
                    getattr(obj, '__module__', None) == name:
                obj.cache_clear()
    na_tiled_mod._PLANS.clear()


def _in_device_context(backward):
    @functools.wraps(backward)
    def wrapped(ctx, *grads):
        with torch.device(META):
            return backward(ctx, *grads)
    return staticmethod(wrapped)


@contextmanager
def meta_default():
    """``meta`` as the default device for forward passes and for the backward passes of
    dat_mm's autograd Functions; dat_mm's caches empty on entry and on exit."""
    saved = {cls: vars(cls)['backward'] for cls in _dat_mm_functions()}
    try:
        for cls, backward in saved.items():
            cls.backward = _in_device_context(backward.__func__)
        _clear_caches()
        with torch.device(META):
            assert torch.empty(0).device == META
            yield
    finally:
        for cls, backward in saved.items():
            cls.backward = backward
        _clear_caches()
    assert torch.empty(0).device == CPU


def _weights(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), device=CPU)


def _forward_backward(fn, inputs, params, amp_dtype, grad):
    """``fn(*inputs)`` (under autocast if ``amp_dtype``) and, with ``grad``, the gradients of a
    fixed weighted sum of its outputs w.r.t. the inputs that require grad and ``params``."""
    inputs = [t.detach().clone().requires_grad_(t.requires_grad and grad)
              if isinstance(t, torch.Tensor) else t for t in inputs]
    torch.manual_seed(0)   # drop path draws the same masks in both runs
    with torch.set_grad_enabled(grad), torch.autocast('cpu', dtype=amp_dtype or BF16,
                                                      enabled=amp_dtype is not None):
        out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    names = [f'output {i}' for i in range(len(outs))]
    if not grad:
        return names, outs
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    names += [f'grad of input {i}' for i in range(len(wrt))]
    names += [f'grad of {n}' for n, p in params]
    wrt += [p for _, p in params]
    loss = sum((o.float() * _weights(o.shape, i)).sum() for i, o in enumerate(outs))
    return names, outs + list(torch.autograd.grad(loss, wrt))


def assert_device_clean(fn, inputs, params=(), amp_dtype=None, grad=True):
    """``fn(*inputs)`` forward (and backward) under the meta default device: every output and
    gradient is a CPU tensor equal to the same computation without it.

    ``inputs``: CPU tensors (those with ``requires_grad`` get gradients) and other arguments;
    ``params``: ``(name, parameter)`` pairs that get gradients too.
    """
    params = [(n, p) for n, p in params if p.requires_grad]
    names, expected = _forward_backward(fn, inputs, params, amp_dtype, grad)
    assert all(t.device == CPU for t in expected)
    try:
        with meta_default():
            _, got = _forward_backward(fn, inputs, params, amp_dtype, grad)
    except Exception as err:  # noqa: BLE001 - a failure under the meta default is the finding
        raise AssertionError(f'device-unclean: {type(err).__name__}: {err}') from err
    assert len(got) == len(expected)
    for name, g, e in zip(names, got, expected):
        assert g is not None and g.device == CPU, f'device-unclean: {name} is on {g.device}'
        torch.testing.assert_close(g, e, rtol=TOL, atol=TOL, msg=f'{name} differs')


def _named_params(module):
    return list(module.named_parameters())


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """One intra-op thread: the tensors here are tiny, and on a busy machine OpenMP's thread
    barriers would take most of the time (threads do not change which code creates tensors)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the check itself --------------------------------------------------------------------------
def test_both_default_device_constructs_reach_factories_but_not_custom_backwards():
    """Why :func:`meta_default` patches backward passes: the torch-function mode that sets the
    default device is off while autograd runs a custom Function's backward."""
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            seen.append(torch.arange(1).device)
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            seen.append(torch.arange(1).device)
            return g

    x = torch.ones(2, requires_grad=True)
    with torch.device(META):
        Probe.apply(x).sum().backward()
    previous = torch.empty(0).device
    torch.set_default_device(META)
    try:
        Probe.apply(x).sum().backward()
    finally:
        torch.set_default_device(None if previous == CPU else previous)
    assert seen == [META, CPU, META, CPU]
    assert torch.empty(0).device == CPU

    names = {cls.__name__ for cls in _dat_mm_functions()}
    assert {'_TiledNA', '_DMHAChunked', '_GeluConv1x1'} <= names, names
    before = {cls: vars(cls)['backward'] for cls in _dat_mm_functions()}
    with meta_default():
        assert all(vars(cls)['backward'] is not b for cls, b in before.items())
    assert all(vars(cls)['backward'] is b for cls, b in before.items())


class _Ramp(nn.Module):
    """Adds a ramp along W: ``torch.arange`` with or without ``device=``."""

    def __init__(self, clean: bool):
        super().__init__()
        self.clean = clean
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        device = x.device if self.clean else None
        return x * self.scale + torch.arange(x.shape[-1], dtype=x.dtype, device=device)


class _DoubleGrad(torch.autograd.Function):
    """``2 x`` whose backward builds its factor with or without ``device=``."""

    @staticmethod
    def forward(ctx, x, clean):
        ctx.clean = clean
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        two = torch.full(g.shape, 2.0, dtype=g.dtype, device=g.device if ctx.clean else None)
        return g * two, None


def test_check_fails_on_factory_call_without_device_in_forward():
    x = torch.randn(2, 3, 5, 7, requires_grad=True)
    m = _Ramp(clean=True)
    assert_device_clean(m, [x], _named_params(m))
    m = _Ramp(clean=False)
    with pytest.raises(AssertionError, match='device-unclean'):
        assert_device_clean(m, [x], _named_params(m))
    with pytest.raises(AssertionError, match='device-unclean'):
        assert_device_clean(m, [x], grad=False)


def test_check_fails_on_factory_call_without_device_in_custom_backward():
    x = torch.randn(4, 3, requires_grad=True)
    assert_device_clean(lambda t: _DoubleGrad.apply(t, True), [x])
    with pytest.raises(AssertionError, match='device-unclean'):
        assert_device_clean(lambda t: _DoubleGrad.apply(t, False), [x])
    with torch.device(META):   # the bare context would have missed it
        y = x.detach().requires_grad_()
        _DoubleGrad.apply(y, False).sum().backward()
    assert y.grad.device == CPU


def test_check_fails_when_model_code_drops_the_device(monkeypatch):
    """The real deformable module, with its coordinate grids built without ``device=``."""
    torch.manual_seed(0)
    m = DeformableAttention2d(16, 4, 2, 2, 5, table_size=(7, 7))
    x = torch.randn(1, 16, 9, 11, requires_grad=True)
    assert_device_clean(m, [x], _named_params(m))
    clean = deformable_attn_mod.axis_coords
    monkeypatch.setattr(deformable_attn_mod, 'axis_coords',
                        lambda n, version, kind, dtype, device: clean(n, version, kind, dtype,
                                                                      None))
    with pytest.raises(AssertionError, match='device-unclean'):
        assert_device_clean(m, [x], _named_params(m))


def test_check_fails_when_tiling_plans_follow_the_default_device(monkeypatch):
    """The real tiled path with its plans built on the default device: caught, because the
    check rebuilds the cached plans under the meta default."""
    inputs = [torch.randn(1, 2, 11, 16, 8, requires_grad=True) for _ in range(3)]
    inputs += [torch.randn(2, 13, 13, requires_grad=True), 7]
    assert_device_clean(na2d_tiled, inputs)
    monkeypatch.setattr(na_tiled_mod, '_HOST', None)
    with pytest.raises(AssertionError, match='device-unclean'):
        assert_device_clean(na2d_tiled, inputs)


# -- neighbourhood attention -------------------------------------------------------------------
def _na_inputs(H, W, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 2, H, W, 8, generator=g).to(dtype).requires_grad_()
               for _ in range(3))
    rpb = torch.randn(2, 13, 13, generator=g).requires_grad_()
    return [q, k, v, rpb, 7]


NA_FUNCTIONS = {
    'reference': na2d_reference,
    'tiled': na2d_tiled,
    'tiled-2x7': functools.partial(na2d_tiled, tile=(2, 7)),
}


@pytest.mark.parametrize('size', [(19, 26), (7, 9)])
@pytest.mark.parametrize('fn', list(NA_FUNCTIONS))
def test_neighborhood_attention_functions(fn, size):
    assert_device_clean(NA_FUNCTIONS[fn], _na_inputs(*size))


def test_neighborhood_tiled_inference_path():
    """No autograd: the fused scaled_dot_product_attention path with the per-tile mask."""
    assert_device_clean(na2d_tiled, _na_inputs(19, 26), grad=False)
    assert_device_clean(na2d_tiled, _na_inputs(19, 26)[:3] + [None, 7], grad=False)


def test_neighborhood_tiled_without_rpb():
    assert_device_clean(na2d_tiled, _na_inputs(11, 16)[:3] + [None, 7])


@pytest.mark.parametrize('size', [(5, 9), (19, 26)])   # 5x9: padded up to the kernel
@pytest.mark.parametrize('backend', ['reference', 'tiled'])
def test_neighborhood_attention_module(backend, size):
    torch.manual_seed(0)
    m = NeighborhoodAttention2d(16, 2, backend=backend)
    assert_device_clean(m, [torch.randn(2, 16, *size, requires_grad=True)], _named_params(m))


# -- deformable attention ----------------------------------------------------------------------
def _dmha_inputs(g=2, use_pe=True, dtype=torch.float32, seed=0):
    B, nh, H, W, Hk, Wk, c = 2, 4, 9, 13, 3, 5, 8
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, nh, H * W, c, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(B, nh, Hk * Wk, c, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(B, nh, Hk * Wk, c, generator=gen).to(dtype).requires_grad_()
    pos = (torch.rand(B, g, Hk * Wk, 2, generator=gen) * 2.4 - 1.2).clamp(-1, 1)
    q_coords = grid_coords(H, W, 2, 'query', torch.float32, CPU).reshape(-1, 2)
    rpe = torch.randn(nh, 13, 13, generator=gen).requires_grad_() if use_pe else None
    # without a table the positions get no gradient
    return [q, k, v, pos.requires_grad_(use_pe), q_coords, rpe, c ** -0.5]


@pytest.mark.parametrize('fn,chunk,save_bytes', [
    ('reference', None, None),
    ('chunked', None, None),      # one chunk, probabilities kept for the backward pass
    ('chunked', 7, 0),            # many chunks, recomputed in the backward pass
])
@pytest.mark.parametrize('use_pe', [True, False])
def test_deformable_attention_functions(monkeypatch, fn, chunk, save_bytes, use_pe):
    if save_bytes is not None:
        monkeypatch.setattr(dmha_chunked_mod, 'SAVE_PROBS_BYTES', save_bytes)
    f = dmha_reference if fn == 'reference' else functools.partial(dmha_chunked, chunk=chunk)
    assert_device_clean(f, _dmha_inputs(use_pe=use_pe))


def test_deformable_chunked_grid_sample_split_and_inference():
    """One offset group on 2 threads: the bias rows split over grid_sample batch entries."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, k, v, pos, q_coords, rpe, scale = _dmha_inputs(g=1)
        assert dmha_chunked_mod._Plan(q, k, v, pos, q_coords, rpe, scale, 20,
                                      'grid').split == 2
        chunked = functools.partial(dmha_chunked, chunk=20, bias_method='grid')
        assert_device_clean(chunked, _dmha_inputs(g=1))
        assert_device_clean(chunked, _dmha_inputs(g=1), grad=False)
    finally:
        torch.set_num_threads(threads)


DMHA_MODULES = {
    # (module arguments, input size): DAT++ clamped positions on an odd map
    'v2': (dict(dim=16, num_heads=4, groups=2, stride=2, offset_kernel=5,
                table_size=(7, 7)), (17, 23)),
    # DAT++ range-limited offsets on a 1-pixel-high map (1-point query and key axes)
    'v2-range-1px': (dict(dim=16, num_heads=4, groups=2, stride=2, offset_kernel=5,
                          offset_range_factor=2.0, table_size=(7, 7)), (1, 7)),
    # v1 coordinates and range-limited tanh offsets
    'v1': (dict(dim=16, num_heads=4, groups=2, stride=1, offset_kernel=3,
                offset_range_factor=2.0, table_size=(4, 4), version=1), (9, 11)),
    'no-pe': (dict(dim=16, num_heads=4, groups=1, stride=2, offset_kernel=3, use_pe=False),
              (10, 13)),
}


@pytest.mark.parametrize('backend', ['reference', 'chunked'])
@pytest.mark.parametrize('case', list(DMHA_MODULES))
def test_deformable_attention_module(case, backend):
    kwargs, size = DMHA_MODULES[case]
    torch.manual_seed(0)
    m = DeformableAttention2d(**kwargs, backend=backend)
    assert_device_clean(m, [torch.randn(2, 16, *size, requires_grad=True)], _named_params(m))


def test_deformable_attention_module_capture_path():
    """With its tap enabled (visualisation) the module computes the reference itself."""
    torch.manual_seed(0)
    m = DeformableAttention2d(16, 4, 2, 2, 5, table_size=(7, 7))
    captured = []
    m.tap.enabled = True
    m.tap.register_forward_hook(lambda tap, args, record: captured.append(record['attn'].device))
    assert_device_clean(m, [torch.randn(1, 16, 9, 11, requires_grad=True)], _named_params(m))
    assert captured == [CPU, CPU]


# -- window attention, MLPs --------------------------------------------------------------------
@pytest.mark.parametrize('window,size', [(7, (17, 19)), (7, (14, 14)), (3, (8, 11))])
@pytest.mark.parametrize('shifted', [False, True])
def test_window_attention_module(shifted, window, size):
    torch.manual_seed(0)
    m = WindowAttention2d.shifted(16, 2, window) if shifted else WindowAttention2d(16, 2, window)
    assert_device_clean(m, [torch.randn(2, 16, *size, requires_grad=True)], _named_params(m))


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
def test_conv_ffn_and_gelu_recompute(fused, channels_last):
    torch.manual_seed(0)
    m = ConvFFN(16, 4, fused=fused)
    x = torch.randn(2, 16, 9, 11)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    assert_device_clean(m, [x.requires_grad_()], _named_params(m))
    assert_device_clean(m, [x], grad=False)   # in-place GELU without autograd


def test_drop_path_schedule_is_host_side():
    """Python floats from a host computation, whatever the default device."""
    expected = drop_path_schedule(0.3, (2, 3))
    with torch.device(META):
        assert drop_path_schedule(0.3, (2, 3)) == expected


# -- the whole backbone ------------------------------------------------------------------------
ARCHS = {
    'dat++': dict(version=2, img_size=64, stages=[
        dict(dim=16, depth=2, num_heads=2, blocks='ND', groups=1, stride=4, offset_kernel=5),
        # stride 8 on the 8x10 map: a key grid of one row
        dict(dim=32, depth=2, num_heads=2, blocks='ND', groups=2, stride=8, offset_kernel=9),
        dict(dim=32, depth=2, num_heads=4, blocks='ND', groups=2, stride=1, offset_kernel=3,
             offset_range_factor=2.0),
        dict(dim=64, depth=2, num_heads=4, blocks='DD', groups=4, stride=1, offset_kernel=3)]),
    'v1': dict(version=1, img_size=64, window_size=3, stages=[
        dict(dim=16, depth=2, num_heads=2, blocks='LS', use_pe=False),
        dict(dim=32, depth=2, num_heads=2, blocks='LS', use_pe=False),
        dict(dim=32, depth=2, num_heads=4, groups=2, blocks='LD', offset_kernel=5,
             offset_range_factor=2.0),
        dict(dim=64, depth=2, num_heads=4, groups=2, blocks='LD', offset_kernel=3,
             offset_range_factor=2.0)]),
}


def _backbone(arch, **kwargs):
    torch.manual_seed(0)
    return DAT(ARCHS[arch], drop_path_rate=0.1, check_finite=True, **kwargs).train()


BACKBONE_CASES = {
    'reference': dict(attn_backend='reference'),
    'auto': dict(),                            # channels_last maps (the CPU default)
    'auto-nchw': dict(channels_last=False),    # NCHW maps (the GPU default)
    'auto-with-cp': dict(with_cp=True),
}


@pytest.mark.parametrize('case', list(BACKBONE_CASES))
@pytest.mark.parametrize('arch', list(ARCHS))
def test_backbone_forward_backward(arch, case):
    """Training mode (drop path on) at 61x75: four stages, padding, 1-row key grids."""
    model = _backbone(arch, **BACKBONE_CASES[case])
    x = torch.randn(2, 3, 61, 75, requires_grad=True)
    assert_device_clean(model, [x], _named_params(model))


@pytest.mark.parametrize('arch', list(ARCHS))
def test_backbone_inference(arch):
    model = _backbone(arch).eval()
    assert_device_clean(model, [torch.randn(1, 3, 61, 75)], grad=False)


@pytest.mark.parametrize('arch', list(ARCHS))
def test_backbone_built_under_a_default_device_lives_there(arch):
    """Construction follows the default device (deferred initialisation on ``meta``, or
    ``with torch.device('cuda')``): every parameter and buffer, and a shape-only forward."""
    with torch.device(META):
        model = DAT(ARCHS[arch])
    assert {t.device for t in [*model.parameters(), *model.buffers()]} == {META}
    outs = model(torch.empty(1, 3, 61, 75, device=META))
    assert [o.device for o in outs] == [META] * 4
    assert [tuple(o.shape[2:]) for o in outs] == [(16, 19), (8, 10), (4, 5), (2, 3)]


# -- fast paths under bfloat16 autocast --------------------------------------------------------
def test_neighborhood_tiled_under_autocast():
    inputs = _na_inputs(19, 26, dtype=BF16)
    assert_device_clean(na2d_tiled, inputs, amp_dtype=BF16)
    assert_device_clean(na2d_tiled, inputs, amp_dtype=BF16, grad=False)


@pytest.mark.parametrize('chunk,save_bytes', [(None, None), (7, 0)])
def test_deformable_chunked_under_autocast(monkeypatch, chunk, save_bytes):
    if save_bytes is not None:
        monkeypatch.setattr(dmha_chunked_mod, 'SAVE_PROBS_BYTES', save_bytes)
    inputs = _dmha_inputs(dtype=BF16)
    assert_device_clean(functools.partial(dmha_chunked, chunk=chunk), inputs, amp_dtype=BF16)


@pytest.mark.parametrize('make', ['neighborhood', 'deformable', 'conv_ffn'])
def test_modules_under_autocast(make):
    torch.manual_seed(0)
    m = {'neighborhood': lambda: NeighborhoodAttention2d(16, 2, backend='tiled'),
         'deformable': lambda: DeformableAttention2d(16, 4, 2, 2, 5, table_size=(7, 7),
                                                     backend='chunked'),
         'conv_ffn': lambda: ConvFFN(16, 4)}[make]()
    x = torch.randn(2, 16, 17, 23, requires_grad=True)
    assert_device_clean(m, [x], _named_params(m), amp_dtype=BF16)


@pytest.mark.parametrize('channels_last', [None, False])
@pytest.mark.parametrize('arch', list(ARCHS))
def test_backbone_under_autocast(arch, channels_last):
    model = _backbone(arch, channels_last=channels_last)
    x = torch.randn(1, 3, 61, 75, requires_grad=True)
    assert_device_clean(model, [x], _named_params(model), amp_dtype=BF16)
