"""The functional layer of dat_mm: attention functions, their fast paths, and tensor helpers.

A leaf package: it imports torch (and mmengine's logger) but nothing else of dat_mm, so the
layers in :mod:`dat_mm.models.layers` own parameters and call these functions, never the other
way round.

Each attention kind has one file with its plain PyTorch reference (the oracle in tests), its
chooser and its entry point, and one file with its fast path:

============  ==============================  ==========================================
kind          reference, chooser, entry point  fast path (``can_run_*`` says when it is exact)
============  ==============================  ==========================================
neighborhood  :mod:`.neighborhood`: ``na2d``    :mod:`.neighborhood_tiled` (``tiled``): query
                                               tiles against their key halo; fused SDPA with
                                               a per-tile rpb/-inf mask without autograd,
                                               batched matmuls with autograd
deformable    :mod:`.deformable`: ``dmha``      :mod:`.deformable_chunked` (``chunked``): query
                                               chunks, per-chunk bias (two 1-D
                                               interpolations for grid queries,
                                               :mod:`.deformable_bias_separable`; else the
                                               reference's ``grid_sample``), recomputing
                                               custom backward
============  ==============================  ==========================================

Both fast paths refuse attention dropout in training and the probabilities (the reference
serves those); they accept float32/float64 and half inputs (autocast) on any device. The
choice and its override (argument, ``DAT_MM_ATTN_BACKEND``) are described in :mod:`.choice`.
Measured speed and memory: docs/benchmarks.md.

Also here, the fused forms the layers use with ``fused=True``: :mod:`.gelu_conv1x1` (the
ConvFFN's GELU + 1x1 convolution that recomputes the activation in the backward pass) and
:mod:`.dwconv_residual` (``x + DWConv(x)`` as one convolution); and :mod:`.position_tables`
(resizing the learned position tables of DAT v1 to another resolution).
"""
from .choice import ENV_VAR
from .deformable import (DMHA_BACKENDS, choose_dmha_backend, deformable_rpe_bias, dmha,
                         dmha_reference)
from .deformable_chunked import can_run_dmha_chunked, dmha_chunked
from .gelu_conv1x1 import can_run_gelu_conv1x1, gelu_conv1x1
from .neighborhood import NA_BACKENDS, choose_na2d_backend, na2d, na2d_reference
from .neighborhood_tiled import can_run_na2d_tiled, na2d_tiled

__all__ = [
    'ENV_VAR', 'DMHA_BACKENDS', 'choose_dmha_backend', 'deformable_rpe_bias', 'dmha',
    'dmha_reference', 'can_run_dmha_chunked', 'dmha_chunked', 'can_run_gelu_conv1x1',
    'gelu_conv1x1', 'NA_BACKENDS', 'choose_na2d_backend', 'na2d', 'na2d_reference',
    'can_run_na2d_tiled', 'na2d_tiled'
]
