"""Tiled neighbourhood attention: query tiles against the halo of keys their windows cover.

Exact NATTEN 0.14 semantics (see :mod:`dat_mm.models.layers.neighborhood_attn`), computed
without gathering a ``k x k`` copy of the keys and values per query (the reference's
``(B, heads, H, W, k*k, c)`` tensors, 49x the size of ``k`` and ``v`` for ``k = 7``).

The query map is cut into ``T x T`` tiles. Along an axis, the windows of the queries of one
tile all lie inside a halo of ``T + k - 1`` keys (windows start at ``clamp(i - k//2, 0, L - k)``,
a non-decreasing function that grows by at most one per query), so a tile's attention is a
small dense attention of ``T*T`` queries against ``(T + k - 1)**2`` halo keys with an additive
bias: ``rpb[head, ky - qy + k - 1, kx - qx + k - 1]`` where the key is in the query's window and
``-inf`` elsewhere. Dense batched matmuls over all tiles replace the reference's gathers; the
softmax over ``-inf`` entries gives exactly zero weight, so the result is the reference's up to
float summation order.

Interior tiles all share one bias/mask pattern; only the tiles near the borders (clamped
windows) differ. Per axis the tiles fall into a few *runs* of identical pattern, and the bias is
added run by run from a ``(heads, T*T, halo*halo)`` pattern broadcast over the run's tiles, so
nothing of the size of the logits is built for the bias.

An axis not longer than ``T + k - 1`` is one tile (the whole axis is the halo).
"""
import functools
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

#: Query tile edge. 8 measured best on the 2-core AVX-512 CPU this was written on (see
#: docs/benchmarks.md); any value >= 1 is exact.
DEFAULT_TILE = 8


