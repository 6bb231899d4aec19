"""The DAT block: optional local perception unit, attention and MLP with pre-norm residuals."""
import torch
import torch.nn as nn

from dat_mm.ops.dwconv_residual import residual_dwconv

from .drop import DropPath
from .norm import LayerNorm2d


class DATBlock(nn.Module):
    """``x = x + DWConv3x3(x)`` (LPU, DAT++ only); ``x = x + DropPath(attn(LN(x)))``;
    ``x = x + DropPath(mlp(LN(x)))``. One drop-path rate serves both residuals, as published.

    ``fused``: the LPU's residual folded into its convolution
    (:func:`dat_mm.ops.dwconv_residual.residual_dwconv`; forward hooks on ``lpu`` do not fire
    then). ``False``: the plain modules.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module, drop_path: float = 0.0,
                 use_lpu: bool = True, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.lpu = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) if use_lpu else None
        self.norm1 = LayerNorm2d(dim)
        self.attn = attn
        self.norm2 = LayerNorm2d(dim)
        self.mlp = mlp
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lpu is not None:
            x = residual_dwconv(x, self.lpu) if self.fused else x + self.lpu(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
