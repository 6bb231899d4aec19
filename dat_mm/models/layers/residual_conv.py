"""``x + DWConv(x)``: a depth-wise convolution with its identity residual, as one convolution.

DAT++ has two of these per block: the local perception unit (``x = x + DWConv3x3(x)``) and the
ConvFFN's ``h = h + DWConv3x3(h)``. Adding 1 to the centre tap of every channel's kernel makes
the convolution compute the sum itself::

    conv(x, w) + x  ==  conv(x, w + e)      e[c, 0, k//2, k//2] = 1, zero elsewhere

so the forward pass writes one map instead of two (convolution output, then the sum), and the
backward pass gets the input gradient of both terms from the convolution (autograd otherwise
accumulates the two gradient branches in an extra pass over the map). The weight gradient is
unchanged (``d(w + e)/dw`` is the identity). On CPU these passes over freshly allocated maps
are a measurable share of a DAT++ train step (docs/benchmarks.md, section 9).

Rounding: ``(w + 1) * x`` rounds differently from ``w * x + x``, by at most one unit in the
last place of the centre-tap product; float32 outputs agree with the two-step form to ~1e-7
relative. Under autocast or in half precision the folded centre weight ``1 + w`` would be
stored with half's 8-11 bit mantissa, losing most of ``w`` (|w| ~ 0.02), so there the module
convolves and adds in two steps instead.

Forward hooks on the module see its output, which includes the residual.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dat_mm.ops.gelu_conv1x1 import autocast_enabled

_EXACT_DTYPES = (torch.float32, torch.float64)


def can_fold(x: torch.Tensor) -> bool:
    """True when ``conv(x, w + e)`` may replace ``conv(x, w) + x`` (full precision, no
    autocast)."""
    return x.dtype in _EXACT_DTYPES and not autocast_enabled(x)


class ResidualDWConv2d(nn.Conv2d):
    """``x + DWConv_kxk(x)`` (stride 1, same padding, bias) on NCHW maps.

    Parameters and their names are those of the plain ``nn.Conv2d(C, C, k, 1, k//2, groups=C)``
    it replaces (published checkpoints load unchanged).
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd (same padding), got {kernel_size}')
        super().__init__(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if can_fold(x) and self.weight.dtype == x.dtype:
            k = self.kernel_size[0] // 2
            eye = torch.zeros_like(self.weight)
            eye[:, :, k, k] = 1
            return F.conv2d(x, self.weight + eye, self.bias, 1, self.padding, 1, self.groups)
        out = super().forward(x)
        if out.dtype != torch.promote_types(out.dtype, x.dtype):
            return x + out  # autocast: a bfloat16 convolution added to a float32 map is float32
        # a convolution does not keep its output for the backward pass: the sum may reuse it
        return out.add_(x)
