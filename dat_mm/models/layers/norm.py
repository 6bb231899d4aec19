"""LayerNorm over the channel axis of NCHW maps."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm`` applied to the channel axis of an NCHW tensor.

    The published checkpoints wrap a ``nn.LayerNorm`` in a proxy module (keys ``*.norm.weight``);
    the converter strips that level, so here the parameters are simply ``weight`` and ``bias``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
