"""The neighbourhood attention layer (NATTEN 0.14 semantics, docs/model.md).

:class:`NeighborhoodAttention2d` owns the parameters (``qkv``, ``proj``, ``rpb``: the published
names) and the zero-padding of maps smaller than the kernel; the attention itself is
:func:`dat_mm.ops.na2d` (reference and fast path, chosen per call).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dat_mm.ops import na2d


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
        self.qkv = nn.Linear(dim, 3 * dim)
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
        q = q * self.scale
        out = na2d(q, k, v, self.rpb, ks, self.attn_drop, self.training, self.backend)
        out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)[:, :H0, :W0]
        return self.proj_drop(self.proj(out)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f'heads={self.num_heads}, kernel_size={self.kernel_size}'

