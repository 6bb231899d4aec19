"""The DAT block: optional local perception unit, attention and MLP with pre-norm residuals."""
import torch
import torch.nn as nn

from .drop import DropPath
from .norm import LayerNorm2d


class DATBlock(nn.Module):
    """``x += DWConv3x3(x)`` (LPU, DAT++ only); ``x += DropPath(attn(LN(x)))``;
    ``x += DropPath(mlp(LN(x)))``. One drop-path rate serves both residuals, as published."""

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, drop_path: float = 0.0,
                 use_lpu: bool = True):
        super().__init__()
        self.lpu = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) if use_lpu else None
        self.norm1 = LayerNorm2d(dim)
        self.attn = attn
        self.norm2 = LayerNorm2d(dim)
        self.mlp = mlp
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lpu is not None:
            x = add_residual(x, self.lpu(x))
        x = add_residual(x, self.drop_path(self.attn(self.norm1(x))))
        return add_residual(x, self.drop_path(self.mlp(self.norm2(x))))


def add_residual(x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``x + branch``, written into ``branch`` when that gives the same tensor.

    A residual branch ends in a convolution, a linear layer or a drop-path product, none of
    which keeps its own output for the backward pass, so adding into it is safe under autograd
    (and autograd's version counters would report it otherwise) and saves allocating and
    first-touching a map-sized tensor per residual (measured in docs/benchmarks.md). Falls back
    to ``x + branch`` when the sum would be wider (mixed precision) or broadcast.
    """
    if (branch.shape == x.shape and branch.dtype == torch.promote_types(x.dtype, branch.dtype)
            and branch.data_ptr() != x.data_ptr()):
        return branch.add_(x)
    return x + branch
