"""The DAT / DAT++ backbone for classification, detection and segmentation."""
import numbers
import os
from collections.abc import Sequence as SequenceABC
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from dat_mm.converters import (convert_backbone_state_dict, is_published_layout,
                               load_backbone_weights)

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


def _is_int(value) -> bool:
    """An integer that is not a bool (``True`` would otherwise pass as stage 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _normalise_out_indices(out_indices, num_stages: int) -> Tuple[int, ...]:
    """``out_indices`` as increasing, unique, non-negative stage indices.

    An int names one stage; a sequence names several. Negative indices count from the end
    (-1 is the last stage). The returned maps and ``out_channels`` follow stage order, so the
    indices must already be in that order: anything else would pair a map with the wrong
    channel count in a neck configured from ``out_channels``.
    """
    allowed = (f'stage indices in [{-num_stages}, {num_stages - 1}] (negative ones count from '
               f'the last stage) for this {num_stages}-stage arch')
    if _is_int(out_indices):
        items = [out_indices]
    elif isinstance(out_indices, SequenceABC) and not isinstance(out_indices, (str, bytes)):
        items = list(out_indices)
    else:
        raise TypeError(f'out_indices must be an int or a sequence of ints, got '
                        f'{out_indices!r} ({type(out_indices).__name__})')
    if not items:
        raise ValueError(f'out_indices {out_indices!r} names no stage; give one or more '
                         f'{allowed}')
    for i in items:
        if not _is_int(i):
            raise TypeError(f'out_indices {out_indices!r}: element {i!r} '
                            f'({type(i).__name__}) is not an int; give {allowed}')
        if not -num_stages <= i < num_stages:
            raise ValueError(f'out_indices {out_indices!r}: {i} is out of range; give {allowed}')
    normalised = tuple(int(i) + num_stages if i < 0 else int(i) for i in items)
    if any(b <= a for a, b in zip(normalised, normalised[1:])):
        raise ValueError(f'out_indices {out_indices!r} (stages {normalised}) must name each '
                         f'stage once, in increasing order (the order of the returned maps and '
                         f'out_channels), e.g. {tuple(sorted(set(normalised)))}')
    return normalised


def _check_int_arg(name: str, value, low: int, high: Optional[int] = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound if ``high`` is None)."""
    bounds = f'[{low}, {high}]' if high is not None else f'>= {low}'
    if not _is_int(value):
        raise TypeError(f'{name} must be an int {bounds}, got {value!r} '
                        f'({type(value).__name__})')
    if value < low or (high is not None and value > high):
        raise ValueError(f'{name} must be an int {bounds}, got {value}')
    return int(value)


def _build_attention(kind: str, stage: StageSpec, arch: ArchSpec, fmap_size: int,
                     attn_drop: float, proj_drop: float, backend):
    common = dict(dim=stage.dim, num_heads=stage.num_heads, attn_drop=attn_drop,
                  proj_drop=proj_drop)
    if kind == 'neighborhood':
        return NeighborhoodAttention2d(kernel_size=arch.na_kernel, backend=backend, **common)
    if kind == 'deformable':
        return DeformableAttention2d(
            groups=stage.groups, stride=stage.stride, offset_kernel=stage.offset_kernel,
            offset_range_factor=stage.offset_range_factor, use_pe=stage.use_pe,
            table_size=(fmap_size, fmap_size), version=arch.version, backend=backend,
            **common)
    if kind == 'window':
        return WindowAttention2d(window_size=arch.window_size, shift=0, **common)
    if kind == 'shifted_window':
        return WindowAttention2d.shifted(window_size=arch.window_size, **common)
    raise ValueError(f'unknown block kind {kind!r}')


