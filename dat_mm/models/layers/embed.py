"""Stems (patch embeddings) and the down projections between stages."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import LayerNorm2d


class PaddedSequential(nn.Sequential):
    """``nn.Sequential`` that first zero-pads the bottom/right of its NCHW input up to a
    multiple of ``multiple`` (as mmdet's Swin patch embedding does). A no-op on inputs that are
    already multiples, so the published models are unchanged at their training resolution."""

    def __init__(self, *modules: nn.Module, multiple: int):
        super().__init__(*modules)
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = -x.shape[2] % self.multiple, -x.shape[3] % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return super().forward(x)


def overlapped_stem(in_channels: int, dim: int) -> nn.Sequential:
    """DAT++ stem, stride 4: Conv3x3 s2 p1 (-> C/2), LN, GELU, Conv3x3 s2 p1 (-> C), LN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, dim // 2, 3, 2, 1),
        LayerNorm2d(dim // 2),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, 3, 2, 1),
        LayerNorm2d(dim),
    )


def patch_stem(in_channels: int, dim: int, patch: int = 4) -> nn.Sequential:
    """DAT v1 stem: Conv4x4 s4, LN."""
    return PaddedSequential(nn.Conv2d(in_channels, dim, patch, patch), LayerNorm2d(dim),
                            multiple=patch)


def overlapped_downsample(dim_in: int, dim_out: int) -> nn.Sequential:
    """DAT++ down projection: Conv3x3 s2 p1 without bias, LN."""
    return nn.Sequential(nn.Conv2d(dim_in, dim_out, 3, 2, 1, bias=False), LayerNorm2d(dim_out))


def patch_downsample(dim_in: int, dim_out: int) -> nn.Sequential:
    """DAT v1 down projection: Conv2x2 s2 without bias, LN."""
    return PaddedSequential(nn.Conv2d(dim_in, dim_out, 2, 2, bias=False), LayerNorm2d(dim_out),
                            multiple=2)
