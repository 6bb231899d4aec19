"""The DAT block: optional local perception unit, attention and MLP with pre-norm residuals."""
import torch
import torch.nn as nn

from .drop import DropPath
from .norm import LayerNorm2d
from .residual_conv import ResidualDWConv2d


class DATBlock(nn.Module):
    """``x += DWConv3x3(x)`` (LPU, DAT++ only); ``x += DropPath(attn(LN(x)))``;
    ``x += DropPath(mlp(LN(x)))``. One drop-path rate serves both residuals, as published.

    ``lpu`` is a :class:`ResidualDWConv2d`: it returns ``x + DWConv3x3(x)`` itself."""

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, drop_path: float = 0.0,
                 use_lpu: bool = True):
        super().__init__()
        self.lpu = ResidualDWConv2d(dim, 3) if use_lpu else None
        self.norm1 = LayerNorm2d(dim)
        self.attn = attn
        self.norm2 = LayerNorm2d(dim)
        self.mlp = mlp
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lpu is not None:
            x = self.lpu(x)
        # (Out of place: the attention and MLP outputs stay what forward hooks on them saw.)
        x = self.drop_path.residual(x, self.attn(self.norm1(x)))
        return self.drop_path.residual(x, self.mlp(self.norm2(x)))
