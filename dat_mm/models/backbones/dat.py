"""The DAT / DAT++ backbone for classification, detection and segmentation."""
import logging
import os
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import (ConvFFN, DATBlock, DeformableAttention2d, LayerNorm2d,
                      NeighborhoodAttention2d, TokenMLP, WindowAttention2d, drop_path_schedule,
                      overlapped_downsample, overlapped_stem, patch_downsample, patch_stem)
from .dat_arch import ArchSpec, StageSpec, resolve_arch


class DATStage(nn.Module):
    """The blocks of one stage, with optional activation checkpointing per block."""

    def __init__(self, blocks: Sequence[nn.Module], with_cp: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _build_attention(kind: str, stage: StageSpec, arch: ArchSpec, fmap_size: int,
                     attn_drop: float, proj_drop: float, backend):
    dim, heads = stage.dim, stage.num_heads
    if kind == 'neighborhood':
        return NeighborhoodAttention2d(dim, heads, arch.na_kernel, attn_drop, proj_drop,
                                       backend=backend)
    if kind == 'deformable':
        return DeformableAttention2d(
            dim, heads, stage.groups, stage.stride, stage.offset_kernel,
            stage.offset_range_factor, stage.use_pe, (fmap_size, fmap_size), arch.version,
            attn_drop, proj_drop, backend=backend)
    if kind == 'window':
        return WindowAttention2d(dim, heads, arch.window_size, 0, attn_drop, proj_drop)
    if kind == 'shifted_window':
        return WindowAttention2d.shifted(dim, heads, arch.window_size, attn_drop=attn_drop,
                                         proj_drop=proj_drop)
    raise ValueError(f'unknown block kind {kind!r}')


@MODELS.register_module()
class DAT(BaseModule):
    """DAT++ / DAT backbone (Deformable Attention Transformer).

    Args:
        arch: a preset (``'tiny++'``, ``'small++'``, ``'base++'``, ``'tiny'``, ``'small'``,
            ``'base'``, ``'base-384'``; see :data:`ARCH_ZOO`) or a custom dict
            (``dict(version=2, stages=[dict(dim=64, depth=2, num_heads=2, blocks='ND',
            groups=1, stride=8, offset_kernel=9), ...])``).
        in_channels: input channels (3).
        drop_path_rate: stochastic depth at the last block (linear from 0); ``None`` takes the
            preset's published ImageNet-1k value.
        drop_rate, attn_drop_rate: dropout in MLPs / attention probabilities (0 as published).
        out_indices: stages whose outputs are returned, at strides 4, 8, 16, 32.
        out_norm: a LayerNorm on each returned stage output (the published det/seg ``norms``
            and, on the last stage, the classifier's ``cls_norm``).
        frozen_stages: -1 freezes nothing, 0 the stem, ``k >= 1`` the stem, the first ``k``
            stages, the down projections between them and their output norms.
        norm_eval: keep BatchNorm layers in eval mode (DAT has only LayerNorms, so this has
            nothing to act on; accepted for the OpenMMLab backbone contract).
        with_cp: activation checkpointing per block while training.
        attn_backend: force an attention backend (``'reference'``, ...) for every block;
            ``None`` chooses automatically (see ``dat_mm.models.layers.attention_backends``).
        ffn_recompute_act: the ConvFFN keeps its GELU input and recomputes the output in the
            backward pass (``None``: whenever exact; see :class:`ConvFFN` ``recompute_act``).
        channels_last: run the feature maps in ``torch.channels_last`` memory (the returned
            maps are always contiguous NCHW). ``None``: on CPU inputs, where the convolutions
            and the channel LayerNorms are faster that way (docs/benchmarks.md).
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, prefix='backbone.')`` loads
            weights in dat_mm layout or the authors' published layout (converted on the fly);
            any key that does not fit is an error.
    """

    def __init__(self, arch: Union[str, dict] = 'tiny++', in_channels: int = 3,
                 drop_path_rate: float = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, attn_backend: str = None,
                 ffn_recompute_act: Optional[bool] = None,
                 channels_last: Optional[bool] = None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.arch = spec = resolve_arch(arch)
        num_stages = len(spec.stages)
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices {out_indices} must name stages in [0, {num_stages})')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}')
        self.in_channels = in_channels
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.channels_last = channels_last
        self.num_features = list(spec.dims)
        self.out_channels = [spec.dims[i] for i in out_indices]
        self.drop_path_rate = spec.drop_path_rate if drop_path_rate is None else drop_path_rate

        dims = spec.dims
        if spec.overlapped_stem:
            self.stem = overlapped_stem(in_channels, dims[0])
        else:
            self.stem = patch_stem(in_channels, dims[0])
        down = overlapped_downsample if spec.overlapped_stem else patch_downsample
        self.downsamples = nn.ModuleList(down(dims[i], dims[i + 1]) for i in range(num_stages - 1))

        dpr = drop_path_schedule(self.drop_path_rate, spec.depths)
        fmap = spec.img_size // 4
        self.stages = nn.ModuleList()
        for i, stage in enumerate(spec.stages):
            blocks = []
            for j, kind in enumerate(stage.blocks):
                attn = _build_attention(kind, stage, spec, fmap, attn_drop_rate, drop_rate,
                                        attn_backend)
                if spec.conv_ffn:
                    mlp = ConvFFN(stage.dim, spec.mlp_ratio, drop_rate, ffn_recompute_act)
                else:
                    mlp = TokenMLP(stage.dim, spec.mlp_ratio, drop_rate)
                blocks.append(DATBlock(stage.dim, attn, mlp, dpr[i][j], use_lpu=spec.lpu))
            self.stages.append(DATStage(blocks, with_cp))
            fmap //= 2
        self.norms = nn.ModuleList(
            LayerNorm2d(dims[i]) if (out_norm and i in out_indices) else nn.Identity()
            for i in range(num_stages))
        self._freeze_stages()

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        if x.ndim != 4:
            raise ValueError(f'DAT expects an NCHW batch, got a tensor of shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'DAT was built for {self.in_channels}-channel input but got '
                             f'{x.shape[1]} channels (input shape {tuple(x.shape)})')
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = x.device.type == 'cpu'
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        outs = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
            if i in self.out_indices:
                outs.append(self.norms[i](x).contiguous())
            if i == last:
                break
        return tuple(outs)

    # -- OpenMMLab backbone contract ---------------------------------------------------------
    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.stem
        for i in range(self.frozen_stages):
            if i > 0:
                yield self.downsamples[i - 1]
            yield self.stages[i]
            yield self.norms[i]

    def _freeze_stages(self):
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self._load_pretrained(cfg)
            self._is_init = True
            return
        # Parameters were initialised as the authors' code does when the modules were built
        # (PyTorch defaults for convs/linears, truncated normals for the bias tables).
        super().init_weights()

    def _load_pretrained(self, cfg: dict):
        from dat_mm.converters import load_backbone_weights  # mmengine checkpoint I/O
        path = cfg.get('checkpoint')
        if path is None:
            print_log('DAT: init_cfg names no checkpoint; keeping random initialisation',
                      logger='current', level=logging.WARNING)
            return
        if '://' not in str(path) and not os.path.exists(path):
            print_log(f'DAT: pretrained weights not found at {path!r}; training from random '
                      f'initialisation (set the path in the config to use them)',
                      logger='current', level=logging.WARNING)
            return
        load_backbone_weights(self, path, prefix=cfg.get('prefix'),
                              map_location=cfg.get('map_location', 'cpu'))
