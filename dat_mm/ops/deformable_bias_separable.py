"""The deformable relative position bias of queries on a grid, as two 1-D interpolations.

The bias of query ``(i, j)`` and sampled key ``k`` is ``rpe_table`` sampled bilinearly
(``align_corners=True``, zeros outside) at table coordinates

    u_y(i, k) = ((qy_i - py_k) / 2 + 1) * (Th - 1) / 2,
    u_x(j, k) = ((qx_j - px_k) / 2 + 1) * (Tw - 1) / 2

(docs/model.md). When the queries form a grid (``q_coords = qy x qx``, as in every DAT
layer), ``u_y`` depends on the row ``i`` and ``u_x`` on the column ``j`` only, so the bilinear
weights factor: ``bias[i, j, k] = sum_x wx(j, k, x) * sum_y wy(i, k, y) * T[y, x]``. This module
computes it in two steps instead of one bilinear sample per (query, key):

1. per query row ``i`` and key ``k``, the table interpolated along y over the ``Xw`` columns
   the key's queries reach: ``R[i, x, k] = T[y0, x] + fy * (T[y0 + 1, x] - T[y0, x])``
   (``u_x`` spans half the table over the query columns, so ``Xw`` is about ``Tw / 2 + 2`` at
   any input size);
2. per query ``(i, j)`` and key, ``R`` interpolated along x at ``u_x(j, k)``:
   ``bias = R[x0] + fx * (R[x0 + 1] - R[x0])`` - two gathers with an index that depends on
   ``(j, k)`` only, shared by all rows and heads, and one multiply-add.

The first step costs about ``Xw / W`` of the second, so this pays on maps wider than the table
(detection and segmentation inputs; at the training resolution ``W`` is half the table and the
``grid_sample`` path is used, see :func:`worthwhile`). The backward pass runs the two steps in
reverse (scatter-adds along x, then along y) and gives the gradients of the table and of the
key positions ``(py, px)`` (through ``d bias / d u_x = R[x0 + 1] - R[x0]``, ``d R / d u_y =
T[y0 + 1] - T[y0]``, and ``d u / d p = -(T - 1) / 4``).

Values equal the ``grid_sample`` reference up to float rounding of the coordinates (the same
formula evaluated in another order); out-of-table corners read zeros from a padding of two
cells, with indices clamped into the padding, so any position, also far outside ``[-1, 1]``,
gives the reference's value and gradient.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

#: Zero cells around the table: a clamped corner index always lands on a zero.
PAD = 2


def tensor_grid(q_coords: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(qy (H,), qx (W,))`` if ``q_coords`` ``(M, 2)`` is the row-major grid ``qy x qx``,
    else None."""
    if q_coords.dim() != 2 or q_coords.shape[0] == 0 or q_coords.requires_grad:
        return None
    ys = q_coords[:, 0]
    changes = (ys != ys[0]).nonzero()
    M = ys.numel()
    W = int(changes[0, 0]) if changes.numel() else M
    if W == 0 or M % W:     # W == 0: the first y is NaN (unequal to itself)
        return None
    grid = q_coords.view(M // W, W, 2)
    qy, qx = grid[:, 0, 0], grid[0, :, 1]
    if torch.equal(grid[..., 0], qy[:, None].expand_as(grid[..., 0])) and \
            torch.equal(grid[..., 1], qx[None, :].expand_as(grid[..., 1])):
        return qy, qx
    return None


def worthwhile(W: int, table_width: int) -> bool:
    """Whether the two-step bias is cheaper than ``grid_sample`` for maps ``W`` wide: its
    first step is ``~(Tw / 2 + 2) / W`` of the bias's size."""
    return W >= table_width


class SeparableBias:
    """Bias and its gradients for query rows ``[i0, i1)`` in the ``(heads, B, Mc, Ns)``
    layout of the chunked attention (queries row-major).

    Args:
        table: ``(g, h/g, Th, Tw)`` in the accumulation dtype.
        pos: ``(B, g, Ns, 2)`` normalised ``(y, x)`` key positions, accumulation dtype.
        qy, qx: the query grid's ``(H,)`` and ``(W,)`` coordinates.
    """

    def __init__(self, table: torch.Tensor, pos: torch.Tensor, qy: torch.Tensor,
                 qx: torch.Tensor):
        g, hg, th, tw = table.shape
        B, _, Ns, _ = pos.shape
        self.g, self.hg, self.th, self.tw, self.B, self.Ns = g, hg, th, tw, B, Ns
        self.H, self.W = qy.numel(), qx.numel()
        dev = table.device
        tp = F.pad(table, (PAD, PAD, PAD, PAD + 1))        # one more zero row for y0 + 1
        self.thp, self.twp = th + 2 * PAD + 1, tw + 2 * PAD
        # the table and its y-slope T[y + 1, x] - T[y, x], flat, as (B, g, h/g, L) views
        tdy = torch.zeros_like(tp)
        tdy[..., :-1, :] = tp[..., 1:, :] - tp[..., :-1, :]
        shape = (B, g, hg, self.thp * self.twp)
        self.t0 = tp.reshape(1, g, hg, -1).expand(shape)
        self.tdy = tdy.reshape(1, g, hg, -1).expand(shape)
        py, px = pos[..., 0, None], pos[..., 1, None]                       # (B, g, Ns, 1)
        uy = ((qy - py) * 0.5 + 1) * ((th - 1) / 2)                         # (B, g, Ns, H)
        ux = ((qx - px) * 0.5 + 1) * ((tw - 1) / 2)                         # (B, g, Ns, W)
        y0f, x0f = uy.floor(), ux.floor()
        self.fy = (uy - y0f).transpose(-1, -2).contiguous()                 # (B, g, H, Ns)
        self.fx = (ux - x0f).transpose(-1, -2).reshape(B, g, 1, 1, -1)      # (.., W * Ns)
        y0 = y0f.long().clamp_(-PAD, th).transpose(-1, -2)                  # (B, g, H, Ns)
        x0 = x0f.long().clamp_(-PAD, tw).transpose(-1, -2)                  # (B, g, W, Ns)
        xs = x0.amin(2, keepdim=True)                                       # (B, g, 1, Ns)
        xrel = x0 - xs
        self.xw = int(xrel.max()) + 2
        keys = torch.arange(Ns, device=dev)
        # flat index of R[i, xrel, k] within one row's (Xw, Ns) block: shared by rows, heads
        self.ix = (xrel * Ns + keys).reshape(B, g, 1, 1, self.W * Ns)
        # padded table column of each key's window column (clamped into the zero padding),
        # and the padded row offset of each (query row, key)
        cols = xs + PAD + torch.arange(self.xw, device=dev)[:, None]          # (B, g, Xw, Ns)
        self.cols = cols.clamp_(max=self.twp - 1)
        self.rows = ((y0 + PAD) * self.twp).contiguous()                     # (B, g, H, Ns)
        self.dtable = None
        self.dpos = None

    def _rows(self, i0, i1):
        """``R`` of query rows ``[i0, i1)``, ``(B, g, h/g, Hc, Xw * Ns)``, the gathered
        y-slope of the table, and the flat table index used."""
        B, g, hg, Ns, xw = self.B, self.g, self.hg, self.Ns, self.xw
        hc = i1 - i0
        idx = (self.rows[:, :, i0:i1, None] + self.cols[:, :, None]).reshape(B, g, 1, -1)
        idx = idx.expand(B, g, hg, -1)
        r = torch.gather(self.t0, 3, idx)
        sy = torch.gather(self.tdy, 3, idx)
        r.view(B, g, hg, hc, xw, Ns).addcmul_(self.fy[:, :, None, i0:i1, None],
                                              sy.view(B, g, hg, hc, xw, Ns))
        return r.view(B, g, hg, hc, xw * Ns), sy, idx

    def _layout(self, t, i0, i1):
        """``(h, B, Mc, Ns)`` as the ``(B, g, h/g, Hc, W * Ns)`` view the steps use."""
        return t.view(self.g, self.hg, self.B, (i1 - i0) * self.W, self.Ns).permute(
            2, 0, 1, 3, 4).view(self.B, self.g, self.hg, i1 - i0, self.W * self.Ns)

    def forward(self, i0: int, i1: int, dtype: torch.dtype, keep_rows: bool = False):
        """``(bias (h, B, Mc, Ns), saved)``; ``saved`` is what :meth:`backward` needs: the
        bias's x-slope, and with ``keep_rows`` (a forward pass recomputed for the backward)
        also the y-step's gathered slope and index, so that it does not gather them again."""
        B, g, hg, Ns, xw = self.B, self.g, self.hg, self.Ns, self.xw
        hc = i1 - i0
        r, sy, idx = self._rows(i0, i1)
        # x-slope R[x + 1] - R[x] (zero in the last window column, never the left corner)
        dr = torch.empty_like(r).view(B, g, hg, hc, xw, Ns)
        r6 = r.view(B, g, hg, hc, xw, Ns)
        torch.sub(r6[..., 1:, :], r6[..., :-1, :], out=dr[..., :-1, :])
        dr[..., -1, :] = 0
        shape = (g * hg, B, hc * self.W, Ns)
        bias = torch.empty(shape, dtype=dtype, device=r.device)
        slope = torch.empty(shape, dtype=dtype, device=r.device)
        b5, s5 = self._layout(bias, i0, i1), self._layout(slope, i0, i1)
        ix = self.ix.expand(B, g, hg, hc, -1)
        torch.gather(r, 4, ix, out=b5)
        torch.gather(dr.view(r.shape), 4, ix, out=s5)
        b5.addcmul_(self.fx, s5)
        return bias, ((slope, sy, idx) if keep_rows else (slope,))

    def backward(self, i0: int, i1: int, ds: torch.Tensor, saved, need_table: bool,
                 need_pos: bool) -> None:
        """Accumulate the gradients of the table and the positions from ``ds``
        ``(h, B, Mc, Ns)`` of query rows ``[i0, i1)``."""
        B, g, hg, Ns, xw, W = self.B, self.g, self.hg, self.Ns, self.xw, self.W
        hc = i1 - i0
        if self.dtable is None:
            self.dtable = torch.zeros(B, g, hg, self.thp * self.twp, dtype=ds.dtype,
                                      device=ds.device)
            self.dpos = torch.zeros(B, g, Ns, 2, dtype=ds.dtype, device=ds.device)
        d = self._layout(ds, i0, i1)
        if need_pos:
            prod = (d * self._layout(saved[0], i0, i1)).unflatten(-1, (W, Ns))
            self.dpos[..., 1] += prod.sum((2, 3, 4)) * (-(self.tw - 1) / 4)
        # adjoint of the x interpolation: dR[x0] += (1 - fx) d, dR[x0 + 1] += fx d, as
        # scatters of d and fx * d at x0 and one shift of the second
        ix = self.ix.expand(B, g, hg, hc, -1)
        s0 = torch.zeros(B, g, hg, hc, xw * Ns, dtype=ds.dtype, device=ds.device)
        s1 = torch.zeros_like(s0)
        s0.scatter_add_(4, ix, d)
        s1.scatter_add_(4, ix, d * self.fx)
        dr = s0.sub_(s1).view(B, g, hg, hc, xw, Ns)
        dr[..., 1:, :] += s1.view(B, g, hg, hc, xw, Ns)[..., :-1, :]
        _, sy, idx = saved if len(saved) == 3 else self._rows(i0, i1)
        dr = dr.view(B, g, hg, hc, xw, Ns)
        if need_pos:
            prod = dr * sy.view(dr.shape)
            self.dpos[..., 0] += prod.sum((2, 3, 4)) * (-(self.th - 1) / 4)
        if need_table:
            # adjoint of the y interpolation, the same way: one flat row (twp cells) down
            r1 = (dr * self.fy[:, :, None, i0:i1, None]).view(B, g, hg, -1)
            self.dtable.scatter_add_(3, idx, dr.view(B, g, hg, -1).sub(r1))
            shifted = torch.zeros_like(self.dtable)
            shifted.scatter_add_(3, idx, r1)
            self.dtable[..., self.twp:] += shifted[..., :-self.twp]

    def grads(self):
        """``(table gradient (g, h/g, Th, Tw), position gradient (B, g, Ns, 2))``."""
        if self.dtable is None:
            return None, None
        tab = self.dtable.sum(0).view(self.g, self.hg, self.thp, self.twp)
        return tab[..., PAD:PAD + self.th, PAD:PAD + self.tw], self.dpos
