"""Choice of attention backend: automatic choice, refusals with reasons (logged at debug
level), the DAT_MM_ATTN_BACKEND environment variable, the per-module / per-backbone override,
and that the chosen function is the one that actually runs."""
import logging
from contextlib import contextmanager

import pytest
import torch

import dat_mm  # noqa: F401  (registers the fast backends)
from dat_mm import DAT
from dat_mm.models.layers import (DeformableAttention2d, NeighborhoodAttention2d,
                                  available_backends, choose_backend)
from dat_mm.models.layers import attention_backends as ab
from dat_mm.models.layers.deformable_attn import grid_coords

LOGGER = 'dat_mm.attention'


def _na_args(dtype=torch.float32, H=9, W=10):
    q, k, v = (torch.randn(1, 2, H, W, 4, dtype=dtype) for _ in range(3))
    return (q, k, v, torch.randn(2, 13, 13), 7)


def _dm_args(dtype=torch.float32):
    q = torch.randn(1, 2, 12, 4, dtype=dtype)
    k, v = torch.randn(1, 2, 6, 4, dtype=dtype), torch.randn(1, 2, 6, 4, dtype=dtype)
    pos = torch.rand(1, 1, 6, 2) * 2 - 1
    qc = grid_coords(3, 4, 2, 'query', torch.float32, 'cpu').reshape(-1, 2)
    return (q, k, v, pos, qc, torch.randn(2, 5, 5), 0.5)


ARGS = {'neighborhood': _na_args, 'deformable': _dm_args}
FAST = {'neighborhood': 'tiled', 'deformable': 'chunked'}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ab.ENV_VAR, raising=False)


def test_import_registers_fast_backends_before_reference():
    assert available_backends('neighborhood') == ['tiled', 'reference']
    assert available_backends('deformable') == ['chunked', 'reference']


@pytest.mark.parametrize('kind', ['neighborhood', 'deformable'])
def test_automatic_choice_takes_fast_path(kind):
    args = ARGS[kind]()
    assert choose_backend(kind, None, *args).name == FAST[kind]
    assert choose_backend(kind, 'auto', *args, training=True).name == FAST[kind]
    # dropout is inactive outside training: the fast path is exact there
    assert choose_backend(kind, None, *args, attn_drop=0.3, training=False).name == FAST[kind]
    for dt in (torch.float64, torch.bfloat16, torch.float16):
        assert choose_backend(kind, None, *ARGS[kind](dt)).name == FAST[kind]


@pytest.mark.parametrize('kind', ['neighborhood', 'deformable'])
@pytest.mark.parametrize('setting,kwargs,reason', [
    ('dropout', dict(attn_drop=0.1, training=True), 'dropout'),
    ('return_attn', dict(return_attn=True), 'return_attn'),
])
def test_unsupported_settings_fall_back_with_logged_reason(kind, setting, kwargs, reason,
                                                           caplog):
    args = ARGS[kind]()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        chosen = choose_backend(kind, None, *args, **kwargs)
    assert chosen.name == 'reference'
    records = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(FAST[kind] in m and 'not taken' in m and reason in m for m in records), records


def test_other_refusals_have_reasons():
    na = _na_args()
    assert 'floating point' in ab._REGISTRY['neighborhood'][0].check(
        *(t.long() for t in na[:3]), na[3], 7)
    q, k, v, pos, qc, tab, s = _dm_args()
    assert 'query coordinates' in ab._REGISTRY['deformable'][0].check(
        q, k, v, pos, qc.requires_grad_(), tab, s)
    small = _na_args(H=5)
    assert 'kernel size' in ab._REGISTRY['neighborhood'][0].check(*small)


@pytest.mark.parametrize('kind', ['neighborhood', 'deformable'])
def test_explicit_backend_that_cannot_run_is_an_error(kind):
    with pytest.raises(ValueError, match='dropout'):
        choose_backend(kind, FAST[kind], *ARGS[kind](), attn_drop=0.1, training=True)
    with pytest.raises(ValueError, match='unknown'):
        choose_backend(kind, 'no-such-backend', *ARGS[kind]())


