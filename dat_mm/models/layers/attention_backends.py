"""Choice of the function that computes an attention kind (``'neighborhood'``, ``'deformable'``).

Each kind has a plain PyTorch *reference* (the oracle in tests) and may have faster backends.
A backend declares what it supports through a ``check(*args, **kwargs)`` that returns ``None``
when it can honour the call exactly, or a reason string when it cannot (dropout, dtype, device,
grad, ...). The chooser takes the first backend by priority that fits and logs, at debug level,
why every backend before it was refused. A backend that cannot honour a setting is never chosen.

Override, most specific first:
  * the module's ``backend`` argument (``DAT(attn_backend=...)`` sets it for all blocks);
  * the environment variable ``DAT_MM_ATTN_BACKEND``.
Both take one name for every kind (``reference``, ``auto``) or names per kind
(``neighborhood=reference,deformable=chunked``; a kind not named there is chosen by the next
rule). Fast backends (``dat_mm.ops``): ``tiled`` (neighbourhood), ``chunked`` (deformable).
A backend named explicitly that cannot honour the call is an error, not a silent fallback.
"""
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

logger = logging.getLogger('dat_mm.attention')

ENV_VAR = 'DAT_MM_ATTN_BACKEND'
KINDS = ('neighborhood', 'deformable')


@dataclass
class Backend:
    name: str
    fn: Callable
    check: Callable  # (*args, **kwargs) -> Optional[str]: None if supported, else why not
    priority: int    # lower is tried first


_REGISTRY: Dict[str, List[Backend]] = {kind: [] for kind in KINDS}


def register_backend(kind: str, name: str, fn: Callable, check: Callable = None,
                     priority: int = 100) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f'unknown attention kind {kind!r}; expected one of {KINDS}')
    backends = [b for b in _REGISTRY[kind] if b.name != name]
    backends.append(Backend(name, fn, check or (lambda *a, **k: None), priority))
    _REGISTRY[kind] = sorted(backends, key=lambda b: b.priority)


def available_backends(kind: str) -> List[str]:
    return [b.name for b in _REGISTRY[kind]]


def _parse_request(value: Optional[str], kind: str) -> Optional[str]:
    """``'name'`` (every kind) or ``'kind=name,kind=name'`` -> the name for ``kind``."""
    value = (value or '').strip()
    if not value:
        return None
    if '=' not in value:
        return value
    for item in value.split(','):
        key, _, name = item.partition('=')
        if key.strip() not in KINDS:
            raise ValueError(f'attention backend request {value!r}: unknown kind '
                             f'{key.strip()!r}; expected one of {KINDS}')
        if key.strip() == kind:
            return name.strip() or None
    return None


def _env_request(kind: str) -> Optional[str]:
    return _parse_request(os.environ.get(ENV_VAR, ''), kind)


def choose_backend(kind: str, requested: Optional[str], *args, **kwargs) -> Backend:
    """The backend that computes this call; see the module docstring for the rules."""
    requested = _parse_request(requested, kind) or _env_request(kind)
    if requested and requested != 'auto':
        for b in _REGISTRY[kind]:
            if b.name == requested:
                reason = b.check(*args, **kwargs)
                if reason is not None:
                    raise ValueError(f'{kind} attention backend {requested!r} cannot run this '
                                     f'call: {reason}')
                return b
        raise ValueError(f'unknown {kind} attention backend {requested!r}; available: '
                         f'{available_backends(kind)}')
    for b in _REGISTRY[kind]:
        reason = b.check(*args, **kwargs)
        if reason is None:
            return b
        logger.debug('%s attention: backend %r not taken: %s', kind, b.name, reason)
    raise RuntimeError(f'no {kind} attention backend can run this call')  # reference always can


def dispatch(kind: str, requested: Optional[str], *args, **kwargs):
    return choose_backend(kind, requested, *args, **kwargs).fn(*args, **kwargs)
