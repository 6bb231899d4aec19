"""Which implementation computes an attention call: the request, and refusals with reasons.

Every attention kind (``'neighborhood'``, ``'deformable'``) has a plain PyTorch reference and
one fast path. Its chooser (``choose_na2d_backend`` in :mod:`.neighborhood`,
``choose_dmha_backend`` in :mod:`.deformable`) is an if-chain:

1. the request: the caller's ``backend`` argument (``DAT(attn_backend=...)`` passes it to every
   block), else the environment variable ``DAT_MM_ATTN_BACKEND``. Either is one name for every
   kind (``reference``, ``auto``, or the fast path's name) or names per kind
   (``neighborhood=reference,deformable=chunked``; a kind not named there falls through to the
   next rule);
2. a fast path named explicitly must be able to run the call: if it cannot, that is a
   ``ValueError`` with the reason, never a silent fallback;
3. ``auto`` / nothing requested: the fast path when its ``can_run_*`` check accepts the call,
   else the reference, with the reason logged at debug level on the ``dat_mm.attention``
   logger.
"""
import logging
import os
from typing import Optional, Sequence

logger = logging.getLogger('dat_mm.attention')

ENV_VAR = 'DAT_MM_ATTN_BACKEND'
KINDS = ('neighborhood', 'deformable')


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


def requested_backend(kind: str, requested: Optional[str], choices: Sequence[str]) -> str:
    """The backend asked for ``kind`` (argument first, then the environment), ``'auto'`` when
    neither names one; ``ValueError`` for a name not in ``choices``."""
    name = _parse_request(requested, kind) or _parse_request(os.environ.get(ENV_VAR), kind)
    name = name or 'auto'
    if name != 'auto' and name not in choices:
        raise ValueError(f'unknown {kind} attention backend {name!r}; available: '
                         f"{list(choices)} or 'auto'")
    return name


def common_refusal(q, k, v, attn_drop: float, training: bool, return_attn: bool,
                   probs: str) -> Optional[str]:
    """Why no fast path can compute a call, for the reasons every fast path shares (``probs``
    names the probabilities ``return_attn`` asks for); None if none applies."""
    if return_attn:
        return f'return_attn asks for the {probs} probabilities'
    if attn_drop > 0 and training:
        return f'attention dropout ({attn_drop}) in training is only in the reference'
    if not (q.is_floating_point() and k.is_floating_point() and v.is_floating_point()):
        return f'needs floating point q/k/v, got {q.dtype}'
    return None


def refuse(kind: str, backend: str, reason: str, raise_error: bool) -> bool:
    """A ``can_run_*`` check's answer when ``backend`` cannot compute a call exactly: raise
    (the backend was asked for by name) or log the reason at debug level and return False."""
    if raise_error:
        raise ValueError(f'{kind} attention backend {backend!r} cannot run this call: {reason}')
    logger.debug('%s attention: backend %r not taken: %s', kind, backend, reason)
    return False
