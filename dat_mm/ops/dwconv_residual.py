"""``x + DWConv(x)`` as one convolution: the identity residual folded into the kernel.

DAT++ has two of these per block: the local perception unit (``x = x + DWConv3x3(x)``) and the
ConvFFN's ``h = h + DWConv3x3(h)``. Adding 1 to the centre tap of every channel's kernel makes
the convolution compute the sum itself::

    conv(x, w) + x  ==  conv(x, w + e)      e[c, 0, k//2, k//2] = 1, zero elsewhere

so the forward pass writes one map instead of two, and the backward pass gets the input
gradient of both terms from the convolution. The weight gradient is unchanged
(``d(w + e)/dw`` is the identity). Rounding: ``(w + 1) * x`` rounds differently from
``w * x + x``, by at most one unit in the last place of the centre-tap product. In half
precision or under autocast the folded weight ``1 + w`` would lose most of ``w`` (|w| ~ 0.02
against half's 8-11 bit mantissa), so there the sum is computed in two steps.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .autocast import autocast_enabled

_EXACT_DTYPES = (torch.float32, torch.float64)


def residual_dwconv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``x + conv(x)`` for a depth-wise, stride-1, same-padding ``conv`` with an odd kernel;
    folded into one convolution where that is exact (float32/float64, no autocast)."""
    if x.dtype in _EXACT_DTYPES and conv.weight.dtype == x.dtype and not autocast_enabled(x):
        k = conv.kernel_size[0] // 2
        eye = torch.zeros_like(conv.weight)
        eye[:, :, k, k] = 1
        return F.conv2d(x, conv.weight + eye, conv.bias, conv.stride, conv.padding,
                         conv.dilation, conv.groups)
    return x + conv(x)