class _AxisPlan:
    """Tiling of one axis: halo key indices per tile and the tiles' bias patterns."""

    def __init__(self, length: int, ks: int, tile: int):
        if length < ks:
            raise ValueError(f'neighbourhood attention needs an axis of at least {ks} (the '
                             f'kernel size), got {length}; pad the map first')
        if length <= tile + ks - 1:
            n_tiles, tq, halo = 1, length, length
        else:
            n_tiles, tq, halo = -(-length // tile), tile, tile + ks - 1
        self.n_tiles, self.tq, self.halo = n_tiles, tq, halo
        self.padded = n_tiles * tq
        t = torch.arange(n_tiles)
        i = (t[:, None] * tq + torch.arange(tq)[None, :])                  # (nT, tq) queries
        start = (i - ks // 2).clamp(0, length - ks)                          # window starts
        h0 = (t * tq - ks // 2).clamp(0, length - halo)                      # halo starts
        keys = h0[:, None] + torch.arange(halo)[None, :]                     # (nT, halo)
        valid = (keys[:, None, :] >= start[:, :, None]) & \
                (keys[:, None, :] < start[:, :, None] + ks)                  # (nT, tq, halo)
        rel = (keys[:, None, :] - i[:, :, None] + ks - 1).clamp(0, 2 * ks - 2)
        self.keys = keys.reshape(-1)                                         # (nT * halo,)
        # Tiles with identical (rel, valid) share a pattern; group consecutive ones in runs.
        pattern = torch.where(valid, rel, torch.full_like(rel, -1))
        self.patterns: List[torch.Tensor] = []        # rel with -1 where not in the window
        self.runs: List[Tuple[int, int, int]] = []    # (first tile, end tile, pattern id)
        for ti in range(n_tiles):
            p = pattern[ti]
            pid = next((j for j, q in enumerate(self.patterns) if torch.equal(q, p)), None)
            if pid is None:
                pid = len(self.patterns)
                self.patterns.append(p)
            if self.runs and self.runs[-1][2] == pid and self.runs[-1][1] == ti:
                self.runs[-1] = (self.runs[-1][0], ti + 1, pid)
            else:
                self.runs.append((ti, ti + 1, pid))


@functools.lru_cache(maxsize=256)
def axis_plan(length: int, ks: int, tile: int) -> _AxisPlan:
    return _AxisPlan(length, ks, tile)


def _bias_pattern(rpb: Optional[torch.Tensor], py: torch.Tensor, px: torch.Tensor, nh: int,
                  dtype, device) -> torch.Tensor:
    """``(heads, tq_y*tq_x, halo_y*halo_x)``: rpb where the key is in the window, else -inf."""
    py, px = py.to(device), px.to(device)
    valid = (py[:, None, :, None] >= 0) & (px[None, :, None, :] >= 0)     # (ty, tx, hy, hx)
    if rpb is None:
        bias = torch.zeros((nh,) + valid.shape, dtype=dtype, device=device)
    else:
        bias = rpb[:, py.clamp(min=0)[:, None, :, None],
                   px.clamp(min=0)[None, :, None, :]].to(dtype)
    bias = bias.masked_fill(~valid, float('-inf'))
    ty, tx, hy, hx = valid.shape
    return bias.reshape(nh, ty * tx, hy * hx)


@functools.lru_cache(maxsize=256)
def _flat_indices(plan_y: _AxisPlan, plan_x: _AxisPlan, W: int):
    """Flat ``H*W`` indices: tile-ordered queries (padding clamped onto the last row/column),
    tile-ordered halo keys, and for each map position its slot in the tile order."""
    ny, nx, ty, tx = plan_y.n_tiles, plan_x.n_tiles, plan_y.tq, plan_x.tq
    H = plan_y.keys.max().item() + 1
    rows = torch.arange(plan_y.padded).clamp(max=H - 1).view(ny, 1, ty, 1)
    cols = torch.arange(plan_x.padded).clamp(max=W - 1).view(1, nx, 1, tx)
    queries = (rows * W + cols).reshape(-1)                           # (ny, nx, ty, tx)
    hy = plan_y.keys.view(ny, 1, plan_y.halo, 1)
    hx = plan_x.keys.view(1, nx, 1, plan_x.halo)
    keys = (hy * W + hx).reshape(-1)                                  # (ny, nx, hy, hx)
    r = torch.arange(H)
    c = torch.arange(W)
    slot = ((r // ty)[:, None] * nx + (c // tx)[None, :]) * (ty * tx) + \
        (r % ty)[:, None] * tx + (c % tx)[None, :]
    return queries, keys, slot.reshape(-1)


_INDEX_CACHE = {}


def _indices(plan_y, plan_x, W, device):
    key = (id(plan_y), id(plan_x), W, str(device))
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = tuple(t.to(device) for t in _flat_indices(plan_y, plan_x, W))
    return _INDEX_CACHE[key]


def tiled_bias(rpb, plan_y: _AxisPlan, plan_x: _AxisPlan, nh: int, dtype, device):
    """Run-by-run bias patterns: list of ``(ys, ye, xs, xe, (nh, tq*tq, halo*halo))``."""
    cache = {}
    items = []
    for ys, ye, pyid in plan_y.runs:
        for xs, xe, pxid in plan_x.runs:
            key = (pyid, pxid)
            if key not in cache:
                cache[key] = _bias_pattern(rpb, plan_y.patterns[pyid], plan_x.patterns[pxid],
                                           nh, dtype, device)
            items.append((ys, ye, xs, xe, cache[key]))
    return items


def na2d_tiled(q, k, v, rpb, kernel_size: int, attn_drop: float = 0.0, training: bool = False,
               return_attn: bool = False, tile: int = None):
    """Neighbourhood attention by query tiles; same arguments and result as ``na2d_reference``.

    Computes in ``q``'s dtype for the matmuls and in float32 for the softmax when ``q`` is a
    half type (so bf16/fp16 autocast keeps the reference's accuracy or better).
    """
    B, nh, H, W, c = q.shape
    plan_y = axis_plan(H, kernel_size, tile or DEFAULT_TILE)
    plan_x = axis_plan(W, kernel_size, tile or DEFAULT_TILE)
    ny, nx = plan_y.n_tiles, plan_x.n_tiles
    q_idx, k_idx, slot = _indices(plan_y, plan_x, W, q.device)
    # One gather each: (B, nh, H*W, c) views -> tile order (B, nh, ny, nx, tiles/halo, c).
    qt = q.flatten(2, 3).index_select(2, q_idx).view(B, nh, ny, nx, -1, c)
    kt = k.to(q.dtype).flatten(2, 3).index_select(2, k_idx).view(B, nh, ny, nx, -1, c)
    vt = v.to(q.dtype).flatten(2, 3).index_select(2, k_idx).view(B, nh, ny, nx, -1, c)
    logits = torch.matmul(qt, kt.transpose(-1, -2))
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    for ys, ye, xs, xe, bias in tiled_bias(rpb, plan_y, plan_x, nh, logits.dtype, q.device):
        logits[:, :, ys:ye, xs:xe] += bias[None, :, None, None]
    attn = logits.softmax(dim=-1).to(vt.dtype)
    out = torch.matmul(attn, vt).view(B, nh, -1, c)
    # Back to map order, laid out (B, H, W, nh, c) so that the caller's merge of heads is free.
    out = out.transpose(1, 2).index_select(1, slot).view(B, H, W, nh, c)
    return out.permute(0, 3, 1, 2, 4)


def check_na2d_tiled(q, k, v, rpb, kernel_size, attn_drop: float = 0.0, training: bool = False,
                     return_attn: bool = False, **_):
    """None when :func:`na2d_tiled` computes this call exactly, else why not."""
    if return_attn:
        return 'return_attn asks for the per-query (k*k) probabilities'
    if attn_drop > 0 and training:
        return f'attention dropout ({attn_drop}) in training is only in the reference'
    if not (q.is_floating_point() and k.is_floating_point() and v.is_floating_point()):
        return f'needs floating point q/k/v, got {q.dtype}'
    if q.dim() != 5 or min(q.shape[2:4]) < kernel_size or kernel_size % 2 == 0:
        return (f'needs (B, heads, H, W, c) maps of at least the (odd) kernel size '
                f'{kernel_size}, got {tuple(q.shape)} (the reference reports the error)')
    return None
