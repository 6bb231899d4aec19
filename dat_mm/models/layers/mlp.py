"""The two MLPs of DAT: ConvFFN (DAT++) and the token MLP (DAT v1)."""
import torch
import torch.nn as nn


class ConvFFN(nn.Module):
    """DAT++ MLP: 1x1 conv (C -> rC); h = h + DWConv3x3(h); GELU; 1x1 conv (rC -> C).

    The depth-wise conv is a residual *before* the activation. Parameter names follow the
    published checkpoints (``linear1.0``, ``dwc``, ``linear2.0``).
    """

    def __init__(self, dim: int, ratio: int = 4, drop: float = 0.0):
        super().__init__()
        hidden = dim * ratio
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.linear1(x))
        # dwc(x) + x summed into the depth-wise conv's output (a convolution does not keep its
        # output for the backward pass), GELU in place where no backward needs its input: two
        # fewer allocations of the largest maps of the block (each first touch costs page faults
        # with glibc's mmap threshold; docs/benchmarks.md). A forward hook on ``dwc`` therefore
        # sees its output before the sum only if it copies it.
        x = self.dwc(x).add_(x)
        if x.requires_grad:
            x = self.act(x)
        else:
            x = torch.ops.aten.gelu_(x, approximate=self.act.approximate)
        return self.drop(self.linear2(x))


class TokenMLP(nn.Module):
    """DAT v1 MLP on tokens: Linear(C, rC) -> GELU -> Linear(rC, C).

    Names follow the published checkpoints (``chunk.linear1``, ``chunk.linear2``).
    """

    def __init__(self, dim: int, ratio: int = 4, drop: float = 0.0):
        super().__init__()
        hidden = dim * ratio
        self.chunk = nn.Sequential()
        self.chunk.add_module('linear1', nn.Linear(dim, hidden))
        self.chunk.add_module('act', nn.GELU())
        self.chunk.add_module('drop1', nn.Dropout(drop))
        self.chunk.add_module('linear2', nn.Linear(hidden, dim))
        self.chunk.add_module('drop2', nn.Dropout(drop))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chunk(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