def _rename_published_keys(state_dict, prefix, local_metadata, strict, missing_keys,
                           unexpected_keys, error_msgs):
    """``load_state_dict`` pre-hook: backbone keys in the authors' published layout (an
    mmdet 2 / mmseg 0.x ``backbone.*``, or their ImageNet backbone) are renamed to dat_mm's
    (:func:`dat_mm.converters.convert_backbone_state_dict`), so every loader takes them:
    mmengine's stock ``CheckpointHook`` paths, ``init_cfg``, a plain ``load_state_dict``.
    Keys with no place in dat_mm stay, and are reported as unexpected."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    own = {k[len(prefix):]: state_dict[k] for k in keys}
    if not is_published_layout(own):
        return
    converted, unmapped = convert_backbone_state_dict(own)
    for key in keys:
        if key[len(prefix):] not in unmapped:
            del state_dict[key]
    state_dict.update((prefix + k, v) for k, v in converted.items())
    print_log(f"DAT: {len(converted)} weights under '{prefix}' in the authors' published "
              'layout, renamed on load', logger='current')


@MODELS.register_module()
class DAT(BaseModule):
    """DAT++ / DAT backbone (Deformable Attention Transformer).

    Args:
        arch: a preset (``'tiny++'``, ``'small++'``, ``'base++'``, ``'tiny'``, ``'small'``,
            ``'base'``, ``'base-384'``; see :data:`ARCH_ZOO`) or a custom dict
            (``dict(version=2, stages=[dict(dim=64, depth=2, num_heads=2, blocks='ND',
            groups=1, stride=8, offset_kernel=9), ...])``).
        in_channels: input channels (3); a positive int. Inputs must be ``(N, in_channels,
            H, W)``; anything else is a ``ValueError`` naming both shapes.
        drop_path_rate: stochastic depth at the last block (linear from 0); ``None`` takes the
            preset's published ImageNet-1k value.
        drop_rate, attn_drop_rate: dropout in MLPs / attention probabilities (0 as published).
        out_indices: stages whose outputs are returned (strides 4, 8, 16, 32): an int (one
            stage) or a sequence of ints, each stage once and in increasing stage order;
            negative indices count from the last stage (-1) and are stored normalised. The
            returned maps and ``out_channels`` follow this order.
        out_norm: a LayerNorm on each returned stage output (the published det/seg ``norms``
            and, on the last stage, the classifier's ``cls_norm``).
        frozen_stages: an int in ``[-1, num_stages]``: -1 freezes nothing, 0 the stem,
            ``k >= 1`` the stem, the first ``k`` stages, the down projections between them and
            their output norms.
        norm_eval: keep BatchNorm layers in eval mode (DAT has only LayerNorms, so this has
            nothing to act on; accepted for the OpenMMLab backbone contract).
        with_cp: activation checkpointing per block while training.
        attn_backend: force an attention backend (``'reference'``, ...) for every block;
            ``None`` chooses automatically (rules in :mod:`dat_mm.ops.choice`).
        fused: the LPU and ConvFFN in their fused forms (default; see :class:`DATBlock` and
            :class:`ConvFFN`): the depth-wise residuals folded into their convolutions, GELU on
            NHWC views, and the ConvFFN's GELU recomputed in the backward pass instead of kept
            (one 4C map less per block in training). Same results up to float rounding;
            ``False``: the plain modules (docs/benchmarks.md section 9 measures both).
        channels_last: run the feature maps in ``torch.channels_last`` memory (the returned
            maps are always contiguous NCHW). ``None``: on CPU inputs, where the convolutions
            and the channel LayerNorms are faster that way (docs/benchmarks.md).
        check_finite: reject input that holds NaN or Inf with a ``ValueError`` naming the
            samples and the count, before any computation (one reduction over the input and,
            on GPU, a host synchronisation per forward). Off by default; turn it on in a config
            or with ``--cfg-options model.backbone.check_finite=True`` to find bad data.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH, prefix='backbone.')`` loads
            weights in dat_mm layout or the authors' published layout (converted on the fly);
            any key that does not fit is an error.

    Non-finite input: without ``check_finite`` the backbone computes as torch layers do: a NaN
    or Inf value makes outputs of its own sample non-finite (attention spreads it over the
    sample's maps), while every other sample of the batch is computed as if it were alone (no
    layer mixes samples). A batch of 0 samples returns empty maps of the usual channels and
    sizes.
    """

    def __init__(self, arch: Union[str, dict] = 'tiny++', in_channels: int = 3,
                 drop_path_rate: float = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 out_norm: bool = True, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, attn_backend: str = None,
                 fused: bool = True,
                 channels_last: Optional[bool] = None, check_finite: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.arch = spec = resolve_arch(arch)
        num_stages = len(spec.stages)
        in_channels = _check_int_arg('in_channels', in_channels, 1)
        out_indices = _normalise_out_indices(out_indices, num_stages)
        frozen_stages = _check_int_arg('frozen_stages', frozen_stages, -1, num_stages)
        if not isinstance(check_finite, bool):
            raise TypeError(f'check_finite must be True or False, got {check_finite!r}')
        self.in_channels = in_channels
        self.check_finite = check_finite
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
                    mlp = ConvFFN(stage.dim, ratio=spec.mlp_ratio, drop=drop_rate, fused=fused)
                else:
                    mlp = TokenMLP(stage.dim, ratio=spec.mlp_ratio, drop=drop_rate)
                blocks.append(DATBlock(stage.dim, attn, mlp, drop_path=dpr[i][j],
                                       use_lpu=spec.lpu, fused=fused))
            self.stages.append(DATStage(blocks, with_cp))
            fmap //= 2
        self.norms = nn.ModuleList(
            LayerNorm2d(dims[i]) if (out_norm and i in out_indices) else nn.Identity()
            for i in range(num_stages))
        self._freeze_stages()
        self._register_load_state_dict_pre_hook(_rename_published_keys)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        self._check_input(x)
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

    def _check_input(self, x):
        """Shape checks (metadata only) and, with ``check_finite``, the NaN/Inf scan."""
        expected = f'(N, {self.in_channels}, H, W)'
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'DAT expects an NCHW torch.Tensor of shape {expected}, got '
                            f'{type(x).__name__}')
        if x.ndim != 4:
            raise ValueError(f'DAT expects an NCHW batch of shape {expected}, got a tensor of '
                             f'shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'DAT was built for {self.in_channels}-channel input (shape '
                             f'{expected}) but got {x.shape[1]} channels (input shape '
                             f'{tuple(x.shape)})')
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f'DAT expects an NCHW batch of shape {expected} with H, W >= 1, '
                             f'got an empty image of shape {tuple(x.shape)}')
        if not x.is_floating_point():
            raise TypeError(f'DAT expects a floating-point input (normalised images), got '
                            f'{x.dtype}')
        if self.check_finite and x.device.type != 'meta':   # meta: shapes only, no values
            bad = (~torch.isfinite(x)).flatten(1).sum(1)
            samples = bad.nonzero().flatten().tolist()
            if samples:
                counts = bad[samples].tolist()
                per_sample = ', '.join(f'sample {i}: {n}' for i, n in zip(samples, counts))
                raise ValueError(f'DAT input has {sum(counts)} non-finite value(s) (NaN or '
                                 f'Inf) in batch sample(s) {samples} of {x.shape[0]} '
                                 f'({per_sample}); check_finite=True rejects such input')

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
        path = cfg.get('checkpoint')
        if path is None:
            raise ValueError("DAT init_cfg=dict(type='Pretrained') names no checkpoint; give "
                             'checkpoint=PATH, or init_cfg=None to start from random weights')
        if '://' not in str(path) and not os.path.exists(path):
            raise FileNotFoundError(
                f'DAT pretrained weights not found: {path!r} (relative to {os.getcwd()}). '
                "Download the authors' ImageNet checkpoint named in the config's comment and "
                'point init_cfg.checkpoint at it (published files load as they are), or '
                'convert it with tools/model_converters/dat_official_to_mm.py --backbone-only; '
                'to train from random initialisation on purpose, set init_cfg=None '
                '(--cfg-options model.backbone.init_cfg=None).')
        load_backbone_weights(self, path, prefix=cfg.get('prefix'),
                              map_location=cfg.get('map_location', 'cpu'))


def find_backbone(model: nn.Module) -> DAT:
    """The one :class:`DAT` inside ``model`` (itself, ``.backbone``, ``.module.backbone``, or
    found among its sub-modules)."""
    if isinstance(model, DAT):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f'expected a torch module holding a DAT backbone, got '
                        f'{type(model).__name__}')
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, DAT)]
    if not found:
        backbone = getattr(model, 'backbone', None)
        what = f' (its backbone is {type(backbone).__name__})' if backbone is not None else ''
        raise ValueError(f'{type(model).__name__} holds no DAT backbone{what}; expected a '
                         f'DAT / DAT++ backbone or a model built on one')
    if len(found) > 1:
        names = [name for name, _ in found]
        raise ValueError(f'{type(model).__name__} holds {len(found)} DAT backbones {names}; '
                         f'pass the one you mean')
    return found[0][1]
