"""Deformable multi-head attention (DMHA) with the deformable relative position bias.

Per layer (heads ``h``, head dim ``c = C/h``, offset groups ``g``), as docs/model.md describes it:

1. ``q = proj_q(x)`` viewed per group as ``(B*g, C/g, H, W)``;
2. offsets ``conv_offset(q)``: DWConv(ks, stride s) -> LN -> GELU -> 1x1 conv to 2 channels
   ``(y, x)`` on a ``Hk x Wk`` key grid;
3. reference points on that grid in normalised ``[-1, 1]`` coordinates;
4. ``pos = clamp(ref + offset, -1, 1)`` (DAT++, negative range factor) or the range-limited and
   v1 variants;
5. keys/values are ``proj_k``/``proj_v`` of ``x`` bilinearly sampled at ``pos``;
6-8. ``softmax(q.k * c^-0.5 + bias) v`` with ``bias`` sampled bilinearly from ``rpe_table`` at
   ``(q_coord - pos) / 2``; then ``proj_out``.

The module owns the parameters (published names ``proj_{q,k,v,out}``, ``conv_offset``,
``rpe_table``) and computes the sampling positions; the attention itself (steps 6-8: logits,
bias, softmax, weighted sum) is :func:`dat_mm.ops.dmha` (reference and fast path, chosen per
call).

Coordinates. DAT++ (``version=2``) uses ``ref = (i + 0.5) / (Hk - 1) * 2 - 1`` and query
coordinates ``i / (H - 1) * 2 - 1``; v1 uses ``(i + 0.5) / n * 2 - 1`` for both. The DAT++
formulas divide by ``n - 1``; on an axis of length 1 (a 1-pixel-high stage-3 map, a stage-0 map
under 8 pixels) they give inf/NaN in the authors' code. dat_mm puts the single point of such an
axis at 0, the centre of ``[-1, 1]`` (with ``align_corners=True`` any coordinate samples that one
pixel, so only the bias lookup depends on the choice), and a range-limited offset
(``offset_range_factor >= 0``) on such an axis uses a range of ``factor`` instead of
``factor / (n - 1)``. Every other size is computed exactly as published.

Input sizes for v1. The published v1 code reshapes ``rpe_table`` to ``(2H-1, 2W-1)`` of the
actual input, so it only runs at its training resolution. dat_mm samples the table built for
``img_size`` in normalised coordinates, exactly as DAT++ does: identical at the training
resolution (where the shapes agree), and defined at every other size (dense tasks), where the
authors' code fails.

Loading tables of another size. A v1 model built for another ``img_size`` (DAT-B 384 from the
224 checkpoint) has larger tables; an incoming ``rpe_table`` with the same number of heads is
resized bicubically on ``load_state_dict``, as the authors do
(:mod:`dat_mm.ops.position_tables`). DAT++ keeps the 224 tables at every resolution, so its
checkpoints always match and nothing is resized.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from dat_mm.ops import dmha, dmha_reference
from dat_mm.ops.position_tables import GRID, resize_tables_on_load

from .norm import LayerNorm2d
from .tap import Tap


def axis_coords(n: int, version: int, kind: str, dtype, device) -> torch.Tensor:
    """Normalised coordinates of the ``n`` points of an axis.

    ``kind='ref'``: key-grid reference points; ``kind='query'``: the query grid.
    """
    i = torch.arange(n, dtype=dtype, device=device)
    if version == 1:
        return (i + 0.5) / n * 2 - 1
    if n == 1:
        return torch.zeros(1, dtype=dtype, device=device)
    if kind == 'ref':
        return (i + 0.5) / (n - 1) * 2 - 1
    return i / (n - 1) * 2 - 1


def grid_coords(h: int, w: int, version: int, kind: str, dtype, device) -> torch.Tensor:
    """``(h, w, 2)`` grid of normalised ``(y, x)`` coordinates."""
    ys = axis_coords(h, version, kind, dtype, device)
    xs = axis_coords(w, version, kind, dtype, device)
    return torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1)


class DeformableAttention2d(nn.Module):
    """Deformable multi-head attention on NCHW maps.

    Args:
        dim: channels ``C``; num_heads: ``h``; groups: offset groups ``g`` (divides ``h``).
        stride: key-grid stride ``s`` of the offset conv; offset_kernel: its kernel ``ks``.
        offset_range_factor: ``< 0`` clamps positions to ``[-1, 1]`` (DAT++) / ``tanh`` (v1);
            ``>= 0`` limits offsets to ``factor`` key-grid cells.
        use_pe: learn the ``rpe_table`` bias. table_size: ``(Hq0, Wq0)``, the stage's feature
            size at the model's ``img_size``; the table is ``(h, 2*Hq0-1, 2*Wq0-1)`` and, being
            sampled in normalised coordinates, serves every input size unchanged.
        version: 2 (DAT++) or 1 (DAT v1) coordinate formulas.
    """

    def __init__(self, dim: int, num_heads: int, groups: int, stride: int, offset_kernel: int,
                 offset_range_factor: float = -1.0, use_pe: bool = True,
                 table_size=(56, 56), version: int = 2, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, backend: str = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        if groups < 1 or num_heads % groups:
            raise ValueError(f'num_heads {num_heads} is not divisible by offset groups {groups}')
        if version not in (1, 2):
            raise ValueError(f'version must be 1 (DAT) or 2 (DAT++), got {version}')
        self.num_heads, self.groups, self.version = num_heads, groups, version
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.stride, self.offset_kernel = stride, offset_kernel
        self.offset_range_factor = offset_range_factor
        self.attn_drop = attn_drop
        self.backend = backend
        gc = dim // groups
        pad = 0 if offset_kernel == stride else offset_kernel // 2
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, offset_kernel, stride, pad, groups=gc),
            LayerNorm2d(gc),
            nn.GELU(),
            nn.Conv2d(gc, 2, 1, bias=False),
        )
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)
        if use_pe:
            th, tw = table_size
            self.rpe_table = nn.Parameter(torch.zeros(num_heads, 2 * th - 1, 2 * tw - 1))
            nn.init.trunc_normal_(self.rpe_table, std=0.01, a=-2.0, b=2.0)
            self._register_load_state_dict_pre_hook(
                partial(resize_tables_on_load, (('rpe_table', GRID),)), with_module=True)
        else:
            self.rpe_table = None
        # Shows pos / ref / attn / query_size to forward hooks while enabled (see forward).
        self.tap = Tap()

    def sampling_positions(self, q: torch.Tensor):
        """Offsets -> (positions, reference points), both ``(B*g, Hk, Wk, 2)`` in ``(y, x)``."""
        offset = self.conv_offset(q)
        if offset.dtype in (torch.float16, torch.bfloat16):
            # Mixed precision: positions in float32. Near +-1, bf16 resolves only 2**-8 (about
            # a pixel of a 256-pixel map), fp16 2**-11; the offsets themselves are small.
            offset = offset.float()
        Hk, Wk = offset.shape[2:]
        ref = grid_coords(Hk, Wk, self.version, 'ref', offset.dtype, q.device)
        factor = self.offset_range_factor
        if factor > 0 or (factor == 0 and self.version == 2):
            if self.version == 1:
                rng = [1.0 / Hk, 1.0 / Wk]
            else:
                rng = [1.0 / max(Hk - 1, 1), 1.0 / max(Wk - 1, 1)]
            rng = torch.tensor(rng, dtype=offset.dtype, device=offset.device).view(1, 2, 1, 1)
            offset = offset.tanh() * rng * factor
        pos = offset.permute(0, 2, 3, 1) + ref
        if factor < 0:
            pos = pos.clamp(-1.0, 1.0) if self.version == 2 else pos.tanh()
        return pos, ref.expand_as(pos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        g, nh, c = self.groups, self.num_heads, self.head_dim
        q = self.proj_q(x)
        pos, ref = self.sampling_positions(q.reshape(B * g, C // g, H, W))
        Hk, Wk = pos.shape[1:3]
        # grid_sample needs one dtype for input and grid: the wider of the two (float32 under
        # autocast, as CUDA autocast's fp32 rule for grid_sample would give), then back.
        dt = torch.promote_types(x.dtype, pos.dtype)
        sampled = F.grid_sample(x.reshape(B * g, C // g, H, W).to(dt), pos.flip(-1).to(dt),
                                mode='bilinear', align_corners=True)  # (B*g, C/g, Hk, Wk)
        sampled = sampled.to(x.dtype).reshape(B, C, 1, Hk * Wk)
        k = self.proj_k(sampled).reshape(B, nh, c, Hk * Wk).transpose(-1, -2)
        v = self.proj_v(sampled).reshape(B, nh, c, Hk * Wk).transpose(-1, -2)
        q = q.reshape(B, nh, c, H * W).transpose(-1, -2)
        q_coords = grid_coords(H, W, self.version, 'query', pos.dtype, x.device).reshape(-1, 2)
        pos = pos.reshape(B, g, Hk * Wk, 2)
        args = (q, k, v, pos, q_coords, self.rpe_table, self.scale)
        kwargs = dict(attn_drop=self.attn_drop, training=self.training)
        if self.tap.enabled:
            # The probabilities exist only in the reference path (same numbers as the fast
            # paths within their tolerances): pos/ref (B, g, Hk, Wk, 2), attn (B, heads, H, W,
            # Hk, Wk), query_size (H, W).
            out, attn = dmha_reference(*args, **kwargs, return_attn=True)
            self.tap(dict(pos=pos.reshape(B, g, Hk, Wk, 2), ref=ref.reshape(B, g, Hk, Wk, 2),
                          attn=attn.reshape(B, nh, H, W, Hk, Wk), query_size=(H, W)))
        else:
            out = dmha(*args, **kwargs, backend=self.backend)
        out = out.transpose(-1, -2).reshape(B, C, H, W)
        return self.proj_drop(self.proj_out(out))

    def extra_repr(self) -> str:
        return (f'heads={self.num_heads}, groups={self.groups}, stride={self.stride}, '
                f'offset_kernel={self.offset_kernel}, '
                f'offset_range_factor={self.offset_range_factor}, version={self.version}')
