"""Capture where DAT's deformable attention samples keys, and how it weighs them.

>>> from dat_mm.visualization import capture_deformable
>>> with capture_deformable(model, blocks=[(2, 17), (3, 1)]) as cap:
...     model.backbone(images)              # or any forward of a classifier/detector/segmentor
>>> rec = cap[3, 1]                          # the DeformableRecord of stage 3, block 1
>>> rec.pos.shape, rec.attn.shape            # (B, g, Hk, Wk, 2), (B, heads, H, W, Hk, Wk)

``model`` may be a :class:`~dat_mm.DAT` backbone or anything that holds exactly one (an
mmpretrain classifier, an mmdet detector, an mmseg segmentor, a DDP wrapper). Inside the
``with`` block the chosen :class:`~dat_mm.models.layers.DeformableAttention2d` modules have
their ``_capture`` hook set; every forward through them appends a :class:`DeformableRecord`.
On exit the hooks are restored to what they were (``None``: a model that is not being captured
pays nothing). While capturing, the block computes attention with the reference path (same
numbers as the fast paths within their tolerances) and keeps the full ``H*W x Hk*Wk``
probability matrix per head, so choose the blocks you need on large inputs (a stage-0 block on
an 800x1333 detection input holds ~0.6 GB of weights; ``attention=False`` keeps only the
positions).

Coordinates. ``pos`` and ``ref`` are normalised ``(y, x)`` in ``[-1, 1]`` of the block's input
map with ``align_corners=True`` semantics: -1 is the centre of the first pixel, +1 the centre of
the last one. :func:`to_map_pixels` turns them into pixel indices of that map and
:func:`to_image_pixels` into continuous pixel coordinates of the image the map covers (the
network input, with the convention that a map of size ``H`` spreads evenly over an input of
height ``Hi``: map pixel ``i`` is centred at ``(i + 0.5) * Hi / H``).
"""
import functools
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..models.backbones.dat import DAT
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
        raise ValueError(f'{type(model).__name__} holds no DAT backbone{what}; deformable '
                         f'attention can only be captured from a DAT / DAT++ model')
    if len(found) > 1:
        names = [name for name, _ in found]
        raise ValueError(f'{type(model).__name__} holds {len(found)} DAT backbones {names}; '
                         f'pass the one to capture')
    return found[0][1]


def _block_kind(backbone: DAT, stage: int, block: int) -> str:
    try:
        return backbone.arch.stages[stage].blocks[block]
    except (AttributeError, IndexError):
        return type(backbone.stages[stage].blocks[block].attn).__name__


def deformable_blocks(backbone: DAT) -> List[BlockIndex]:
    """``(stage, block)`` of every deformable block, in forward order."""
    return [(i, j) for i, stage in enumerate(backbone.stages)
            for j, blk in enumerate(stage.blocks)
            if isinstance(getattr(blk, 'attn', None), DeformableAttention2d)]


def _stage_summary(backbone: DAT) -> str:
    return '; '.join(f'stage {i}: ' + ', '.join(_block_kind(backbone, i, j)
                                                 for j in range(len(s.blocks)))
                     for i, s in enumerate(backbone.stages))