@pytest.mark.parametrize('value,expected', [
    ('reference', {'neighborhood': 'reference', 'deformable': 'reference'}),
    ('neighborhood=reference', {'neighborhood': 'reference', 'deformable': 'chunked'}),
    ('neighborhood=tiled,deformable=reference', {'neighborhood': 'tiled',
                                                'deformable': 'reference'}),
    ('auto', {'neighborhood': 'tiled', 'deformable': 'chunked'}),
])
def test_environment_variable(monkeypatch, value, expected):
    monkeypatch.setenv(ab.ENV_VAR, value)
    for kind in ('neighborhood', 'deformable'):
        assert choose_backend(kind, None, *ARGS[kind]()).name == expected[kind]


def test_module_override_beats_environment(monkeypatch):
    monkeypatch.setenv(ab.ENV_VAR, 'reference')
    assert choose_backend('neighborhood', 'tiled', *_na_args()).name == 'tiled'


@contextmanager
def _spy():
    """Count calls of every registered function, by (kind, name)."""
    calls = {}
    saved = {kind: list(bs) for kind, bs in ab._REGISTRY.items()}
    try:
        for kind, bs in ab._REGISTRY.items():
            for b in bs:
                def wrapped(*a, _fn=b.fn, _key=(kind, b.name), **kw):
                    calls[_key] = calls.get(_key, 0) + 1
                    return _fn(*a, **kw)
                ab.register_backend(kind, b.name, wrapped, b.check, b.priority)
        yield calls
    finally:
        ab._REGISTRY.update(saved)


def _tiny_dat(**kwargs):
    arch = dict(version=2, stages=[
        dict(dim=16, depth=2, num_heads=2, blocks='ND', groups=1, stride=2, offset_kernel=3),
        dict(dim=32, depth=2, num_heads=4, blocks='ND', groups=2, stride=1, offset_kernel=3)],
        img_size=64)
    return DAT(arch, out_indices=(0, 1), **kwargs)


@pytest.mark.parametrize('attn_backend,expected', [
    (None, {('neighborhood', 'tiled'): 2, ('deformable', 'chunked'): 2}),
    ('reference', {('neighborhood', 'reference'): 2, ('deformable', 'reference'): 2}),
])
def test_backbone_argument_reaches_every_block(attn_backend, expected):
    model = _tiny_dat(attn_backend=attn_backend).eval()
    with _spy() as calls, torch.no_grad():
        model(torch.randn(1, 3, 40, 44))
    assert calls == expected


def test_backbone_training_with_dropout_uses_reference_and_eval_uses_fast_paths():
    model = _tiny_dat(attn_drop_rate=0.2)
    with _spy() as calls:
        model.train()(torch.randn(1, 3, 40, 44))
    assert calls == {('neighborhood', 'reference'): 2, ('deformable', 'reference'): 2}
    with _spy() as calls, torch.no_grad():
        model.eval()(torch.randn(1, 3, 40, 44))
    assert calls == {('neighborhood', 'tiled'): 2, ('deformable', 'chunked'): 2}


def test_backbone_forcing_fast_path_with_dropout_in_training_is_an_error():
    model = _tiny_dat(attn_drop_rate=0.2, attn_backend='neighborhood=tiled').train()
    with pytest.raises(ValueError, match='dropout'):
        model(torch.randn(1, 3, 40, 44))


def test_environment_variable_reaches_modules(monkeypatch):
    monkeypatch.setenv(ab.ENV_VAR, 'deformable=reference')
    na = NeighborhoodAttention2d(8, 2).eval()
    dm = DeformableAttention2d(8, 2, 1, 2, 3, table_size=(4, 4)).eval()
    with _spy() as calls, torch.no_grad():
        na(torch.randn(1, 8, 9, 9))
        dm(torch.randn(1, 8, 9, 9))
    assert calls == {('neighborhood', 'tiled'): 1, ('deformable', 'reference'): 1}


def test_per_kind_request_through_the_backbone_argument(monkeypatch):
    monkeypatch.setenv(ab.ENV_VAR, 'reference')
    model = _tiny_dat(attn_backend='neighborhood=tiled').eval()
    with _spy() as calls, torch.no_grad():
        model(torch.randn(1, 3, 40, 44))
    # the deformable kind is not named in the argument: the environment decides
    assert calls == {('neighborhood', 'tiled'): 2, ('deformable', 'reference'): 2}


def test_malformed_request_names_the_problem(monkeypatch):
    monkeypatch.setenv(ab.ENV_VAR, 'neighbourhood=tiled')
    with pytest.raises(ValueError, match='unknown kind'):
        choose_backend('deformable', None, *_dm_args())
