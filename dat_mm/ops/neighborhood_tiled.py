"""Tiled neighbourhood attention: query tiles against the halo of keys their windows cover.

Exact NATTEN 0.14 semantics (see :mod:`.neighborhood`), computed
without gathering a ``k x k`` copy of the keys and values per query (the reference's
``(B, heads, H, W, k*k, c)`` tensors, 49x the size of ``k`` and ``v`` for ``k = 7``).

The query map is cut into ``Ty x Tx`` tiles. Along an axis, the windows of the queries of one
tile all lie inside a halo of ``T + k - 1`` keys (windows start at ``clamp(i - k//2, 0, L - k)``,
a non-decreasing function that grows by at most one per query), so a tile's attention is a
small dense attention of ``Ty*Tx`` queries against ``(Ty + k - 1)(Tx + k - 1)`` halo keys with
an additive bias: ``rpb[head, ky - qy + k - 1, kx - qx + k - 1]`` where the key is in the
query's window and ``-inf`` elsewhere. Dense batched matmuls over all tiles replace the
reference's gathers; the softmax over ``-inf`` entries gives exactly zero weight, so the result
is the reference's up to float summation order.

Interior tiles all share one bias/mask pattern; only the tiles near the borders (clamped
windows) differ. Per axis the tiles fall into a few *runs* of identical pattern, and the bias is
added run by run from a ``(heads, T*T, halo*halo)`` pattern broadcast over the run's tiles, so
nothing of the size of the logits is built for the bias.

An axis not longer than ``T + k - 1`` is one tile (the whole axis is the halo).

Training memory: the gathered halo keys and values and the probabilities over all halo keys
are several times the size of the maps they come from, so the backward pass does not keep
them; it gathers the tiles again from the kept ``q``, ``k``, ``v`` maps and recomputes the
probabilities (:class:`_TiledNA`).

Plans (index tables and bias patterns) are built on the host, explicitly, whatever the default
device: they are small integer tables, and finding the distinct patterns compares them one by
one (on a GPU each comparison would be a synchronisation). A map's plan is moved to the inputs'
device once and cached per (shape, kernel, tile, device).
"""
import functools
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .autocast import HALF_DTYPES, accumulation_dtype, autocast_off
from .choice import common_refusal, refuse

#: Candidate query tile edges, per axis (any value >= 1 is exact; tiles may be rectangular).
#: The tile of a map is the candidate pair with the least estimated cost: tiles x (queries x
#: halo keys per tile + TILE_OVERHEAD). The logits hold (Ty + k - 1)(Tx + k - 1) / k^2 times
#: the useful work; small tiles waste less of it but make more, smaller matmuls. Measured on
#: the 2-core AVX-512 CPU this was written on (docs/benchmarks.md, forward + backward at the
#: DAT-T++ stage shapes): rectangular 4x7 tiles beat 7x7 by ~25% on a 56x56 map, 2x14 beat one
#: 14x14 tile by ~20%; the cost model picks those.
TILE_CANDIDATES = (2, 4, 6, 7, 8)
TILE_OVERHEAD = 2000