def resolve_blocks(backbone: DAT, blocks=None) -> List[BlockIndex]:
    """Validate a block selection -> list of ``(stage, block)``.

    ``blocks``: ``None`` or ``'all'`` (every deformable block that runs), ``'last'`` (the last
    deformable block that runs), one ``(stage, block)`` or a list of them. Negative indices
    count from the end. An index out of range, a block that is not deformable, a stage the
    backbone never runs (beyond its last ``out_indices``) or a backbone without deformable
    blocks raise ``ValueError`` saying which blocks can be chosen.
    """
    every = deformable_blocks(backbone)
    if not every:
        raise ValueError(f'this DAT backbone has no deformable blocks, so there is nothing to '
                         f'capture ({_stage_summary(backbone)})')
    last_run = max(backbone.out_indices)
    running = [(i, j) for i, j in every if i <= last_run]
    if not running:
        raise ValueError(f'none of the deformable blocks {every} runs: this backbone stops '
                         f'after stage {last_run} (out_indices={backbone.out_indices})')
    if blocks is None or (isinstance(blocks, str) and blocks == 'all'):
        return running
    if isinstance(blocks, str):
        if blocks == 'last':
            return [running[-1]]
        raise ValueError(f"blocks must be None, 'all', 'last', (stage, block) or a list of "
                         f"them, got {blocks!r}")
    if (isinstance(blocks, Sequence) and len(blocks) == 2
            and all(isinstance(v, int) for v in blocks)):
        blocks = [tuple(blocks)]
    chosen = []
    for item in blocks:
        if not (isinstance(item, Sequence) and len(item) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise ValueError(f'a block is chosen as (stage, block) integers, got {item!r}')
        chosen.append(check_block(backbone, *item))
    return list(dict.fromkeys(chosen))


def check_block(backbone: DAT, stage: int, block: int) -> BlockIndex:
    """Normalise (negative) indices and check that ``(stage, block)`` is a deformable block
    that runs; ``ValueError`` listing the valid choices otherwise."""
    every = deformable_blocks(backbone)
    n_stages = len(backbone.stages)
    valid = ', '.join(f'({i}, {j})' for i, j in every) or 'none'
    if not -n_stages <= stage < n_stages:
        raise ValueError(f'stage {stage} is out of range: the backbone has {n_stages} stages '
                         f'(0..{n_stages - 1}); deformable blocks (stage, block): {valid}')
    stage %= n_stages
    n_blocks = len(backbone.stages[stage].blocks)
    in_stage = [j for i, j in every if i == stage]
    if not -n_blocks <= block < n_blocks:
        raise ValueError(f'block {block} is out of range: stage {stage} has {n_blocks} blocks '
                         f'(0..{n_blocks - 1}); its deformable blocks: {in_stage or "none"}')
    block %= n_blocks
    if (stage, block) not in every:
        where = (f'deformable blocks of stage {stage}: {in_stage}' if in_stage else
                 f'stage {stage} has none; deformable blocks (stage, block): {valid}')
        raise ValueError(f'stage {stage} block {block} is a {_block_kind(backbone, stage, block)}'
                         f' block, not a deformable one; {where}')
    last_run = max(backbone.out_indices)
    if stage > last_run:
        raise ValueError(f'stage {stage} never runs: this backbone stops after stage '
                         f'{last_run} (out_indices={backbone.out_indices})')
    return stage, block


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
        self.blocks = resolve_blocks(self.backbone, blocks)
        self.attention = attention
        self.device = device
        self.records: List[DeformableRecord] = []
        self._saved = None

    def _module(self, stage: int, block: int) -> DeformableAttention2d:
        return self.backbone.stages[stage].blocks[block].attn

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t if self.device is None else t.to(self.device)

    def _record(self, stage: int, block: int, previous, module: DeformableAttention2d,
                data: dict):
        attn = self._keep(data['attn']) if self.attention else None
        self.records.append(DeformableRecord(
            stage=stage, block=block, pos=self._keep(data['pos']), ref=self._keep(data['ref']),
            attn=attn, query_size=tuple(int(v) for v in data['query_size']),
            num_heads=module.num_heads, groups=module.groups, stride=module.stride,
            version=module.version))
        if previous is not None:  # an enclosing capture of the same block keeps recording
            previous(module, data)

    def __enter__(self) -> 'DeformableCapture':
        if self._saved is not None:
            raise RuntimeError('this capture is already active')
        self._saved = []
        try:
            for stage, block in self.blocks:
                module = self._module(stage, block)
                previous = module._capture
                self._saved.append((module, previous))
                module._capture = functools.partial(self._record, stage, block, previous)
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self):
        for module, previous in reversed(self._saved or []):
            module._capture = previous
        self._saved = None

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
        stage, block = key
        stage, block = check_block(self.backbone, stage, block)
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
