"""Neighbourhood attention (NA) with relative positional bias, NATTEN 0.14 semantics.

Each query attends to the ``k x k`` keys of its neighbourhood. Along an axis of length ``L``
the window of query ``i`` starts at ``clamp(i - k // 2, 0, L - k)``: windows are shifted at the
borders rather than zero-padded, so every query sees exactly ``k * k`` keys. The logit of key
``(ky, kx)`` for query ``(qy, qx)`` gets ``rpb[head, ky - qy + k - 1, kx - qx + k - 1]``.

``na2d_reference`` is the plain PyTorch oracle; :class:`NeighborhoodAttention2d` owns the
parameters (``qkv``, ``proj``, ``rpb``: the published names) and the zero-padding of maps smaller
than the kernel.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention_backends import dispatch, register_backend


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


class ScaledQKV(nn.Linear):
    """``Linear(C, 3C)`` whose query third comes out multiplied by ``scale``.

    The scale is applied to the query rows of the weight and bias (``3C x C`` numbers) instead
    of to the queries (a map): equal to ``qkv(x)[..., :C] * scale`` up to rounding, one pass
    over the map less forward and backward. Parameters are those of the plain ``nn.Linear``.
    """

    def __init__(self, dim: int, scale: float):
        super().__init__(dim, 3 * dim)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.weight.new_ones(self.out_features)
        s[:self.in_features] = self.scale
        return F.linear(x, self.weight * s[:, None], self.bias * s)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, query_scale={self.scale:.4g}'


class NeighborhoodAttention2d(nn.Module):
    """NA block attention on NCHW maps (published parameter names ``qkv``, ``rpb``, ``proj``).

    Maps smaller than the kernel along an axis are zero-padded at the bottom/right up to the
    kernel size; the pad tokens are real tokens (their qkv is the projection bias) and the
    output is cropped back, as in the authors' code.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 7, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, backend: str = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd and positive, got {kernel_size}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.attn_drop = attn_drop
        self.backend = backend
        self.qkv = ScaledQKV(dim, self.scale)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        B, H0, W0, C = x.shape
        if C != self.proj.in_features:
            raise ValueError(f'{type(self).__name__} was built for {self.proj.in_features} '
                             f'channels, got a map of {C}')
        ks = self.kernel_size
        pad_b, pad_r = max(0, ks - H0), max(0, ks - W0)
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        H, W = x.shape[1:3]
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
        out = dispatch('neighborhood', self.backend, q, k, v, self.rpb, ks,
                       attn_drop=self.attn_drop, training=self.training)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)[:, :H0, :W0]
        return self.proj_drop(self.proj(out)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f'heads={self.num_heads}, kernel_size={self.kernel_size}'


register_backend('neighborhood', 'reference', na2d_reference, priority=1000)
