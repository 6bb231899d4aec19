"""Neighbourhood attention (NA) with relative positional bias, NATTEN 0.14 semantics.

Each query attends to the ``k x k`` keys of its neighbourhood. Along an axis of length ``L``
the window of query ``i`` starts at ``clamp(i - k // 2, 0, L - k)``: windows are shifted at the
borders rather than zero-padded, so every query sees exactly ``k * k`` keys. The logit of key
``(ky, kx)`` for query ``(qy, qx)`` gets ``rpb[head, ky - qy + k - 1, kx - qx + k - 1]``
(docs/model.md).

:func:`na2d_reference` is the plain PyTorch oracle, :func:`na2d` the entry point the layers
call: it runs the tiled fast path (:mod:`.neighborhood_tiled`) when that can compute the call
exactly, else the reference (:mod:`.choice` states the rules).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .choice import requested_backend
from .neighborhood_tiled import can_run_na2d_tiled, na2d_tiled

NA_BACKENDS = ('tiled', 'reference')


def window_starts(length: int, kernel_size: int, device=None) -> torch.Tensor:
    """First key index of each query's window along an axis (requires ``length >= k``)."""
    if length < kernel_size:
        raise ValueError(f'neighbourhood attention needs an axis of at least {kernel_size} '
                         f'(the kernel size), got {length}; pad the map first')
    i = torch.arange(length, device=device)
    return (i - kernel_size // 2).clamp(0, length - kernel_size)


def neighborhood_indices(length: int, kernel_size: int, device=None):
    """(key index, rpb index) per query and window slot along one axis, both ``(L, k)``."""
    start = window_starts(length, kernel_size, device)
    slot = torch.arange(kernel_size, device=device)
    keys = start[:, None] + slot[None, :]
    query = torch.arange(length, device=device)[:, None]
    return keys, keys - query + kernel_size - 1


def na2d_reference(q, k, v, rpb, kernel_size: int, attn_drop: float = 0.0,
                   training: bool = False, return_attn: bool = False):
    """Neighbourhood attention by gathering each query's ``k x k`` keys.

    Args:
        q, k, v: ``(B, heads, H, W, c)``; ``q`` already scaled by ``c ** -0.5``.
        rpb: ``(heads, 2k-1, 2k-1)`` relative positional bias, or ``None``.
    Returns:
        ``(B, heads, H, W, c)`` (and the ``(B, heads, H, W, k*k)`` probabilities if asked).
    """
    B, nh, H, W, c = q.shape
    ks = kernel_size
    key_h, bias_h = neighborhood_indices(H, ks, q.device)
    key_w, bias_w = neighborhood_indices(W, ks, q.device)
    # (B, nh, H, k, W, k, c) -> (B, nh, H, W, k, k, c)
    rows, cols = key_h[:, :, None, None], key_w[None, None, :, :]
    k_nb = k[:, :, rows, cols].permute(0, 1, 2, 4, 3, 5, 6)
    v_nb = v[:, :, rows, cols].permute(0, 1, 2, 4, 3, 5, 6)
    logits = torch.einsum('bnhwc,bnhwijc->bnhwij', q, k_nb)
    if rpb is not None:
        bias = rpb[:, bias_h[:, :, None, None], bias_w[None, None, :, :]]  # (nh, H, k, W, k)
        logits = logits + bias.permute(0, 1, 3, 2, 4).unsqueeze(0).to(logits.dtype)
    attn = logits.reshape(B, nh, H, W, ks * ks).softmax(dim=-1)
    attn_used = F.dropout(attn, attn_drop, training) if attn_drop > 0 else attn
    out = torch.einsum('bnhwj,bnhwjc->bnhwc', attn_used, v_nb.reshape(B, nh, H, W, ks * ks, c))
    return (out, attn) if return_attn else out


def choose_na2d_backend(q, k, v, rpb, kernel_size: int, attn_drop: float = 0.0,
                        training: bool = False, backend: Optional[str] = None) -> str:
    """``'tiled'`` or ``'reference'`` for this call (rules: :mod:`.choice`)."""
    name = requested_backend('neighborhood', backend, NA_BACKENDS)
    if name == 'reference':
        return name
    args = (q, k, v, rpb, kernel_size, attn_drop, training)
    if name == 'tiled':
        can_run_na2d_tiled(*args, raise_error=True)
        return name
    return 'tiled' if can_run_na2d_tiled(*args) else 'reference'


def na2d(q, k, v, rpb, kernel_size: int, attn_drop: float = 0.0, training: bool = False,
         backend: Optional[str] = None):
    """Neighbourhood attention (arguments and result of :func:`na2d_reference`), computed by
    the backend :func:`choose_na2d_backend` picks."""
    if choose_na2d_backend(q, k, v, rpb, kernel_size, attn_drop, training, backend) == 'tiled':
        return na2d_tiled(q, k, v, rpb, kernel_size)
    return na2d_reference(q, k, v, rpb, kernel_size, attn_drop, training)
