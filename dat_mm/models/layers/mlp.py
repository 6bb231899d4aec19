"""The two MLPs of DAT: ConvFFN (DAT++) and the token MLP (DAT v1)."""
from typing import Optional

import torch
import torch.nn as nn

from dat_mm.ops.gelu_conv1x1 import can_run_gelu_conv1x1, gelu_conv1x1


class ConvFFN(nn.Module):
    """DAT++ MLP: 1x1 conv (C -> rC); h = h + DWConv3x3(h); GELU; 1x1 conv (rC -> C).

    The depth-wise conv is a residual *before* the activation. Parameter names follow the
    published checkpoints (``linear1.0``, ``dwc``, ``linear2.0``).

    With autograd, the GELU and ``linear2`` run as one function that keeps the GELU's input
    and recomputes its output in the backward pass (:mod:`dat_mm.ops.gelu_conv1x1`): one
    ``rC`` map less per block in training memory, bit-identical results; forward hooks on
    ``act`` and ``linear2`` do not fire then.

    Args:
        recompute_act: that function with autograd. ``None`` (default): whenever it computes
            the call exactly (not under autocast, no dropout in training); ``False``: never
            (the plain modules); ``True``: always, an error where it cannot.
    """

    def __init__(self, dim: int, ratio: int = 4, drop: float = 0.0,
                 recompute_act: Optional[bool] = None):
        super().__init__()
        hidden = dim * ratio
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))
        self.drop = nn.Dropout(drop)
        self.recompute_act = recompute_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.linear1(x))
        x = x + self.dwc(x)
        if self._recompute(x):
            return gelu_conv1x1(x, self.linear2[0], self.act.approximate)
        return self.drop(self.linear2(self.act(x)))

    def _recompute(self, x: torch.Tensor) -> bool:
        """Whether this call runs the recompute function (see ``recompute_act``)."""
        needs_backward = torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for p in self.linear2.parameters()))
        if not needs_backward or self.recompute_act is False:
            return False
        if self.training and self.drop.p > 0:
            if self.recompute_act:
                raise ValueError(f'ConvFFN(recompute_act=True) cannot run this call: dropout '
                                 f'({self.drop.p}) after the activation in training')
            return False
        return can_run_gelu_conv1x1(x, self.linear2[0], raise_error=bool(self.recompute_act))


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
