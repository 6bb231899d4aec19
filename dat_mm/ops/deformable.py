"""Deformable multi-head attention over sampled keys, with the deformable relative position
bias (docs/model.md).

Given unscaled queries at every map position, keys and values sampled at ``Ns`` positions and
the learned ``rpe_table``, each query attends to all sampled keys:
``softmax(q.k * scale + bias) v``, where ``bias`` is the table sampled bilinearly at half the
displacement between the query and the key, ``(q_coord - pos) / 2``, in normalised
coordinates.

:func:`dmha_reference` is the plain PyTorch oracle, :func:`dmha` the entry point the layers
call: it runs the chunked fast path (:mod:`.deformable_chunked`) when that can compute the call
exactly, else the reference (:mod:`.choice` states the rules).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .choice import requested_backend
from .deformable_chunked import can_run_dmha_chunked, dmha_chunked

DMHA_BACKENDS = ('chunked', 'reference')


def deformable_rpe_bias(pos, q_coords, rpe_table):
    """Deformable relative position bias, ``(B, heads, M, Ns)``.

    Args:
        pos: ``(B, g, Ns, 2)`` sampling positions, normalised ``(y, x)``.
        q_coords: ``(M, 2)`` query coordinates, normalised ``(y, x)``.
        rpe_table: ``(heads, Th, Tw)``; heads ``[j*h/g, (j+1)*h/g)`` belong to group ``j``.
    """
    B, g, Ns, _ = pos.shape
    nh, th, tw = rpe_table.shape
    M = q_coords.shape[0]
    disp = (q_coords[None, None, :, None, :] - pos[:, :, None, :, :]) * 0.5  # (B, g, M, Ns, 2)
    table = rpe_table.reshape(1, g, nh // g, th, tw).expand(B, -1, -1, -1, -1)
    bias = F.grid_sample(table.reshape(B * g, nh // g, th, tw),
                         disp.reshape(B * g, M, Ns, 2).flip(-1).to(table.dtype),
                         mode='bilinear', align_corners=True)  # (B*g, h/g, M, Ns)
    return bias.reshape(B, nh, M, Ns)


def dmha_reference(q, k, v, pos, q_coords, rpe_table, scale: float, attn_drop: float = 0.0,
                   training: bool = False, return_attn: bool = False):
    """Deformable attention of all ``M`` queries against ``Ns`` sampled keys.

    Args:
        q: ``(B, heads, M, c)`` unscaled queries; k, v: ``(B, heads, Ns, c)``.
        pos, q_coords, rpe_table: see :func:`deformable_rpe_bias` (``rpe_table`` may be None).
    Returns:
        ``(B, heads, M, c)`` (and the ``(B, heads, M, Ns)`` probabilities if asked).
    """
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if rpe_table is not None:
        logits = logits + deformable_rpe_bias(pos, q_coords, rpe_table).to(logits.dtype)
    attn = logits.softmax(dim=-1)
    attn_used = F.dropout(attn, attn_drop, training) if attn_drop > 0 else attn
    out = torch.matmul(attn_used, v)
    return (out, attn) if return_attn else out


def choose_dmha_backend(q, k, v, pos, q_coords, rpe_table, scale: float, attn_drop: float = 0.0,
                        training: bool = False, backend: Optional[str] = None) -> str:
    """``'chunked'`` or ``'reference'`` for this call (rules: :mod:`.choice`)."""
    name = requested_backend('deformable', backend, DMHA_BACKENDS)
    if name == 'reference':
        return name
    args = (q, k, v, pos, q_coords, rpe_table, scale, attn_drop, training)
    if name == 'chunked':
        can_run_dmha_chunked(*args, raise_error=True)
        return name
    return 'chunked' if can_run_dmha_chunked(*args) else 'reference'


def dmha(q, k, v, pos, q_coords, rpe_table, scale: float, attn_drop: float = 0.0,
         training: bool = False, backend: Optional[str] = None):
    """Deformable attention (arguments and result of :func:`dmha_reference`), computed by the
    backend :func:`choose_dmha_backend` picks."""
    args = (q, k, v, pos, q_coords, rpe_table, scale)
    if choose_dmha_backend(*args, attn_drop, training, backend) == 'chunked':
        return dmha_chunked(*args)
    return dmha_reference(*args, attn_drop, training)
