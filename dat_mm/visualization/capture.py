"""Capture where DAT's deformable attention samples keys, and how it weighs them.

>>> from dat_mm.visualization import capture_deformable
>>> with capture_deformable(model, blocks=[(2, 17), (3, 1)]) as cap:
...     model.backbone(images)              # or any forward of a classifier/detector/segmentor
>>> rec = cap[3, 1]                          # the DeformableRecord of stage 3, block 1
>>> rec.pos.shape, rec.attn.shape            # (B, g, Hk, Wk, 2), (B, heads, H, W, Hk, Wk)

``model`` may be a :class:`~dat_mm.DAT` backbone or anything that holds exactly one (an
mmpretrain classifier, an mmdet detector, an mmseg segmentor, a DDP wrapper). Inside the
``with`` block each chosen :class:`~dat_mm.models.layers.DeformableAttention2d` has its
public ``tap`` (:class:`~dat_mm.models.layers.tap.Tap`) enabled and a forward hook on it; every
forward through the block appends a :class:`DeformableRecord`. On exit the hooks are removed and
each tap's ``enabled`` flag is set back to what it was (off: a model that is not being captured
computes nothing extra). Captures nest: each has its own hook. While its tap is enabled, the
block computes attention with the reference path (same numbers as the fast paths within their
tolerances) and shows the full ``H*W x Hk*Wk`` probability matrix per head, so choose the blocks
you need on large inputs (a stage-0 block on an 800x1333 detection input holds ~0.6 GB of
weights; ``attention=False`` keeps only the positions).

Coordinates. ``pos`` and ``ref`` are normalised ``(y, x)`` in ``[-1, 1]`` of the block's input
map with ``align_corners=True`` semantics: -1 is the centre of the first pixel, +1 the centre of
the last one. :func:`to_map_pixels` turns them into pixel indices of that map and
:func:`to_image_pixels` into continuous pixel coordinates of the image the map covers (the
network input, with the convention that a map of size ``H`` spreads evenly over an input of
height ``Hi``: map pixel ``i`` is centred at ``(i + 0.5) * Hi / H``).
"""
import functools
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..models.backbones.dat import DAT, find_backbone
from ..models.layers.deformable_attn import DeformableAttention2d

BlockIndex = Tuple[int, int]


@dataclass
class DeformableRecord:
    """What one deformable block computed in one forward.

    Attributes:
        stage, block: where the block sits (``DAT.stages[stage].blocks[block]``).
        pos: ``(B, g, Hk, Wk, 2)`` sampling positions per offset group, normalised ``(y, x)``.
        ref: ``(B, g, Hk, Wk, 2)`` reference points (``pos`` before the learned offsets).
        attn: ``(B, heads, H, W, Hk, Wk)`` softmax probabilities of every query over the
            ``Hk x Wk`` sampled keys of its head's group (heads ``[j*h/g, (j+1)*h/g)`` belong to
            group ``j``), or ``None`` if captured with ``attention=False``.
        query_size: ``(H, W)``, the block's input map (queries); key_size: ``(Hk, Wk)``.
        num_heads, groups, stride, version: the block's settings.
    """
    stage: int
    block: int
    pos: torch.Tensor
    ref: torch.Tensor
    attn: Optional[torch.Tensor]
    query_size: Tuple[int, int]
    num_heads: int
    groups: int
    stride: int
    version: int

    @property
    def key_size(self) -> Tuple[int, int]:
        return tuple(self.pos.shape[2:4])

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.groups

    @property
    def offsets(self) -> torch.Tensor:
        """``pos - ref``: the learned offsets after range limiting / clamping."""
        return self.pos - self.ref

    def _need_attn(self) -> torch.Tensor:
        if self.attn is None:
            raise ValueError(f'stage {self.stage} block {self.block} was captured with '
                             f'attention=False; no attention weights were kept')
        return self.attn

    def group_attention(self) -> torch.Tensor:
        """``(B, g, H, W, Hk, Wk)``: the attention of each group, averaged over its heads."""
        attn = self._need_attn()
        B, _, H, W, Hk, Wk = attn.shape
        return attn.reshape(B, self.groups, self.heads_per_group, H, W, Hk, Wk).mean(2)

    def received_attention(self) -> torch.Tensor:
        """``(B, g, Hk, Wk)``: attention each sampled key receives, averaged over all queries
        and over the heads of its group (sums to 1 over the keys of a group)."""
        return self.group_attention().mean(dim=(2, 3))

    def query_attention(self, y: int, x: int) -> torch.Tensor:
        """``(B, g, Hk, Wk)``: the attention of the query at map pixel ``(y, x)`` (row,
        column of the block's input map), averaged over the heads of each group."""
        H, W = self.query_size
        if not (0 <= y < H and 0 <= x < W):
            raise ValueError(f'query (y={y}, x={x}) is outside the {H}x{W} query map of stage '
                             f'{self.stage} block {self.block}')
        attn = self._need_attn()[:, :, y, x]  # (B, heads, Hk, Wk)
        B, _, Hk, Wk = attn.shape
        return attn.reshape(B, self.groups, self.heads_per_group, Hk, Wk).mean(2)


