"""Stochastic depth."""
import torch
import torch.nn as nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``p``; scale the rest by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    return x * _sample_mask(x, p)


def _sample_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """``(B, 1, ...)``: ``1 / (1 - p)`` for kept samples, 0 for dropped ones."""
    keep = 1.0 - p
    return x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)


def add_drop_path(x: torch.Tensor, branch: torch.Tensor, p: float, training: bool
                  ) -> torch.Tensor:
    """``x + drop_path(branch)`` in one pass (``addcmul`` with the per-sample mask; autograd keeps
    only the mask, as for the two-step form)."""
    if p == 0.0 or not training:
        return x + branch
    return torch.addcmul(x, branch, _sample_mask(branch, p))


class DropPath(nn.Module):

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f'drop path rate must be in [0, 1), got {p}')
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """``x + self(branch)``, fused (see :func:`add_drop_path`)."""
        return add_drop_path(x, branch, self.p, self.training)

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
