"""Stochastic depth."""
import torch
import torch.nn as nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``p``; scale the rest by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
    return x * mask


class DropPath(nn.Module):

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f'drop path rate must be in [0, 1), got {p}')
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f'p={self.p:.3f}'


def drop_path_schedule(rate: float, depths) -> list:
    """Per-stage lists of drop-path rates rising linearly from 0 to ``rate`` over all blocks.

    Python floats, computed on the host whatever the default device (a model built under
    ``with torch.device('meta')`` or ``'cuda'`` gets the same numbers)."""
    total = sum(depths)
    rates = torch.linspace(0, rate, total, device='cpu').tolist() if total else []
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out
