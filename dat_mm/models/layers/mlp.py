"""The two MLPs of DAT: ConvFFN (DAT++) and the token MLP (DAT v1)."""

import torch
import torch.nn as nn

from dat_mm.ops.dwconv_residual import residual_dwconv
from dat_mm.ops.gelu_conv1x1 import can_run_gelu_conv1x1, gelu_conv1x1, gelu_map


class ConvFFN(nn.Module):
    """DAT++ MLP: 1x1 conv (C -> rC); h = h + DWConv3x3(h); GELU; 1x1 conv (rC -> C).

    The depth-wise conv is a residual *before* the activation. Parameter names follow the
    published checkpoints (``linear1.0``, ``dwc``, ``linear2.0``).

    Args:
        fused: compute the same with fewer passes over the ``rC`` maps (default): the residual
            folded into ``dwc`` (:mod:`dat_mm.ops.dwconv_residual`); GELU on the NHWC view of
            ``channels_last`` maps, in place when no backward pass needs its input; and, with
            autograd, GELU and ``linear2`` as one function that keeps the GELU's input and
            recomputes its output in the backward pass (:mod:`dat_mm.ops.gelu_conv1x1`; one
            ``rC`` map less per block in training memory, not under autocast or dropout).
            Forward hooks on ``dwc``, ``act`` and ``linear2`` may not fire then. ``False``:
            the plain modules.
    """

    def __init__(self, dim: int, ratio: int = 4, drop: float = 0.0, fused: bool = True):
        super().__init__()
        hidden = dim * ratio
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))
        self.drop = nn.Dropout(drop)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.linear1(x))
        if not self.fused:
            x = x + self.dwc(x)
            return self.drop(self.linear2(self.act(x)))
        x = residual_dwconv(x, self.dwc)
        if self._recompute(x):
            return gelu_conv1x1(x, self.linear2[0], self.act.approximate)
        x = gelu_map(x, self.act.approximate, inplace=not x.requires_grad)
        return self.drop(self.linear2(x))

    def _recompute(self, x: torch.Tensor) -> bool:
        """Whether this call runs the GELU-recompute function: autograd needs the backward
        pass, no dropout after the activation in training, and the function is exact here."""
        needs_backward = torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for p in self.linear2.parameters()))
        return (needs_backward and not (self.training and self.drop.p > 0)
                and can_run_gelu_conv1x1(x, self.linear2[0]))


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