def to_map_pixels(pos: torch.Tensor, map_size: Tuple[int, int]) -> torch.Tensor:
    """Normalised ``(y, x)`` (``align_corners=True``) -> pixel indices ``(y, x)`` of a map of
    size ``(H, W)`` (0 = first pixel centre; fractional between pixels)."""
    size = torch.tensor([max(n - 1, 0) for n in map_size], dtype=pos.dtype, device=pos.device)
    return (pos + 1) * 0.5 * size


def to_image_pixels(pos: torch.Tensor, map_size: Tuple[int, int],
                    image_size: Tuple[int, int]) -> torch.Tensor:
    """Normalised ``(y, x)`` on a map of size ``(H, W)`` -> continuous ``(y, x)`` pixel
    coordinates (pixel ``k`` spans ``[k, k + 1)``) of an image of size ``(Hi, Wi)`` that the map
    covers evenly (the network input, padding included)."""
    scale = torch.tensor([i / m for i, m in zip(image_size, map_size)], dtype=pos.dtype,
                         device=pos.device)
    return (to_map_pixels(pos, map_size) + 0.5) * scale


# -- finding the blocks ------------------------------------------------------------------------
_ATTN_NAME = re.compile(r'stages\.(\d+)\.blocks\.(\d+)\.attn')


def deformable_blocks(backbone: DAT) -> Dict[BlockIndex, DeformableAttention2d]:
    """``{(stage, block): module}`` of every deformable attention module of the backbone
    (``backbone.stages[stage].blocks[block].attn``), in forward order."""
    found = {}
    for name, module in backbone.named_modules():
        match = _ATTN_NAME.fullmatch(name)
        if match and isinstance(module, DeformableAttention2d):
            found[int(match[1]), int(match[2])] = module
    return found


def _is_index(pair) -> bool:
    return (isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in pair))


def _normalise(backbone: DAT, stage: int, block: int) -> BlockIndex:
    """``(stage, block)`` with negative indices resolved, checked to be a deformable block that
    runs; ``ValueError`` saying which blocks can be chosen otherwise."""
    every = deformable_blocks(backbone)
    last = max(backbone.out_indices)
    choices = ', '.join(str(b) for b in every if b[0] <= last) or 'none'
    kinds = backbone.arch.stages
    try:
        stage = range(len(kinds))[stage]
    except IndexError:
        raise ValueError(f'stage {stage} is out of range: the backbone has {len(kinds)} stages '
                         f'(0..{len(kinds) - 1}); deformable blocks (stage, block): '
                         f'{choices}') from None
    in_stage = [j for i, j in every if i == stage]
    try:
        block = range(len(kinds[stage].blocks))[block]
    except IndexError:
        n = len(kinds[stage].blocks)
        raise ValueError(f'block {block} is out of range: stage {stage} has {n} blocks '
                         f'(0..{n - 1}); its deformable blocks: {in_stage}') from None
    if (stage, block) not in every:
        where = (f'deformable blocks of stage {stage}: {in_stage}' if in_stage else
                 f'stage {stage} has none; deformable blocks (stage, block): {choices}')
        raise ValueError(f'stage {stage} block {block} is a {kinds[stage].blocks[block]} block, '
                         f'not a deformable one; {where}')
    if stage > last:
        raise ValueError(f'stage {stage} never runs: this backbone stops after stage {last} '
                         f'(out_indices={backbone.out_indices}); deformable blocks that run: '
                         f'{choices}')
    return stage, block


