"""Deformable attention chunked over queries, with the deformable relative position bias.

The reference (:func:`.deformable.dmha_reference`) materialises, for
all ``M`` queries at once, the ``(B, g, M, Ns, 2)`` sampling grid of the bias, its flipped copy,
a ``B``-fold copy of ``rpe_table``, the ``(B, heads, M, Ns)`` bias, the logits, their sum and the
probabilities, and autograd keeps most of them for the backward pass. At 800x1344 input that is
several GiB per block in stage 0 (``M = 67200`` queries against ``Ns = 1050`` keys).

This path processes ``M`` in chunks of queries so that only chunk-sized temporaries exist:

* the bias of a chunk: for queries on a grid at least as wide as the table (detection and
  segmentation inputs), two 1-D interpolations of the table (:mod:`.deformable_bias_separable`,
  about half the time of ``grid_sample`` forward and backward); otherwise one ``grid_sample``
  of the (un-copied) table of each offset group, with the batch folded into the grid's rows
  (``(g, B*Mc, Ns, 2)``), so its values are exactly the reference's (same op, same
  coordinates). ATen's CPU ``grid_sample`` uses one thread per batch entry: with fewer offset
  groups than threads the rows are split over more entries;
* logits, softmax and the weighted sum follow per chunk, in ``(heads, B)`` batch order so that
  the bias needs no permute; one ``baddbmm`` adds ``scale * q k^T`` into the bias in place.
  Where the forward pass keeps no probabilities (inference, and training calls too large to
  keep them) and the inputs are float32/float64 on CPU, ATen's fused attention kernel
  (torch >= 2.2) takes the chunk's bias as its additive mask and does all three in cache;
* the backward pass is a custom ``autograd.Function``: it recomputes each chunk's
  probabilities (unless they were small enough to keep, see :data:`SAVE_PROBS_BYTES`) and
  applies the softmax-attention gradient formulas, then the bias's own backward for the
  gradients of ``rpe_table`` and of the sampling positions. Peak extra memory is a few chunks.

Half precision (fp16/bf16 inputs, e.g. under autocast): the matmuls run in the inputs' dtype,
the bias, the softmax and all accumulations in float32; gradients are returned in the
inputs' dtypes. The output's memory layout follows the queries' (NCHW or channels_last maps),
so the module's merge of heads back into a map is a view.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .autocast import accumulation_dtype, autocast_off
from .choice import common_refusal, refuse
from .deformable_bias_separable import SeparableBias, tensor_grid, worthwhile

#: Elements of a chunk's ``(heads, B, Mc, Ns)`` logits (float32: 8 MiB). Temporaries of a
#: chunk are a small multiple of this.
CHUNK_ELEMS = 1 << 21
#: Probabilities and bias sampling grids of the whole call up to this size are kept for the
#: backward pass (classification sizes); above it they are recomputed chunk by chunk.
SAVE_PROBS_BYTES = 32 << 20

#: ATen's fused CPU attention (torch >= 2.2): logits, bias, softmax and the weighted sum in
#: one pass over query x key tiles that stay in cache; returns the output and log-sum-exp.
_FLASH_CPU = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)


def _chunk_rows(B: int, nh: int, M: int, Ns: int, chunk: Optional[int], multiple: int = 1
                ) -> int:
    if chunk:
        return max(1, min(M, int(chunk)))
    rows = max(1, min(M, CHUNK_ELEMS // max(1, B * nh * Ns)))
    if rows < M and rows > multiple:  # B * rows divisible by the grid_sample split
        rows -= rows % multiple
    return rows


class _Plan:
    """Tensors shared by forward and backward, in the layouts the chunks use."""

    def __init__(self, q, k, v, pos, q_coords, rpe_table, scale, chunk, bias_method=None):
        B, nh, M, c = q.shape
        Ns = k.shape[2]
        g = pos.shape[1]
        if nh % g:
            raise ValueError(f'{nh} heads are not divisible by {g} offset groups')
        self.B, self.nh, self.M, self.c, self.Ns, self.g = B, nh, M, c, Ns, g
        self.scale = scale
        self.dt = q.dtype
        # float32 for half inputs, else the inputs' own dtype (float64 stays exact).
        self.acc = accumulation_dtype(q.dtype)
        self.token_major = q.stride(-1) == 1 and M > 1 and c > 1
        # (h, B, *, c) contiguous copies (the size of the inputs, small next to the logits):
        # batched matmuls on the modules' strided views are several times slower
        self.q = q.transpose(0, 1).contiguous()                       # (h, B, M, c)
        self.k = k.to(self.dt).transpose(0, 1).contiguous()           # (h, B, Ns, c)
        self.v = v.to(self.dt).transpose(0, 1).contiguous()
        self.use_bias = rpe_table is not None
        self.sep = None
        self.split = 1
        if self.use_bias:
            th, tw = rpe_table.shape[1:]
            self.table = rpe_table.to(self.acc).reshape(g, nh // g, th, tw)
            if bias_method not in (None, 'separable', 'grid'):
                raise ValueError(f"bias_method must be 'separable', 'grid' or None, got "
                                 f'{bias_method!r}')
            grid = None if bias_method == 'grid' else tensor_grid(q_coords)
            if bias_method == 'separable' and grid is None:
                raise ValueError('the separable bias needs query coordinates on a grid')
            if grid is not None and (bias_method == 'separable' or bias_method is None and
                                     worthwhile(grid[1].numel(), tw)):
                # queries on a grid wider than the table: the separable bias
                qy, qx = (t.to(self.acc) for t in grid)
                self.W = qx.numel()
                self.sep = SeparableBias(self.table, pos.to(self.acc), qy, qx)
            else:
                # Coordinates in grid_sample's (x, y) order and halved, once, on the small
                # tensors: q/2 - pos/2 equals the reference's (q - pos) * 0.5 exactly (halving
                # is exact in binary floating point).
                self.pos = pos.to(self.acc).flip(-1).transpose(0, 1) * 0.5      # (g, B, Ns, 2)
                self.pos_flat = self.pos.reshape(g, B, 1, Ns * 2)
                self.q_coords = q_coords.to(self.acc).flip(-1) * 0.5              # (M, 2)
                # ATen's CPU grid_sample runs one thread per batch entry (here: per offset
                # group). With fewer groups than threads, the rows of each chunk are split
                # over `split` batch entries that see the same (tiny) table, and the table
                # gradients are summed back.
                threads = torch.get_num_threads() if q.device.type == 'cpu' else 1
                self.split = -(-threads // g) if g < threads else 1
                if self.split > 1:
                    self.table_split = self.table.unsqueeze(1).expand(
                        g, self.split, nh // g, th, tw).reshape(g * self.split, nh // g, th, tw)
        self.rows = _chunk_rows(B, nh, M, Ns, chunk, self.split)
        if self.sep is not None:  # whole query rows
            self.rows = max(1, self.rows // self.W) * self.W
        self.dtable = self.dpos = None

    def chunks(self):
        for m0 in range(0, self.M, self.rows):
            yield m0, min(self.M, m0 + self.rows)

    def grid(self, m0, m1):
        g, B, Ns = self.g, self.B, self.Ns
        # (Mc, Ns*2) query coordinates repeated over keys, then one subtraction with a long
        # contiguous inner dimension (2-4x faster than broadcasting over a last dim of 2)
        q_rep = self.q_coords[m0:m1].repeat(1, Ns)
        disp = self.pos.new_empty(g, B, m1 - m0, Ns * 2)
        torch.sub(q_rep, self.pos_flat, out=disp)
        return disp.view(g, B * (m1 - m0), Ns, 2)

    def _split(self, rows):
        return self.split if self.split > 1 and rows % self.split == 0 else 1

    def bias(self, grid):
        """``(g, h/g, B*Mc, Ns)`` bias sampled from the table at ``grid``."""
        g, rows, hg = self.g, grid.shape[1], self.nh // self.g
        p = self._split(rows)
        if p == 1:
            return F.grid_sample(self.table, grid, mode='bilinear', padding_mode='zeros',
                                 align_corners=True)
        out = F.grid_sample(self.table_split, grid.view(g * p, rows // p, self.Ns, 2),
                            mode='bilinear', padding_mode='zeros', align_corners=True)
        return out.view(g, p, hg, rows // p, self.Ns).transpose(1, 2).contiguous().view(
            g, hg, rows, self.Ns)

    def bias_backward(self, ds, grid, need_table, need_pos):
        """Gradients of the table ``(g, h/g, Th, Tw)`` and of ``grid`` from ``ds``
        ``(g, h/g, B*Mc, Ns)``."""
        g, rows, hg = self.g, grid.shape[1], self.nh // self.g
        p = self._split(rows)
        mask = [bool(need_table), bool(need_pos)]
        if p == 1:
            return torch.ops.aten.grid_sampler_2d_backward(ds, self.table, grid, 0, 0, True,
                                                           mask)
        ds = ds.view(g, hg, p, rows // p, self.Ns).transpose(1, 2).reshape(
            g * p, hg, rows // p, self.Ns)
        d_tab, d_grid = torch.ops.aten.grid_sampler_2d_backward(
            ds, self.table_split, grid.view(g * p, rows // p, self.Ns, 2), 0, 0, True, mask)
        if need_table:
            d_tab = d_tab.view(g, p, hg, *d_tab.shape[2:]).sum(1)
        if need_pos:
            d_grid = d_grid.view(grid.shape)
        return d_tab, d_grid

    def bias_chunk(self, m0, m1, for_backward=False):
        """``(bias (h, B, Mc, Ns), saved)`` for queries ``m0:m1``; ``saved`` is what
        :meth:`bias_chunk_backward` needs (more of it ``for_backward``)."""
        if self.sep is not None:
            return self.sep.forward(m0 // self.W, m1 // self.W, self.acc, for_backward)
        grid = self.grid(m0, m1)
        bias = self.bias(grid)                                    # (g, h/g, B*Mc, Ns)
        return bias.view(self.nh, self.B, m1 - m0, self.Ns), grid

    def bias_chunk_backward(self, m0, m1, ds, saved, need_table, need_pos):
        """Accumulate the table and position gradients of queries ``m0:m1`` from ``ds``
        ``(h, B, Mc, Ns)``."""
        if self.sep is not None:
            self.sep.backward(m0 // self.W, m1 // self.W, ds, saved, need_table, need_pos)
            return
        g, Mc = self.g, m1 - m0
        d_tab, d_grid = self.bias_backward(ds.view(g, self.nh // g, self.B * Mc, self.Ns),
                                           saved, need_table, need_pos)
        if need_table:
            self.dtable = d_tab if self.dtable is None else self.dtable.add_(d_tab)
        if need_pos:
            d_pos = d_grid.view(g, self.B, Mc, self.Ns, 2).sum(2)
            self.dpos = d_pos if self.dpos is None else self.dpos.add_(d_pos)

    def bias_grads(self):
        """``(table gradient (g, h/g, Th, Tw), position gradient (B, g, Ns, 2) (y, x))``."""
        if self.sep is not None:
            return self.sep.grads()
        dpos = None
        if self.dpos is not None:
            # grid = (q_coords - pos) / 2 in flipped (x, y) order
            dpos = (self.dpos * -0.5).flip(-1).transpose(0, 1)
        return self.dtable, dpos

    def probs(self, m0, m1, for_backward=False):
        """Softmax probabilities of queries ``m0:m1`` ``(h, B, Mc, Ns)``,
        accumulation dtype, and what the bias backward needs (None without bias)."""
        q = self.q[:, :, m0:m1]
        saved = None
        if self.use_bias:
            bias, saved = self.bias_chunk(m0, m1, for_backward)        # (h, B, Mc, Ns)
            if self.dt == self.acc:
                # one GEMM: bias += scale * q k^T (no separate scale and add passes)
                hb, mc = self.nh * self.B, m1 - m0
                logits = bias.view(hb, mc, self.Ns).baddbmm_(
                    q.reshape(hb, mc, self.c), self.k.reshape(hb, self.Ns, self.c)
                    .transpose(-1, -2), alpha=self.scale).view(self.nh, self.B, mc, self.Ns)
            else:
                logits = torch.matmul(q, self.k.transpose(-1, -2)).to(self.acc)
                logits = logits.mul_(self.scale).add_(bias)
        else:
            logits = torch.matmul(q, self.k.transpose(-1, -2)).to(self.acc).mul_(self.scale)
        return torch.softmax(logits, dim=-1), saved

    def fused(self) -> bool:
        """Whether :meth:`attend` can compute the chunks: the CPU's fused attention kernel,
        float32/float64 inputs (half inputs keep the float32 softmax of :meth:`probs`), no
        empty dimension (the kernel divides by the batch and key counts: SIGFPE)."""
        return (_FLASH_CPU is not None and self.q.device.type == 'cpu'
                and self.dt == self.acc and self.dt in (torch.float32, torch.float64)
                and self.q.numel() > 0 and self.k.numel() > 0)

    def attend(self, m0, m1):
        """``softmax(scale q k^T + bias) v`` of queries ``m0:m1`` ``(h, B, Mc, c)`` through
        the fused kernel: the bias is its additive mask, so the logits and probabilities are
        never written out."""
        bias = self.bias_chunk(m0, m1)[0] if self.use_bias else None
        return _FLASH_CPU(self.q[:, :, m0:m1], self.k, self.v, attn_mask=bias,
                          scale=self.scale)[0]


def _use_fused(plan: _Plan, keep_probs: bool, fused: Optional[bool]) -> bool:
    """Whether the forward chunks go through ATen's fused kernel: ``fused=None`` where it
    can (no probabilities kept, :meth:`_Plan.fused`), ``False`` never, ``True`` required (a
    ``ValueError`` saying why it cannot)."""
    if fused not in (None, True, False):
        raise ValueError(f'fused must be True, False or None, got {fused!r}')
    can = not keep_probs and plan.fused()
    if fused and not can:
        why = ('this torch has no fused CPU attention kernel' if _FLASH_CPU is None else
               'the probabilities are kept for the backward pass' if keep_probs else
               f'it takes float32/float64 CPU tensors without empty dimensions, got '
               f'{plan.dt} on {plan.q.device.type} with q {tuple(plan.q.shape)}')
        raise ValueError(f'dmha_chunked(fused=True): the fused kernel cannot run this call: {why}')
    return can if fused is None else fused


def _forward(plan: _Plan, keep_probs: bool, fused: Optional[bool] = None):
    B, nh, M, c = plan.B, plan.nh, plan.M, plan.c
    # The output's memory follows the queries' so that the module's merge of heads back to a
    # map is free: (B, heads, c, M) for NCHW maps, (B, M, heads, c) for channels_last ones.
    if plan.token_major:
        out = torch.empty(B, M, nh, c, dtype=plan.dt, device=plan.q.device).permute(0, 2, 1, 3)
    else:
        out = torch.empty(B, nh, c, M, dtype=plan.dt, device=plan.q.device).transpose(-1, -2)
    out_hb = out.transpose(0, 1)
    kept = []
    fused = _use_fused(plan, keep_probs, fused)
    for m0, m1 in plan.chunks():
        if fused:
            out_hb[:, :, m0:m1] = plan.attend(m0, m1)
            continue
        p, saved = plan.probs(m0, m1)
        out_hb[:, :, m0:m1] = torch.matmul(p.to(plan.dt), plan.v)
        if keep_probs:
            # one tensor per chunk for the bias: the grid, or the separable bias's x-slope
            kept.append((p, saved[0] if isinstance(saved, tuple) else saved))
    return out, kept


class _DMHAChunked(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, pos, q_coords, rpe_table, scale, chunk, bias_method, fused):
        with autocast_off(q):
            plan = _Plan(q, k, v, pos, q_coords, rpe_table, scale, chunk, bias_method)
            # kept per chunk: the probabilities and the bias's saved tensor (the separable
            # bias's y-slope, or the sampling grid)
            bias_saved = 0 if not plan.use_bias else plan.nh if plan.sep else 2 * plan.g
            nbytes = 4 * plan.B * plan.M * plan.Ns * (plan.nh + bias_saved)
            out, kept = _forward(plan, keep_probs=nbytes <= SAVE_PROBS_BYTES, fused=fused)
        ctx.plan_args = (scale, chunk, bias_method)
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, pos.dtype,
                      None if rpe_table is None else rpe_table.dtype)
        # The kept probabilities and grids go through save_for_backward like every input, so
        # saved-tensor hooks see them: activation checkpointing (with_cp) frees them, offloading
        # hooks move them.
        ctx.save_for_backward(q, k, v, pos, q_coords, rpe_table, out,
                              *(t for pair in kept for t in pair))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, pos, q_coords, rpe_table, out, *flat_kept = ctx.saved_tensors
        kept = list(zip(flat_kept[0::2], flat_kept[1::2]))
        scale, chunk, bias_method = ctx.plan_args
        need_q, need_k, need_v, need_pos, _, need_table = ctx.needs_input_grad[:6]
        with autocast_off(q):
            plan = _Plan(q, k, v, pos, q_coords, rpe_table, scale, chunk, bias_method)
            dt, f32 = plan.dt, plan.acc
            # D_i = sum_j P_ij dP_ij = <dout_i, out_i>
            delta = (dout.to(f32) * out.to(f32)).sum(-1).transpose(0, 1)   # (h, B, M)
            dout_hb = dout.to(dt).transpose(0, 1)                        # (h, B, M, c)
            dq = torch.empty_like(plan.q) if need_q else None
            dk = torch.zeros(plan.k.shape, dtype=f32, device=q.device) if need_k else None
            dv = torch.zeros(plan.v.shape, dtype=f32, device=q.device) if need_v else None
            bias_grads = plan.use_bias and (need_pos or need_table)
            for i, (m0, m1) in enumerate(plan.chunks()):
                if kept:
                    p, saved = kept[i]
                    saved = (saved,) if plan.sep is not None else saved
                else:
                    p, saved = plan.probs(m0, m1, for_backward=True)
                do = dout_hb[:, :, m0:m1]
                if need_v:
                    dv += torch.matmul(p.to(dt).transpose(-1, -2), do)
                ds = torch.matmul(do, plan.v.transpose(-1, -2)).to(f32)
                ds.sub_(delta[:, :, m0:m1, None]).mul_(p)          # dS = P * (dP - D)
                del p
                ds_dt = ds.to(dt)
                if need_q:
                    dq[:, :, m0:m1] = torch.matmul(ds_dt, plan.k)
                if need_k:
                    dk += torch.matmul(ds_dt.transpose(-1, -2), plan.q[:, :, m0:m1])
                if bias_grads:
                    plan.bias_chunk_backward(m0, m1, ds, saved, need_table, need_pos)
            del kept, flat_kept
            dtypes = ctx.dtypes
            grads = [None] * 10
            if need_q:
                grads[0] = (dq * scale).transpose(0, 1).to(dtypes[0])
            if need_k:
                grads[1] = (dk * scale).transpose(0, 1).to(dtypes[1])
            if need_v:
                grads[2] = dv.transpose(0, 1).to(dtypes[2])
            if bias_grads:
                dtable, dpos = plan.bias_grads()
                if need_pos:
                    grads[3] = dpos.to(dtypes[3])
                if need_table:
                    grads[5] = dtable.reshape(rpe_table.shape).to(dtypes[4])
        return tuple(grads)


def dmha_chunked(q, k, v, pos, q_coords, rpe_table, scale: float, chunk: int = None,
                 bias_method: Optional[str] = None, fused: Optional[bool] = None):
    """The result of ``dmha_reference`` (no dropout, no probabilities).

    ``chunk``: queries per chunk (default: :data:`CHUNK_ELEMS` logits per chunk; whole query
    rows with the separable bias). ``bias_method``: ``'separable'`` (queries on a grid, see
    :mod:`.deformable_bias_separable`), ``'grid'`` (one ``grid_sample`` per chunk, any query
    coordinates) or None: separable where the queries form a grid at least as wide as the
    table, else grid. ``fused``: the forward chunks through ATen's fused CPU attention kernel
    (None: wherever it can run, i.e. CPU float32/float64 calls that keep no probabilities for
    the backward pass; False: never, the explicit softmax of :meth:`_Plan.probs`; True:
    required, a ``ValueError`` naming why where it cannot run).
    """
    tensors = (q, k, v, pos, rpe_table)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _DMHAChunked.apply(q, k, v, pos, q_coords, rpe_table, scale, chunk, bias_method,
                                  fused)
    with autocast_off(q):
        plan = _Plan(q, k, v, pos, q_coords, rpe_table, scale, chunk, bias_method)
        return _forward(plan, keep_probs=False, fused=fused)[0]


def can_run_dmha_chunked(q, k, v, pos, q_coords, rpe_table, scale=None, attn_drop: float = 0.0,
                         training: bool = False, return_attn: bool = False,
                         raise_error: bool = False) -> bool:
    """Whether :func:`dmha_chunked` computes this call exactly; if not, the reason is logged at
    debug level (or raised as a ``ValueError`` with ``raise_error``)."""
    reason = common_refusal(q, k, v, attn_drop, training, return_attn,
                            'full (B, heads, M, Ns)')
    if reason is None:
        if q_coords.requires_grad:
            reason = 'no gradient with respect to the query coordinates'
        elif q.device.type == 'meta':
            reason = 'meta tensors (shape-only runs, e.g. FLOP counting) use the reference'
        elif q.dim() != 4 or pos.dim() != 4 or q.shape[1] % pos.shape[1]:
            reason = (f'unexpected shapes q {tuple(q.shape)}, pos {tuple(pos.shape)} (the '
                      f'reference reports the error)')
        else:
            return True
    return refuse('deformable', 'chunked', reason, raise_error)