#: Where plans are computed (see the module docstring).
_HOST = torch.device('cpu')


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
        t = torch.arange(n_tiles, device=_HOST)
        i = t[:, None] * tq + torch.arange(tq, device=_HOST)[None, :]      # (nT, tq) queries
        start = (i - ks // 2).clamp(0, length - ks)                          # window starts
        h0 = (t * tq - ks // 2).clamp(0, length - halo)                      # halo starts
        keys = h0[:, None] + torch.arange(halo, device=_HOST)[None, :]       # (nT, halo)
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


class _MapPlan:
    """Everything about a ``(H, W)`` map, kernel and tile that does not depend on the tensors:
    the flat gather indices and the distinct bias patterns with the runs that use them."""

    def __init__(self, H: int, W: int, ks: int, tile: Tuple[int, int], device):
        tile_y, tile_x = tile
        py, px = axis_plan(H, ks, tile_y), axis_plan(W, ks, tile_x)
        self.py, self.px = py, px
        ny, nx, ty, tx = py.n_tiles, px.n_tiles, py.tq, px.tq
        rows = torch.arange(py.padded, device=_HOST).clamp(max=H - 1).view(ny, 1, ty, 1)
        cols = torch.arange(px.padded, device=_HOST).clamp(max=W - 1).view(1, nx, 1, tx)
        # tile-ordered queries (padding clamped onto the last row/column: those outputs are
        # dropped and get zero gradient), tile-ordered halo keys, and for each map position
        # its slot in the tile order
        self.q_idx = (rows * W + cols).reshape(-1).to(device)
        hy = py.keys.view(ny, 1, py.halo, 1)
        hx = px.keys.view(1, nx, 1, px.halo)
        self.k_idx = (hy * W + hx).reshape(-1).to(device)
        r, c = torch.arange(H, device=_HOST), torch.arange(W, device=_HOST)
        slot = ((r // ty)[:, None] * nx + (c // tx)[None, :]) * (ty * tx) + \
            (r % ty)[:, None] * tx + (c % tx)[None, :]
        self.slot = slot.reshape(-1).to(device)
        # distinct (y pattern, x pattern) pairs: rpb index and window mask, (P, L, S)
        pairs = sorted({(a, b) for _, _, a in py.runs for _, _, b in px.runs})
        pair_id = {pair: i for i, pair in enumerate(pairs)}
        idx, outside = [], []
        for a, b in pairs:
            ry, rx = py.patterns[a], px.patterns[b]                     # (tq, halo), -1: out
            rel = ry.clamp(min=0)[:, None, :, None] * (2 * ks - 1) + \
                rx.clamp(min=0)[None, :, None, :]
            idx.append(rel.reshape(ty * tx, py.halo * px.halo))
            out = (ry[:, None, :, None] < 0) | (rx[None, :, None, :] < 0)
            outside.append(out.reshape(ty * tx, py.halo * px.halo))
        self.pattern_idx = torch.stack(idx).to(device)
        self.pattern_outside = torch.stack(outside).to(device)
        self.runs = [(ys, ye, xs, xe, pair_id[(a, b)])
                     for ys, ye, a in py.runs for xs, xe, b in px.runs]

    def patterns(self, rpb: Optional[torch.Tensor], nh: int, dtype) -> torch.Tensor:
        """``(heads, P, L, S)``: rpb inside each query's window, -inf outside."""
        if rpb is None:
            bias = torch.zeros((nh,) + self.pattern_idx.shape, dtype=dtype,
                               device=self.pattern_idx.device)
        else:
            bias = rpb.reshape(nh, -1)[:, self.pattern_idx].to(dtype)
        return bias.masked_fill(self.pattern_outside, float('-inf'))

    def full_mask(self, patterns: torch.Tensor) -> torch.Tensor:
        """``(heads, ny, nx, L, S)`` additive mask of every tile."""
        nh, _, L, S = patterns.shape
        mask = patterns.new_empty(nh, self.py.n_tiles, self.px.n_tiles, L, S)
        for ys, ye, xs, xe, pid in self.runs:
            mask[:, ys:ye, xs:xe] = patterns[:, pid, None, None]
        return mask


_PLANS = {}


def map_plan(H: int, W: int, ks: int, tile, device) -> _MapPlan:
    tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
    key = (H, W, ks, tile, str(device))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 256:
            _PLANS.clear()
        plan = _PLANS[key] = _MapPlan(H, W, ks, tile, device)
    return plan


@functools.lru_cache(maxsize=256)
def choose_tile(H: int, W: int, ks: int) -> Tuple[int, int]:
    """``(Ty, Tx)`` of least estimated cost (ties: the squarer, then the smaller tile)."""
    def cost(tile):
        py, px = axis_plan(H, ks, tile[0]), axis_plan(W, ks, tile[1])
        work = py.n_tiles * px.n_tiles * (py.tq * px.tq * py.halo * px.halo + TILE_OVERHEAD)
        return work, abs(tile[0] - tile[1]), tile
    return min(((ty, tx) for ty in TILE_CANDIDATES for tx in TILE_CANDIDATES), key=cost)


def _gather(plan: _MapPlan, q, k, v, dtype):
    """Queries and halo keys/values in tile order ``(B, nh, ny, nx, L or S, c)``: one gather
    each from the ``(B, nh, H*W, c)`` views; explicit sizes (not -1) so that empty batches
    reshape."""
    B, nh, H, W, c = q.shape
    ny, nx = plan.py.n_tiles, plan.px.n_tiles
    L, S = plan.py.tq * plan.px.tq, plan.py.halo * plan.px.halo
    qt = q.to(dtype).flatten(2, 3).index_select(2, plan.q_idx).view(B, nh, ny, nx, L, c)
    kt = k.to(dtype).flatten(2, 3).index_select(2, plan.k_idx).view(B, nh, ny, nx, S, c)
    vt = v.to(dtype).flatten(2, 3).index_select(2, plan.k_idx).view(B, nh, ny, nx, S, c)
    return qt, kt, vt


def _probs(plan: _MapPlan, qt, kt, patterns):
    """Softmax over each tile's halo keys of ``q k^T`` plus the bias/mask patterns, in
    ``patterns``' dtype (float32 for half inputs)."""
    logits = torch.matmul(qt, kt.transpose(-1, -2)).to(patterns.dtype)
    for ys, ye, xs, xe, pid in plan.runs:
        logits[:, :, ys:ye, xs:xe] += patterns[None, :, pid, None, None]
    return logits.softmax(dim=-1)


def _attend(plan: _MapPlan, q, k, v, patterns, explicit: bool = False):
    """The attention of every tile, in map order ``(B, nh, H, W, c)`` (a view of a
    ``(B, H, W, nh, c)`` tensor, so that the caller's merge of heads is free). Through
    ``scaled_dot_product_attention`` with each tile's bias/mask as ``attn_mask`` (fused kernels
    on CPU and GPU), or with explicit logits and softmax in ``patterns``' dtype: where asked,
    and for empty inputs (some fused GPU kernels reject a batch of 0)."""
    B, nh, H, W, c = q.shape
    ny, nx = plan.py.n_tiles, plan.px.n_tiles
    L, S = plan.py.tq * plan.px.tq, plan.py.halo * plan.px.halo
    qt, kt, vt = _gather(plan, q, k, v, q.dtype)
    if explicit or q.numel() == 0:
        out = torch.matmul(_probs(plan, qt, kt, patterns).to(q.dtype), vt)
    else:
        mask = plan.full_mask(patterns.to(q.dtype)).view(1, nh * ny * nx, L, S)
        out = F.scaled_dot_product_attention(
            qt.view(B, nh * ny * nx, L, c), kt.view(B, nh * ny * nx, S, c),
            vt.view(B, nh * ny * nx, S, c), attn_mask=mask, scale=1.0)
    out = out.reshape(B, nh, ny * nx * L, c)
    # Back to map order, laid out (B, H, W, nh, c).
    out = out.transpose(1, 2).index_select(1, plan.slot).view(B, H, W, nh, c)
    return out.permute(0, 3, 1, 2, 4)


class _TiledNA(torch.autograd.Function):
    """Tiled neighbourhood attention with a backward pass that recomputes the tiles.

    The forward pass is the inference computation (:func:`_attend`; for half inputs the
    explicit one, whose float32 softmax and bias the backward pass recomputes exactly, rather
    than a fused kernel given the bias rounded to the half type). For the backward pass it
    keeps the ``q``, ``k``, ``v`` maps (views of the block's qkv projection) and the output
    (the storage the block's output projection keeps anyway), not what plain autograd ops
    would keep: the gathered halo keys and values (each ``(Ty + k - 1)(Tx + k - 1) / (Ty Tx)``
    times a map, ~4.6x for 4x7 tiles) and the probabilities over every halo key (~2.7 maps of
    32-channel heads at ``k = 7``). The backward pass gathers the tiles again, recomputes the
    probabilities ``P`` (one more ``q k^T`` and softmax), and applies the softmax-attention
    gradient ``dS = P (dP - D)`` with ``D = <dout, out>`` per query (``sum_j P_j dP_j`` for
    half inputs, whose ``out`` is rounded); the tile gradients of
    ``q``, ``k``, ``v`` go back to the maps by ``index_add`` (halo keys shared by neighbouring
    tiles sum), those of the patterns to ``rpb`` through autograd.
    """

    @staticmethod
    def forward(ctx, q, k, v, patterns, plan):
        with autocast_off(q):
            out = _attend(plan, q, k, v, patterns, explicit=q.dtype in HALF_DTYPES)
        ctx.save_for_backward(q, k, v, patterns, out)
        ctx.plan = plan
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, patterns, out = ctx.saved_tensors
        plan = ctx.plan
        need_q, need_k, need_v, need_pat = ctx.needs_input_grad[:4]
        dt, acc = q.dtype, patterns.dtype
        with autocast_off(q):
            do = _to_tiles(plan, dout.to(dt))
            delta = None
            if dt not in HALF_DTYPES:  # D = <dout, out> per query, in tile order like dout
                delta = _to_tiles(plan, (dout * out).sum(-1, keepdim=True))
            qt, kt, vt = _gather(plan, q, k, v, dt)
            p = _probs(plan, qt, kt, patterns)                  # (B, nh, ny, nx, L, S)
            dq = dk = dv = d_pat = None
            if need_v:
                dv = _scatter(plan.k_idx, torch.matmul(p.to(dt).transpose(-1, -2), do),
                              v.shape, v.dtype)
            ds = torch.matmul(do, vt.transpose(-1, -2)).to(acc)
            del vt
            if delta is None:
                delta = (ds * p).sum(-1, keepdim=True)
            ds = ds.sub_(delta).mul_(p)
            del p
            if need_pat:
                d_pat = torch.zeros_like(patterns)
                for ys, ye, xs, xe, pid in plan.runs:
                    # batch first, then tiles: faster than one sum over dims (0, 2, 3)
                    d_pat[:, pid] += ds[:, :, ys:ye, xs:xe].sum(0).sum((1, 2))
            ds = ds.to(dt)
            if need_q:
                dq = _scatter(plan.q_idx, torch.matmul(ds, kt), q.shape, q.dtype)
            if need_k:
                dk = _scatter(plan.k_idx, torch.matmul(ds.transpose(-1, -2), qt), k.shape,
                              k.dtype)
        return dq, dk, dv, d_pat, None


def _to_tiles(plan: _MapPlan, x):
    """A ``(B, nh, H, W, n)`` map in tile order ``(B, nh, ny, nx, L, n)``, zero on the
    padding slots (the backward of the forward's return to map order)."""
    B, nh, H, W, n = x.shape
    ny, nx, L = plan.py.n_tiles, plan.px.n_tiles, plan.py.tq * plan.px.tq
    tiles = x.new_zeros(B, nh, ny * nx * L, n)
    tiles.index_copy_(2, plan.slot, x.reshape(B, nh, H * W, n))
    return tiles.view(B, nh, ny, nx, L, n)


def _scatter(idx, tiles, shape, dtype):
    """Sum tile-ordered ``(B, nh, ny, nx, n, c)`` gradients back onto the ``(B, nh, H, W, c)``
    map whose flat positions ``idx`` they were gathered from."""
    B, nh, H, W, c = shape
    out = tiles.new_zeros(B, nh, H * W, c)
    out.index_add_(2, idx, tiles.reshape(B, nh, idx.numel(), c))
    return out.view(B, nh, H, W, c).to(dtype)


def na2d_tiled(q, k, v, rpb, kernel_size: int, tile: Union[int, Tuple[int, int]] = None):
    """Neighbourhood attention by query tiles; the result of ``na2d_reference`` (no dropout,
    no probabilities).

    ``tile``: query tile edge, or ``(Ty, Tx)`` (default: :func:`choose_tile`).

    The tiles go through ``scaled_dot_product_attention`` with the per-tile bias/mask as
    ``attn_mask`` (fused kernels on CPU and GPU). With autograd, :class:`_TiledNA` keeps only
    the maps and the output for the backward pass and recomputes the tiles' probabilities
    there with explicit logits (``rpb`` needs the gradient of the mask, which fused kernels do
    not give): the matmuls in ``q``'s dtype (autocast does not change it: under autocast the
    block's projections already return half maps), the softmax in float32 for half types.
    A batch of 0 returns the reference's empty result (and zero gradients).
    """
    nh = q.shape[1]
    plan = map_plan(q.shape[2], q.shape[3], kernel_size,
                    tile or choose_tile(q.shape[2], q.shape[3], kernel_size), q.device)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, rpb))
    if needs_grad:
        return _TiledNA.apply(q, k, v, plan.patterns(rpb, nh, accumulation_dtype(q.dtype)),
                              plan)
    return _attend(plan, q, k, v, plan.patterns(rpb, nh, q.dtype))


def can_run_na2d_tiled(q, k, v, rpb, kernel_size, attn_drop: float = 0.0,
                       training: bool = False, return_attn: bool = False,
                       raise_error: bool = False) -> bool:
    """Whether :func:`na2d_tiled` computes this call exactly; if not, the reason is logged at
    debug level (or raised as a ``ValueError`` with ``raise_error``)."""
    reason = common_refusal(q, k, v, attn_drop, training, return_attn, 'per-query (k*k)')
    if reason is None:
        if q.dim() != 5 or min(q.shape[2:4]) < kernel_size or kernel_size % 2 == 0:
            reason = (f'needs (B, heads, H, W, c) maps of at least the (odd) kernel size '
                      f'{kernel_size}, got {tuple(q.shape)} (the reference reports the error)')
        else:
            return True
    return refuse('neighborhood', 'tiled', reason, raise_error)