def select_blocks(backbone: DAT, blocks=None) -> List[BlockIndex]:
    """A block choice as a list of ``(stage, block)``.

    ``blocks``: ``None`` or ``'all'`` (every deformable block that runs), ``'last'`` (the last
    of them), one ``(stage, block)`` or a list of them (negative indices count from the end).
    A block out of range, not deformable or in a stage the backbone never runs (beyond its last
    ``out_indices``) raises ``ValueError`` listing the blocks that can be chosen.
    """
    running = [b for b in deformable_blocks(backbone) if b[0] <= max(backbone.out_indices)]
    if not running:
        kinds = '; '.join(f'stage {i}: ' + ', '.join(s.blocks)
                          for i, s in enumerate(backbone.arch.stages))
        raise ValueError(f'this DAT backbone has no deformable blocks that run, so there is '
                         f'nothing to capture ({kinds}; out_indices={backbone.out_indices})')
    if blocks is None or (isinstance(blocks, str) and blocks in ('all', 'last')):
        return running[-1:] if blocks == 'last' else running
    if _is_index(blocks):
        blocks = [blocks]
    if isinstance(blocks, str) or not isinstance(blocks, Sequence):
        raise ValueError(f"blocks must be None, 'all', 'last', (stage, block) or a list of "
                         f"them, got {blocks!r}")
    for item in blocks:
        if not _is_index(item):
            raise ValueError(f'a block is chosen as (stage, block) integers, got {item!r}')
    return list(dict.fromkeys(_normalise(backbone, *item) for item in blocks))


# -- the capture -------------------------------------------------------------------------------
class DeformableCapture:
    """Context manager that records :class:`DeformableRecord` s; see :func:`capture_deformable`.

    ``cap.records`` lists every record in call order (a block called twice, e.g. by two
    forwards, has two records); ``cap[stage, block]`` is the latest record of that block,
    ``cap[i]`` the ``i``-th record; ``cap.blocks`` the chosen ``(stage, block)`` list.
    """

    def __init__(self, model: nn.Module, blocks=None, attention: bool = True,
                 device: Union[str, torch.device, None] = 'cpu'):
        self.backbone = find_backbone(model)
        self.blocks = select_blocks(self.backbone, blocks)
        self.attention = attention
        self.device = device
        self.records: List[DeformableRecord] = []
        self._undo = None  # (tap, its previous `enabled`, hook handle) while active

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t if self.device is None else t.to(self.device)

    def _record(self, stage: int, block: int, module: DeformableAttention2d, tap, args,
                data: dict):
        self.records.append(DeformableRecord(
            stage=stage, block=block, pos=self._keep(data['pos']), ref=self._keep(data['ref']),
            attn=self._keep(data['attn']) if self.attention else None,
            query_size=tuple(int(v) for v in data['query_size']),
            num_heads=module.num_heads, groups=module.groups, stride=module.stride,
            version=module.version))

    def __enter__(self) -> 'DeformableCapture':
        if self._undo is not None:
            raise RuntimeError('this capture is already active')
        self._undo = []
        modules = deformable_blocks(self.backbone)
        try:
            for stage, block in self.blocks:
                module = modules[stage, block]
                hook = functools.partial(self._record, stage, block, module)
                self._undo.append((module.tap, module.tap.enabled,
                                   module.tap.register_forward_hook(hook)))
                module.tap.enabled = True
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self):
        for tap, enabled, handle in reversed(self._undo or []):
            handle.remove()
            tap.enabled = enabled
        self._undo = None

    def __exit__(self, *exc):
        self._restore()
        return False

    # -- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[DeformableRecord]:
        return iter(self.records)

    def __getitem__(self, key) -> DeformableRecord:
        if isinstance(key, int):
            return self.records[key]
        stage, block = _normalise(self.backbone, *key)
        for rec in reversed(self.records):
            if (rec.stage, rec.block) == (stage, block):
                return rec
        if (stage, block) not in self.blocks:
            raise KeyError(f'stage {stage} block {block} was not chosen for capture; chosen: '
                           f'{self.blocks}')
        raise KeyError(f'stage {stage} block {block} has not run yet (no forward inside the '
                       f'capture reached it)')

    def clear(self):
        self.records.clear()


def capture_deformable(model: nn.Module, blocks=None, *, attention: bool = True,
                       device: Union[str, torch.device, None] = 'cpu') -> DeformableCapture:
    """Record sampling positions, reference points and attention weights of DAT's deformable
    blocks during the forwards run inside a ``with`` block.

    Args:
        model: a DAT backbone or a model holding one (classifier, detector, segmentor, wrapper).
        blocks: ``None``/``'all'`` (every deformable block that runs), ``'last'``, one
            ``(stage, block)`` (indices of ``DAT.stages[stage].blocks[block]``, negatives count
            from the end) or a list of them. Wrong choices raise ``ValueError`` listing the
            deformable blocks.
        attention: keep the attention probabilities (the largest part; ``False`` keeps only
            positions and reference points).
        device: where the captured tensors are kept (``None``: where they were computed).

    Returns:
        a :class:`DeformableCapture`; use it as a context manager.
    """
    return DeformableCapture(model, blocks, attention=attention, device=device)
