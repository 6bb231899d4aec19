"""Choice of attention backend (dat_mm.ops.choice): automatic choice, refusals with reasons
(logged at debug level), the DAT_MM_ATTN_BACKEND environment variable, the per-module /
per-backbone override, and that the chosen function is the one that actually runs."""
import logging

import pytest
import torch

from attention_spy import spy_attention
from dat_mm import DAT
from dat_mm.models.layers import DeformableAttention2d, NeighborhoodAttention2d, grid_coords
from dat_mm.ops import (ENV_VAR, can_run_dmha_chunked, can_run_na2d_tiled, choose_dmha_backend,
                        choose_na2d_backend)

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
CHOOSE = {'neighborhood': choose_na2d_backend, 'deformable': choose_dmha_backend}


def choose_backend(kind, backend, *args, attn_drop=0.0, training=False):
    return CHOOSE[kind](*args, attn_drop=attn_drop, training=training, backend=backend)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.mark.parametrize('kind', ['neighborhood', 'deformable'])
def test_automatic_choice_takes_fast_path(kind):
    args = ARGS[kind]()
    assert choose_backend(kind, None, *args) == FAST[kind]
    assert choose_backend(kind, 'auto', *args, training=True) == FAST[kind]
    # dropout is inactive outside training: the fast path is exact there
    assert choose_backend(kind, None, *args, attn_drop=0.3, training=False) == FAST[kind]
    for dt in (torch.float64, torch.bfloat16, torch.float16):
        assert choose_backend(kind, None, *ARGS[kind](dt)) == FAST[kind]


@pytest.mark.parametrize('kind', ['neighborhood', 'deformable'])
def test_dropout_in_training_falls_back_with_logged_reason(kind, caplog):
    args = ARGS[kind]()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        chosen = choose_backend(kind, None, *args, attn_drop=0.1, training=True)
    assert chosen == 'reference'
    records = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(FAST[kind] in m and 'not taken' in m and 'dropout' in m for m in records), records


def _refusal(check, *args, **kwargs):
    """The reason a can_run_* check gives (it returns False and raises it on request)."""
    assert check(*args, **kwargs) is False
    with pytest.raises(ValueError) as info:
        check(*args, **kwargs, raise_error=True)
    return str(info.value)


def test_refusals_have_reasons():
    na = _na_args()
    assert can_run_na2d_tiled(*na) is True
    assert 'floating point' in _refusal(can_run_na2d_tiled, *(t.long() for t in na[:3]),
                                        na[3], 7)
    assert 'kernel size' in _refusal(can_run_na2d_tiled, *_na_args(H=5))
    assert 'return_attn' in _refusal(can_run_na2d_tiled, *na, return_attn=True)
    dm = _dm_args()
    assert can_run_dmha_chunked(*dm) is True
    q, k, v, pos, qc, tab, s = dm
    assert 'query coordinates' in _refusal(can_run_dmha_chunked, q, k, v, pos,
                                           qc.requires_grad_(), tab, s)
    assert 'return_attn' in _refusal(can_run_dmha_chunked, *_dm_args(), return_attn=True)
    meta = [t.to('meta') for t in _dm_args()[:6]]
    assert 'meta' in _refusal(can_run_dmha_chunked, *meta, 0.5)


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
    monkeypatch.setenv(ENV_VAR, value)
    for kind in ('neighborhood', 'deformable'):
        assert choose_backend(kind, None, *ARGS[kind]()) == expected[kind]


def test_module_override_beats_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, 'reference')
    assert choose_backend('neighborhood', 'tiled', *_na_args()) == 'tiled'


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
    with spy_attention() as calls, torch.no_grad():
        model(torch.randn(1, 3, 40, 44))
    assert calls == expected


def test_backbone_training_with_dropout_uses_reference_and_eval_uses_fast_paths():
    model = _tiny_dat(attn_drop_rate=0.2)
    with spy_attention() as calls:
        model.train()(torch.randn(1, 3, 40, 44))
    assert calls == {('neighborhood', 'reference'): 2, ('deformable', 'reference'): 2}
    with spy_attention() as calls, torch.no_grad():
        model.eval()(torch.randn(1, 3, 40, 44))
    assert calls == {('neighborhood', 'tiled'): 2, ('deformable', 'chunked'): 2}


def test_backbone_forcing_fast_path_with_dropout_in_training_is_an_error():
    model = _tiny_dat(attn_drop_rate=0.2, attn_backend='neighborhood=tiled').train()
    with pytest.raises(ValueError, match='dropout'):
        model(torch.randn(1, 3, 40, 44))


def test_environment_variable_reaches_modules(monkeypatch):
    monkeypatch.setenv(ENV_VAR, 'deformable=reference')
    na = NeighborhoodAttention2d(8, 2).eval()
    dm = DeformableAttention2d(8, 2, 1, 2, 3, table_size=(4, 4)).eval()
    with spy_attention() as calls, torch.no_grad():
        na(torch.randn(1, 8, 9, 9))
        dm(torch.randn(1, 8, 9, 9))
    assert calls == {('neighborhood', 'tiled'): 1, ('deformable', 'reference'): 1}


def test_per_kind_request_through_the_backbone_argument(monkeypatch):
    monkeypatch.setenv(ENV_VAR, 'reference')
    model = _tiny_dat(attn_backend='neighborhood=tiled').eval()
    with spy_attention() as calls, torch.no_grad():
        model(torch.randn(1, 3, 40, 44))
    # the deformable kind is not named in the argument: the environment decides
    assert calls == {('neighborhood', 'tiled'): 2, ('deformable', 'reference'): 2}


def test_malformed_request_names_the_problem(monkeypatch):
    monkeypatch.setenv(ENV_VAR, 'neighbourhood=tiled')
    with pytest.raises(ValueError, match='unknown kind'):
        choose_backend('deformable', None, *_dm_args())
