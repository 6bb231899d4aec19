"""``conv1x1(GELU(s))`` that keeps ``s`` for the backward pass and recomputes ``GELU(s)`` there.

The ConvFFN's last two steps, ``GELU`` on the ``4C`` hidden map and the ``1x1`` convolution
back to ``C`` channels, make autograd keep two ``4C`` maps per block: the GELU's input (for
its own backward) and its output (for the convolution's weight gradient). The output is a
cheap element-wise function of the input, so this function keeps only the input and computes
``GELU(s)`` again in the backward pass: one ``4C`` map less per block in training memory (214
MiB of DAT-T++'s 1.6 GB at 224 batch 8), for one extra GELU pass. The result is bit-identical
to the plain modules (the same ATen GELU and convolution run in both passes).

Element-wise work on ``channels_last`` maps runs on their contiguous NHWC view: ATen's GELU
(forward and backward) is 1.3-1.7x faster there than on the permuted 4-d tensor on CPU.

:func:`can_run_gelu_conv1x1` says when the function cannot stand in for the modules: autocast
(the convolution would run in a dtype chosen by autocast, which this function does not
replay in the backward pass) and anything but a plain ``1x1`` convolution.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .autocast import autocast_enabled


def _nhwc(*ts):
    """The contiguous NHWC views of ``channels_last`` maps (all or none), else the maps."""
    if all(t.dim() == 4 and not t.is_contiguous()
           and t.is_contiguous(memory_format=torch.channels_last) for t in ts):
        return tuple(t.permute(0, 2, 3, 1) for t in ts), True
    return ts, False


def gelu_map(x: torch.Tensor, approximate: str = 'none', inplace: bool = False) -> torch.Tensor:
    """GELU of an NCHW map, on its NHWC view when it is ``channels_last`` (in place if asked:
    only where no backward pass needs ``x``)."""
    (v,), cl = _nhwc(x)
    y = torch.ops.aten.gelu_(v, approximate=approximate) if inplace else \
        F.gelu(v, approximate=approximate)
    return y.permute(0, 3, 1, 2) if cl else y


def gelu_backward_map(grad: torch.Tensor, x: torch.Tensor, approximate: str = 'none'):
    (g, v), cl = _nhwc(grad, x)
    gx = torch.ops.aten.gelu_backward(g, v, approximate=approximate)
    return gx.permute(0, 3, 1, 2) if cl else gx


class _GeluConv1x1(torch.autograd.Function):

    @staticmethod
    def forward(ctx, s, weight, bias, approximate):
        out = F.conv2d(gelu_map(s, approximate), weight, bias)
        ctx.save_for_backward(s, weight)
        ctx.approximate = approximate
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        s, weight = ctx.saved_tensors
        need_s, need_w, need_b = ctx.needs_input_grad[:3]
        a = gelu_map(s, ctx.approximate)
        ga, gw, gb = torch.ops.aten.convolution_backward(
            grad_out, a, weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], [0, 0],
            [1, 1], False, [0, 0], 1, [need_s, need_w, need_b and ctx.has_bias])
        del a
        gs = gelu_backward_map(ga, s, ctx.approximate) if need_s else None
        return gs, gw, gb, None


def can_run_gelu_conv1x1(s: torch.Tensor, conv: nn.Conv2d, raise_error: bool = False) -> bool:
    """Whether :func:`gelu_conv1x1` computes ``conv(GELU(s))`` exactly; if not, ``False`` (or
    a ``ValueError`` with the reason, with ``raise_error``)."""
    if autocast_enabled(s):
        reason = 'autocast (the plain modules replay its casts in the backward pass)'
    elif (conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0)
            or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != 'zeros'):
        reason = f'not a plain 1x1 convolution: {conv}'
    elif s.dim() != 4 or s.dtype != conv.weight.dtype:
        reason = (f'needs a 4-d map of the weight dtype {conv.weight.dtype}, got '
                  f'{tuple(s.shape)} {s.dtype}')
    else:
        return True
    if raise_error:
        raise ValueError(f'gelu_conv1x1 cannot compute this call exactly: {reason}')
    return False


def gelu_conv1x1(s: torch.Tensor, conv: nn.Conv2d, approximate: str = 'none') -> torch.Tensor:
    """``conv(GELU(s))`` for a ``1x1`` ``conv``, keeping only ``s`` for the backward pass."""
    return _GeluConv1x1.apply(s, conv.weight, conv.bias, approximate)
