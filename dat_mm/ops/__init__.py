"""Fast attention paths, registered into :mod:`dat_mm.models.layers.attention_backends`.

One file per backend family; each registers its functions at import, with a ``check`` that
refuses (with a reason, logged at debug level by the chooser) any call it cannot compute
exactly. The reference functions (priority 1000) remain the fallback and the oracle.

============  =========  ========  ====================================================
kind          name       priority  what
============  =========  ========  ====================================================
neighborhood  tiled      100       query tiles against their key halo: fused SDPA with a
                                   per-tile rpb/-inf mask without autograd, explicit
                                   batched matmuls with autograd
deformable    chunked    100       query chunks, per-chunk bias (same grid_sample as the
                                   reference), recomputing custom backward
============  =========  ========  ====================================================

Both refuse attention dropout in training and ``return_attn`` (the reference serves those);
they accept float32/float64 and half inputs (autocast) on any device. Measured speed and
memory: docs/benchmarks.md.

Not an attention backend: :mod:`.gelu_conv1x1`, the ConvFFN's GELU + 1x1 convolution that
recomputes the activation in the backward pass (chosen by ``ConvFFN.recompute_act``).
"""
from dat_mm.models.layers.attention_backends import register_backend

from .deformable_chunked import check_dmha_chunked, dmha_chunked
from .gelu_conv1x1 import check_gelu_conv1x1, gelu_conv1x1
from .neighborhood_tiled import check_na2d_tiled, na2d_tiled

register_backend('neighborhood', 'tiled', na2d_tiled, check_na2d_tiled, priority=100)
register_backend('deformable', 'chunked', dmha_chunked, check_dmha_chunked, priority=100)

__all__ = ['dmha_chunked', 'na2d_tiled', 'check_dmha_chunked', 'check_na2d_tiled',
           'gelu_conv1x1', 'check_gelu_conv1x1']
