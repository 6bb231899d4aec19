"""GPU acceptance run: every fast path against its reference, and DAT-T++ against Swin-T.

One script, sized to finish in about 8 minutes on one H100/H200 with that machine's own
PyTorch, so that a short device lease yields the GPU tables the CPU-only development machine
cannot produce. It needs only torch, numpy and (for Swin-T) torchvision besides the packages
that ``benchmarks/prepare_gpu_wheels.sh`` carries as pure-Python wheels (mmengine and its
small dependencies, mmcv-lite, mmdet); ``benchmarks/gpu_acceptance.sh`` installs those and
puts the repository on ``PYTHONPATH``.

Steps, each under its own time limit (a share of ``--budget``; time a step leaves unused goes
to the later ones). Tables are rewritten after every row, so a step cut short by its limit,
or a run killed from outside, still leaves every finished row on disk:

1. ``fast_paths.{md,csv}``: each fast path against the reference, forward (no grad) and
   forward + backward, in float32 (TF32 off), under bf16 autocast and under fp16 autocast:
   neighbourhood attention (``tiled`` vs ``reference``) and deformable attention
   (``chunked`` vs ``reference``, and ``chunked-grid``: the chunked path with the
   ``grid_sample`` bias, to time the separable bias against it) as functions at the DAT-T++
   stage shapes, the ConvFFN
   whose GELU is recomputed in the backward pass vs the plain modules, and the whole DAT-T++
   backbone (automatic choice vs ``attn_backend='reference'`` and
   ``fused=False``) at 224x224 batch 64 and 800x1344 batch 2 and their stage
   shapes. Per row: the largest absolute difference, the worst
   norm-relative difference over the output and every gradient, the tolerance and pass/fail,
   median time of both paths over interleaved rounds, and peak memory.
2. ``backbones.{md,csv}``: DAT-T++ (automatic fast paths) against mmdet's Swin-T at 224x224
   batch 64 and 800x1344 batch 2, inference and train step under bf16 autocast: median time,
   time relative to Swin-T (median of the per-round ratios), throughput and peak memory.
3. ``mmcv_ops.md``: mmcv's compiled ops on the GPU (nms and roi_align against torchvision's),
   only where an mmcv build with ops was carried; otherwise one line says why the step was
   skipped.

``summary.md`` holds the machine and package versions, a count of each table's statuses and
the verdict; the exit status is 1 when a comparison failed or raised an error.

Tolerances are those of the CPU tests (tests/test_fast_paths.py): float32, norm-relative error
of the output and of every gradient at most ``RTOL32`` against the reference on the same
inputs. Half precision, functions (attention fed half q/k/v, as under autocast in the
modules): at most ``RTOL_AMP`` against the float32 reference on the same (rounded) values.
Half precision, modules and the backbone: each tensor within ``RTOL_AMP`` of the float32
reference, or no worse than ``REF_AMP_SLACK`` times the reference path's own error under the
same autocast (gradients through the half-precision convolutions of the offset branch are a
few percent off float32 on either path: the precision bounds them, not the fast path). The
ConvFFN's recompute function refuses autocast (its rows say so); it is checked with the module
and input in bf16/fp16 instead. The whole backbone is judged on each output map and on all
parameter gradients together (see :class:`BackboneCase` for why; the worst single gradient is
named in the row). Rows of the backbone and the ConvFFN also fail when the automatic choice
did not take the fast path (the note names what ran).

Timing: ``torch.cuda.Event`` pairs around ``reps`` calls (chosen so a measurement lasts about
``--target-ms``), after a warm-up call; the rows being compared alternate within each of
``--rounds`` rounds, and a row's time is the median over rounds. Peak memory: bytes PyTorch
allocates during one call beyond what is allocated before it
(``torch.cuda.max_memory_allocated``).

``--dry-run`` runs every step at tiny sizes on the CPU (float32 and bf16 autocast; fp16 rows
say ``skipped (CPU dry run)``; no memory figures), to check the script without a GPU.

    bash benchmarks/gpu_acceptance.sh                  # on the GPU machine, tables in $OUT
    python -m benchmarks.gpu_acceptance --dry-run --out work_dirs/gpu_acceptance_dry
"""
import argparse
import contextlib
import copy
import csv
import gc
import glob
import importlib
import importlib.util
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
import types
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.bench_attention import BACKENDS, make_inputs, stage_shapes
from benchmarks.bench_backbone import SWIN, step_fn
from benchmarks.common import fmt_mib, fmt_ms, rel_err

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The CPU tests' bounds (tests/test_fast_paths.py RTOL32, RTOL_AMP and the 1.25 of
#: test_modules_under_autocast_match_float32_reference); tests/test_gpu_acceptance.py checks
#: that they stay equal.
RTOL32 = 1e-5
RTOL_AMP = 1e-2
REF_AMP_SLACK = 1.25

ARCH = 'tiny++'
GPU_FAST_PATH_CASES = ['224x224x64', '800x1344x2']
GPU_BACKBONE_CASES = ['224x224x64:infer', '224x224x64:train', '800x1344x2:infer',
                      '800x1344x2:train']
# 64x64: the smallest input whose deformable blocks all sample more than one key (with a
# single key the softmax is constant and the key gradients are rounding noise)
DRY_FAST_PATH_CASES = ['64x64x1']
DRY_BACKBONE_CASES = ['64x64x1:infer', '64x64x1:train', '32x64x1:infer', '32x64x1:train']
#: Dry run: DAT-T++ and Swin-T with two blocks per stage (same block kinds, widths, heads and
#: stage shapes, a third of the blocks), to keep the CPU check short.
DRY_DEPTHS = (2, 2, 2, 2)
#: Shares of the budget per step (time a step leaves unused goes to the later ones).
STEP_SHARES = {'fast_paths': 0.58, 'backbones': 0.37, 'mmcv_ops': 0.05}

AUTOCAST = {'fp32': None, 'bf16-autocast': torch.bfloat16, 'fp16-autocast': torch.float16}
#: The ConvFFN recompute path refuses autocast, so it is also checked with half weights.
HALF_WEIGHTS = {'bf16': torch.bfloat16, 'fp16': torch.float16}
SKIPPED_CPU = 'skipped (CPU dry run)'


# -- time limits ---------------------------------------------------------------------------
class StepTimeout(BaseException):
    """Raised by SIGALRM when a step's time is up (a BaseException, so that the per-row
    ``except Exception`` that records a row's error does not swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the body with :class:`StepTimeout` after ``seconds`` (checked between Python
    bytecodes: a single long kernel finishes first)."""
    def expire(signum, frame):
        raise StepTimeout()
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- output tables -------------------------------------------------------------------------
class Table:
    """Rows written to ``<stem>.md`` and (``with_csv``) ``<stem>.csv`` after every change."""

    def __init__(self, out_dir, stem, title, columns, intro='', with_csv=True):
        self.csv_path = os.path.join(out_dir, stem + '.csv') if with_csv else None
        self.md_path = os.path.join(out_dir, stem + '.md')
        self.title, self.columns, self.intro = title, columns, intro
        self.rows = []
        self.notes = []
        self.write()

    def add(self, row: dict):
        self.rows.append({c: row.get(c, '') for c in self.columns})
        self.write()

    def note(self, line: str):
        self.notes.append(line)
        self.write()

    def write(self):
        if self.csv_path:
            with open(self.csv_path, 'w', newline='') as f:
                w = csv.DictWriter(f, self.columns)
                w.writeheader()
                w.writerows(self.rows)
        lines = [f'# {self.title}', '']
        if self.intro:
            lines += [self.intro, '']
        lines.append('| ' + ' | '.join(self.columns) + ' |')
        lines.append('|' + '|'.join('---' for _ in self.columns) + '|')
        for r in self.rows:
            lines.append('| ' + ' | '.join(str(r[c]).replace('|', '/') for c in self.columns)
                         + ' |')
        if self.notes:
            lines += [''] + [f'- {n}' for n in self.notes]
        with open(self.md_path, 'w') as f:
            f.write('\n'.join(lines) + '\n')


# -- timing and memory ---------------------------------------------------------------------
class Clock:
    """Seconds per call: CUDA events around ``reps`` calls on the GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device, target_s: float, max_reps: int = 50):
        """``target_s``: length of one measurement; 0 for one call per measurement and no
        warm-up call (the dry run, whose correctness calls already warmed up)."""
        self.cuda = device.type == 'cuda'
        self.target_s, self.max_reps = target_s, max_reps

    def measure(self, fn, reps: int = 1) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / reps
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps

    def interleaved(self, fns, rounds: int):
        """``{name: [seconds per call, one per round]}``; ``fns`` is ``[(name, fn), ...]``,
        run in turn within each round (reversed order every other round), after one warm-up
        call each that also sets how many calls one measurement takes (none with
        ``target_s`` 0)."""
        reps = {}
        for name, fn in fns:
            reps[name] = 1
            if self.target_s > 0:
                est = self.measure(fn, 1)
                reps[name] = max(1, min(self.max_reps, int(self.target_s / max(est, 1e-6))))
        times = {name: [] for name, _ in fns}
        for r in range(rounds):
            for name, fn in (fns if r % 2 == 0 else fns[::-1]):
                times[name].append(self.measure(fn, reps[name]))
        return times


def peak_bytes(fn, device: torch.device):
    """Bytes allocated during ``fn()`` beyond those allocated before (CUDA only)."""
    if device.type != 'cuda':
        return None
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak


def free_memory(device: torch.device):
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


#: torch's own TF32 settings (float32 matmuls, cuDNN convolutions), restored for step 2.
TF32_DEFAULT = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)


def set_tf32(matmul: bool, cudnn: bool = None):
    """float32 matmuls and convolutions in TF32 (True) or IEEE float32 (False)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = matmul if cudnn is None else cudnn


def autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def parse_case(case: str):
    size, _, mode = case.partition(':')
    H, W, B = (int(v) for v in size.split('x'))
    return H, W, B, mode


def dat_arch(depths=None):
    """DAT-T++'s arch, with ``depths`` blocks per stage where given (the dry run)."""
    if depths is None:
        return ARCH
    from dat_mm.models.backbones.dat_arch import ARCH_ZOO
    arch = copy.deepcopy(ARCH_ZOO[ARCH])
    for stage, depth in zip(arch['stages'], depths):
        stage['depth'] = depth
    return arch


def model_label(name, depths=None):
    return name if depths is None else f"{name} (depths {'-'.join(map(str, depths))})"


def smooth(shape, device, seed=0):
    """A smooth random map (bicubic upsampling of noise): the sampling gradients of the
    deformable offsets are well conditioned on it, as in the CPU tests."""
    B, C, H, W = shape
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(B, C, max(2, H // 4), max(2, W // 4), generator=g)
    return F.interpolate(low, size=(H, W), mode='bicubic', align_corners=True).to(device)


def randn_like_cpu(t: torch.Tensor, seed: int, dtype=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g).to(device=t.device, dtype=dtype or t.dtype)


# -- comparisons ---------------------------------------------------------------------------
def judge(names, fast, ref, ref32, rule):
    """Verdict of one comparison.

    ``ref``: the reference path in the fast path's precision; ``ref32``: the float32
    reference (``None`` in float32 rows, where ``ref`` is it). ``rule``: ``'function'`` (half
    precision within ``RTOL_AMP`` of ``ref32``) or ``'module'`` (within
    ``max(RTOL_AMP, REF_AMP_SLACK * error of ref)``).
    """
    target = ref if ref32 is None else ref32
    worst, worst_ratio, max_abs, max_abs_name, same_prec = None, -1.0, -1.0, '', 0.0
    ok = True
    for name, f, r, t in zip(names, fast, ref, target):
        finite = bool(torch.isfinite(f).all())
        err = rel_err(f.float(), t.float()) if finite else float('nan')
        same_prec = max(same_prec, rel_err(f.float(), r.float()))
        if ref32 is None:
            allowed = RTOL32
        elif rule == 'function':
            allowed = RTOL_AMP
        else:
            allowed = max(RTOL_AMP, REF_AMP_SLACK * rel_err(r.float(), t.float()))
        absdiff = (f.detach().double() - t.detach().double()).abs().max().item() \
            if f.numel() else 0.0
        if absdiff > max_abs or not finite:
            max_abs, max_abs_name = absdiff, name
        passed = finite and err <= allowed
        ok = ok and passed
        ratio = float('inf') if not finite else err / allowed
        if ratio > worst_ratio:
            worst_ratio, worst = ratio, (name, err, allowed)
    name, err, allowed = worst
    return dict(status='pass' if ok else 'FAIL', worst=name, rel=f'{err:.2e}',
                tolerance=f'{allowed:.1e}', max_abs=f'{max_abs:.2e} ({max_abs_name})',
                rel_same_precision=f'{same_prec:.2e}')


class Item:
    """One comparison row: ``fast``, ``ref`` (same precision) and, for half precision,
    ``ref32`` are callables returning ``[output, *gradients]`` (``names`` name them)."""

    def __init__(self, path, case, where, precision, mode, rule='function'):
        self.path, self.case, self.where = path, case, where
        self.precision, self.mode, self.rule = precision, mode, rule
        self.status = None      # set to skip (with the reason) instead of running
        self.note = ''
        # () -> (note, problem or None), read after the comparison (what the calls saw); a
        # problem (the fast path was not taken) fails the row
        self.note_fn = None
        # judge tensors from this index on as one (concatenated), see BackboneCase
        self.merge_from = None
        self.setup = None       # () -> (names, fast, ref, ref32)

    def row(self, **extra):
        r = dict(path=self.path, case=self.case, where=self.where, precision=self.precision,
                 mode=self.mode, note=self.note)
        r.update(extra)
        return r


def run_item(item: Item, clock: Clock, rounds: int, device: torch.device):
    names, fast, ref, ref32 = item.setup()
    vals = [fast(), ref(), None if ref32 is None else ref32()]
    detail = ''
    n = item.merge_from
    if n is not None and len(names) > n:
        target = vals[1] if vals[2] is None else vals[2]
        errs = [(rel_err(f.float(), t.float()), name)
                for name, f, t in zip(names[n:], vals[0][n:], target[n:])]
        err, name = max(errs)
        detail = f'; worst single gradient: {name} {err:.1e}'
        names = names[:n] + ['all parameter gradients']
        vals = [None if v is None else v[:n] + [torch.cat([g.float().flatten() for g in v[n:]])]
                for v in vals]
    verdict = judge(names, *vals, item.rule)
    del vals
    if item.note_fn is not None:
        item.note, problem = item.note_fn()
        if problem:
            verdict['status'] = 'FAIL'
            item.note += f' ({problem})'
    item.note += detail
    free_memory(device)
    times = clock.interleaved([('ref', ref), ('fast', fast)], rounds)
    t_ref, t_fast = statistics.median(times['ref']), statistics.median(times['fast'])
    m_ref, m_fast = peak_bytes(ref, device), peak_bytes(fast, device)
    row = item.row(**verdict, ref_ms=fmt_ms(t_ref), fast_ms=fmt_ms(t_fast),
                   speedup=f'{t_ref / t_fast:.2f}')
    if m_ref is not None:
        row.update(ref_mib=fmt_mib(m_ref), fast_mib=fmt_mib(m_fast),
                   mem_ratio=f'{m_ref / m_fast:.2f}' if m_fast else '-')
    else:
        row.update(ref_mib='-', fast_mib='-', mem_ratio='-')
    return row


# -- step 1: the items ---------------------------------------------------------------------
NA_NAMES = ['out', 'q', 'k', 'v', 'rpb']
DM_NAMES = ['out', 'q', 'k', 'v', 'pos', 'rpe_table']


def function_item(kind, case, st, B, precision, mode, device, fast=1):
    """Attention function ``kind`` at one stage shape: fast backend number ``fast`` of
    ``BACKENDS[kind]`` (its ``can_run_*`` check must accept the call) vs the reference."""
    (_, ref_fn, _), (fast_name, fast_fn, can_run) = BACKENDS[kind][0], BACKENDS[kind][fast]
    where = f"stage {st['stage']} {st['H']}x{st['W']}"
    if kind == 'deformable':
        where += f" vs {st['Hk']}x{st['Wk']} keys"
    elif min(st['H'], st['W']) < st['ks']:  # the module pads such maps to the kernel size
        where += f" padded to {max(st['H'], st['ks'])}x{max(st['W'], st['ks'])}"
    item = Item(f'{kind} ({fast_name} vs reference)', case, where, precision, mode)
    half = AUTOCAST[precision]
    grad = mode == 'fwd+bwd'

    def setup():
        args32, _ = make_inputs(kind, B, st, device, torch.float32, grad)
        args32 = list(args32)
        # q, k, v in the autocast dtype, as the modules' projections give them; the bias
        # tables and sampling positions stay float32
        if half is None:
            args = args32
        else:
            args = [a.detach().to(half).requires_grad_(grad) if i < 3 else a
                    for i, a in enumerate(args32)]
        can_run(*args, raise_error=True)
        names = NA_NAMES if kind == 'neighborhood' else DM_NAMES

        def runner(fn, inputs, amp):
            diff = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]
            gout = []

            def run():
                with autocast(device, amp):
                    if not grad:
                        with torch.no_grad():
                            return [fn(*inputs)]
                    out = fn(*inputs)
                if not gout:
                    gout.append(randn_like_cpu(out, 123, torch.float32).to(half or out.dtype))
                return [out.detach()] + list(torch.autograd.grad(out, diff,
                                                                 gout[0].to(out.dtype)))
            return run

        ref32 = None
        if half is not None:
            # the float32 reference on the same (rounded) values
            args_up = [a.detach().float().requires_grad_(grad) if i < 3 else a
                       for i, a in enumerate(args)]
            ref32 = runner(ref_fn, args_up, None)
        n = len(names) if grad else 1
        return names[:n], runner(fast_fn, args, half), runner(ref_fn, args, half), ref32
    item.setup = setup
    return item


def ffn_item(case, st, B, precision, device):
    """The ConvFFN at one stage shape, forward + backward: GELU recomputed in the backward
    pass (``fused=True``, the default) vs the plain modules (``fused=False``)."""
    from dat_mm.models.layers import ConvFFN
    dim = st['spec'].dim
    where = f"stage {st['stage']} {dim}x{st['H']}x{st['W']}"
    item = Item('ConvFFN (GELU recompute vs plain)', case, where, precision, 'fwd+bwd',
                rule='module')
    amp = AUTOCAST.get(precision)
    weights = HALF_WEIGHTS.get(precision)

    def build():
        torch.manual_seed(0)
        return ConvFFN(dim, 4).to(device), smooth((B, dim, st['H'], st['W']), device, seed=1)

    def runner(ffn, x, recompute, amp_dtype, taken=None):
        params = [p for p in ffn.parameters()]
        names = ['out', 'input'] + [n for n, _ in ffn.named_parameters()]
        gout = []

        def run():
            ffn.fused = bool(recompute)
            xin = x.detach().requires_grad_()
            with autocast(device, amp_dtype):
                out = ffn(xin)
            if taken is not None and not taken:
                taken.append(type(out.grad_fn).__name__)
            if not gout:
                gout.append(randn_like_cpu(out, 123, torch.float32).to(x.dtype))
            grads = torch.autograd.grad(out, [xin] + params, gout[0].to(out.dtype))
            return [out.detach()] + list(grads)
        return names, run

    def taken_note(taken, prefix=''):
        ok = 'GeluConv1x1' in taken[0]
        return (f'{prefix}autograd node: {taken[0]}',
                None if ok else 'the recompute function was not taken')

    if amp is not None:
        def setup_fallback():
            ffn, x = build()
            taken = []
            runner(ffn, x, True, amp, taken)[1]()
            if 'GeluConv1x1' in taken[0]:
                item.status = 'FAIL'
                item.note = f'the recompute function ran under autocast ({taken[0]})'
            else:
                item.note = (f'the automatic choice ran {taken[0]} (plain modules): '
                             'gelu_conv1x1 refuses autocast, see the bf16/fp16 weight rows')
        item.status = 'n/a (recompute refuses autocast)'
        item.setup = setup_fallback
        return item

    def setup():
        ffn, x = build()
        taken = []
        if weights is None:
            names, fast = runner(ffn, x, True, None, taken)
            _, ref = runner(ffn, x, False, None)
            item.note_fn = lambda: taken_note(taken)
            return names, fast, ref, None
        ffn_h, x_h = copy.deepcopy(ffn).to(weights), x.to(weights)
        ffn_up, x_up = copy.deepcopy(ffn_h).float(), x_h.float()
        names, fast = runner(ffn_h, x_h, True, None, taken)
        _, ref = runner(ffn_h, x_h, False, None)
        _, ref32 = runner(ffn_up, x_up, False, None)
        item.note_fn = lambda: taken_note(taken, f'module and input in {precision}; ')
        return names, fast, ref, ref32
    item.setup = setup
    return item


@contextlib.contextmanager
def record_backend_choices(seen: dict):
    """Record which backend the automatic choice takes for each attention kind."""
    import dat_mm.ops.deformable as deformable
    import dat_mm.ops.neighborhood as neighborhood
    choosers = [(neighborhood, 'choose_na2d_backend', 'neighborhood'),
                (deformable, 'choose_dmha_backend', 'deformable')]
    originals = [getattr(mod, name) for mod, name, _ in choosers]
    for (mod, name, kind), original in zip(choosers, originals):
        def recording(*args, _original=original, _kind=kind, **kwargs):
            chosen = _original(*args, **kwargs)
            seen.setdefault(_kind, set()).add(chosen)
            return chosen
        setattr(mod, name, recording)
    try:
        yield
    finally:
        for (mod, name, _), original in zip(choosers, originals):
            setattr(mod, name, original)


class BackboneCase:
    """One DAT-T++ model and input shared by the backbone rows of a case, with the float32
    reference results kept for the autocast rows.

    The outputs are judged one by one, the parameter gradients as one tensor (all of them,
    concatenated; the worst single one is named in the row's note). Most parameters are small
    (a LayerNorm weight has 64 numbers) and their gradients sum over the whole image: at
    detection sizes the rounding of those sums alone separates two equally exact float32
    computations by more than 1e-5 (5e-5 between the paths on CPU at 800x1344,
    docs/benchmarks.md table 2b), and under autocast the error of a small gradient varies by
    more than the 1.25 slack from one computation to another. Every gradient of the attention
    functions themselves is judged on its own in their rows.
    """

    def __init__(self, H, W, B, device, depths=None):
        from dat_mm import DAT
        from dat_mm.models.layers import (ConvFFN, DATBlock, DeformableAttention2d,
                                          NeighborhoodAttention2d)
        torch.manual_seed(0)
        self.model = DAT(dat_arch(depths), drop_path_rate=0.0).to(device)
        self.x = smooth((B, 3, H, W), device)
        self.attn = [m for m in self.model.modules()
                     if isinstance(m, (NeighborhoodAttention2d, DeformableAttention2d))]
        # the modules with fused forms: ConvFFNs and the blocks (LPU residual)
        self.ffns = [m for m in self.model.modules() if isinstance(m, (ConvFFN, DATBlock))]
        # proj_k.bias: analytically zero gradient (softmax ignores a per-query constant)
        self.params = [(n, p) for n, p in self.model.named_parameters()
                       if not n.endswith('proj_k.bias')]
        self.weights = []
        self.ref32 = {}

    def set_path(self, fast: bool):
        for m in self.attn:
            m.backend = None if fast else 'reference'
        for m in self.ffns:
            m.fused = fast

    def runner(self, fast: bool, amp, mode, seen=None):
        """``[*outputs, *gradients]`` of one call; ``seen`` records the automatic backend
        choice of the first call."""
        model, x = self.model, self.x
        params = [p for _, p in self.params]

        def run():
            if seen is not None and not seen:
                with record_backend_choices(seen):
                    return run_once()
            return run_once()

        def run_once():
            self.set_path(fast)
            if mode == 'fwd':
                model.eval()
                with torch.no_grad(), autocast(x.device, amp):
                    return list(model(x))
            model.train()
            with autocast(x.device, amp):
                outs = model(x)
            if not self.weights:
                self.weights.extend(randn_like_cpu(o, 2 + i, torch.float32) / o.numel()
                                    for i, o in enumerate(outs))
            loss = sum((o.float() * w).sum() for o, w in zip(outs, self.weights))
            return [o.detach() for o in outs] + list(torch.autograd.grad(loss, params))
        return run

    def names(self, mode):
        outs = [f'out{i}' for i in range(len(self.model.out_indices))]
        return outs if mode == 'fwd' else outs + [n for n, _ in self.params]


def backbone_item(ctx_holder, case, H, W, B, precision, mode, device, depths=None):
    item = Item(f"{model_label('DAT-T++', depths)} backbone (fast vs reference paths)", case,
                f'{H}x{W} batch {B}', precision, mode, rule='module')
    amp = AUTOCAST[precision]

    def setup():
        if ctx_holder.get('key') != (H, W, B):
            ctx_holder.clear()
            free_memory(device)
            ctx_holder.update(key=(H, W, B), ctx=BackboneCase(H, W, B, device, depths))
        ctx = ctx_holder['ctx']
        item.merge_from = len(ctx.model.out_indices)
        seen = {}
        fast = ctx.runner(True, amp, mode, seen)
        ref = ctx.runner(False, amp, mode)

        def note():
            text = 'automatic choice: ' + ', '.join(
                f'{k}={"/".join(sorted(v))}' for k, v in sorted(seen.items()))
            wanted = {'neighborhood': {'tiled'}, 'deformable': {'chunked'}}
            return text, None if seen == wanted else 'not the fast paths'
        item.note_fn = note
        ref32 = None
        if amp is not None:
            if mode not in ctx.ref32:
                set_tf32(False)
                ctx.ref32[mode] = ctx.runner(False, None, mode)()
            vals = ctx.ref32[mode]
            ref32 = (lambda: vals)
        return ctx.names(mode), fast, ref, ref32
    item.setup = setup
    return item


def fast_path_items(cases, device, dry_run, depths=None):
    items = []
    ctx_holder = {}
    precisions = list(AUTOCAST)
    for case in cases:
        H, W, B, _ = parse_case(case)
        shapes = stage_shapes(ARCH, H, W)
        for precision in precisions:
            for mode in ('fwd', 'fwd+bwd'):
                items.append(backbone_item(ctx_holder, case, H, W, B, precision, mode,
                                           device, depths))
        for kind in ('neighborhood', 'deformable'):
            for st in shapes:
                if kind not in st['kinds']:
                    continue
                for precision in precisions:
                    for mode in ('fwd', 'fwd+bwd'):
                        for fast in range(1, len(BACKENDS[kind])):
                            items.append(function_item(kind, case, st, B, precision, mode,
                                                       device, fast))
        for st in shapes:
            for precision in precisions + list(HALF_WEIGHTS):
                items.append(ffn_item(case, st, B, precision, device))
    if dry_run:
        for it in items:
            if it.precision.startswith('fp16'):
                it.status = SKIPPED_CPU
    return items, ctx_holder


FAST_COLUMNS = ['path', 'case', 'where', 'precision', 'mode', 'status', 'worst', 'rel',
                'tolerance', 'max_abs', 'rel_same_precision', 'ref_ms', 'fast_ms', 'speedup',
                'ref_mib', 'fast_mib', 'mem_ratio', 'note']


def step_fast_paths(args, device, out_dir, limit):
    intro = (
        'Fast path vs reference on the same inputs. `rel`: worst norm-relative difference '
        '(tensor `worst`) over the output and every gradient, against the reference in '
        'float32 rows and against the float32 reference (on the same rounded inputs) in half '
        'precision rows; `tolerance`: its bound (float32 '
        f'{RTOL32:g}; half precision {RTOL_AMP:g}, for modules and the backbone the larger of '
        f'{RTOL_AMP:g} and {REF_AMP_SLACK:g} x the reference path\'s own error); '
        '`rel_same_precision`: fast vs reference path in the same precision; `max_abs`: '
        'largest absolute difference (tensor). Times: median over interleaved rounds; '
        '`speedup` = reference time / fast time; `mem_ratio` = reference peak / fast peak. '
        'float32 rows run with TF32 off.')
    tab = Table(out_dir, 'fast_paths', 'Fast paths vs reference', FAST_COLUMNS, intro)
    items, ctx_holder = fast_path_items(args.fast_path_cases, device, args.dry_run,
                                        args.depths)
    clock = Clock(device, args.target_ms / 1e3)
    t0 = time.monotonic()
    try:
        with time_limit(limit):
            for item in items:
                set_tf32(False)
                if item.status is not None:
                    if item.setup is not None and item.status.startswith('n/a'):
                        try:
                            item.setup()
                        except Exception as err:  # noqa: BLE001 - recorded in the row
                            item.status = 'error'
                            item.note = f'{type(err).__name__}: {err}'[:300]
                    tab.add(item.row(status=item.status))
                    continue
                try:
                    tab.add(run_item(item, clock, args.rounds, device))
                except Exception as err:  # noqa: BLE001 - recorded in the row
                    tab.add(item.row(status='error', note=f'{type(err).__name__}: {err}'[:300]))
                    traceback.print_exc()
                free_memory(device)
                print(f'  [{time.monotonic() - t0:5.1f} s, fast paths {len(tab.rows)}/'
                      f'{len(items)}] {item.path} {item.case} {item.where} {item.precision} '
                      f'{item.mode}: {tab.rows[-1]["status"]}', flush=True)
    except StepTimeout:
        done = len(tab.rows)  # rows are added once per item, in order
        tab.add(items[done].row(status='not finished (step time limit)'))
        for item in items[done + 1:]:
            tab.add(item.row(status='not run (step time limit)'))
        tab.note(f'step time limit of {limit:.0f} s reached after {done} of {len(items)} rows')
    finally:
        ctx_holder.clear()
        free_memory(device)
    return tab


# -- step 2: DAT-T++ vs Swin-T -------------------------------------------------------------
def load_mmdet_swin():
    """mmdet's ``SwinTransformer`` class and where it came from.

    ``mmdet.models`` imports every detector module, and several of them import mmcv's
    compiled ops at import time, so with mmcv-lite (no ops) the package cannot be imported.
    The backbone itself needs only mmcv's pure-Python layers: its file and the file of the
    layers it uses (``mmdet/models/layers/transformer/utils.py``) are imported on their own,
    under their usual names, with the packages above them standing in as empty namespaces.
    The class is mmdet's own code; the rest of ``mmdet.models`` is then unusable in this
    process (this script needs nothing else of it).
    """
    if 'mmdet.models.backbones' in sys.modules:
        from mmdet.models.backbones import SwinTransformer
        return SwinTransformer, 'mmdet.models.backbones'
    import mmdet
    import mmdet.registry  # noqa: F401
    root = os.path.dirname(mmdet.__file__)
    for name in ('mmdet.models', 'mmdet.models.backbones', 'mmdet.models.layers',
                 'mmdet.models.layers.transformer'):
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(root, *name.split('.')[1:])]
        sys.modules[name] = pkg
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # mmcv-lite: "Fail to import MultiScaleDeformable..."
        utils = importlib.import_module('mmdet.models.layers.transformer.utils')
        layers = sys.modules['mmdet.models.layers']
        layers.PatchEmbed, layers.PatchMerging = utils.PatchEmbed, utils.PatchMerging
        swin = importlib.import_module('mmdet.models.backbones.swin')
    return swin.SwinTransformer, f'mmdet {mmdet.__version__} swin.py (loaded on its own)'


class TorchvisionSwinT(nn.Module):
    """torchvision's Swin-T as a 4-map backbone (NCHW maps after each stage): the fallback
    where mmdet's cannot be loaded."""

    def __init__(self, depths=None):
        super().__init__()
        from torchvision.models.swin_transformer import SwinTransformer
        self.features = SwinTransformer(
            patch_size=[4, 4], embed_dim=96, depths=list(depths or (2, 2, 6, 2)),
            num_heads=[3, 6, 12, 24], window_size=[7, 7], stochastic_depth_prob=0.2).features

    def forward(self, x):
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i % 2 == 1:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


def build_swin_t(depths=None):
    """(model, source): mmdet's Swin-T as in its detection configs, else torchvision's;
    ``depths`` blocks per stage where given (the dry run)."""
    cfg = dict(SWIN['swin-t'])
    if depths is not None:
        cfg['depths'] = tuple(depths)
    try:
        cls, source = load_mmdet_swin()
        model = cls(window_size=7, mlp_ratio=4, qkv_bias=True, out_indices=(0, 1, 2, 3), **cfg)
        return model, source
    except Exception as err:  # noqa: BLE001 - the fallback says why
        reason = f'{type(err).__name__}: {err}'[:200]
        return TorchvisionSwinT(depths), f'torchvision swin_t, fallback: mmdet failed: {reason}'


BACKBONE_COLUMNS = ['case', 'model', 'status', 'median_ms', 'range_ms', 'time_vs_swin',
                    'imgs_per_s', 'peak_mib', 'mem_vs_swin', 'params_m', 'note']


def step_backbones(args, device, out_dir, limit):
    amp = torch.bfloat16
    intro = (
        'DAT-T++ (automatic fast paths) and Swin-T under bf16 autocast. `infer`: eval mode, '
        'no grad; `train`: train mode (drop path as the presets: 0.2 for both), forward, a '
        'fixed random projection of the 4 output maps, backward; no optimizer step. '
        '`median_ms`: median over interleaved rounds (CUDA events on the GPU); '
        '`time_vs_swin`: median of the per-round ratios (range); `peak_mib`: peak allocation '
        'during one call.')
    tab = Table(out_dir, 'backbones', 'DAT-T++ vs Swin-T (bf16 autocast)', BACKBONE_COLUMNS,
                intro)
    dat_name, swin_name = model_label('DAT-T++', args.depths), model_label('Swin-T', args.depths)
    set_tf32(*TF32_DEFAULT)
    todo = list(args.backbone_cases)
    current = None
    try:
        with time_limit(limit):
            from dat_mm import DAT
            torch.manual_seed(0)
            dat = DAT(dat_arch(args.depths)).to(device)
            swin, swin_source = build_swin_t(args.depths)
            swin = swin.to(device)
            tab.note(f'Swin-T: {swin_source}')
            models = [(dat_name, dat), (swin_name, swin)]
            clock = Clock(device, args.target_ms / 1e3)
            for case in args.backbone_cases:
                current = case
                H, W, B, mode = parse_case(case)
                x = torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(0))
                x = x.to(device)
                runs = []
                for name, model in models:
                    run = step_fn(model, x, mode)

                    def call(run=run):
                        with autocast(device, amp):
                            return run()
                    runs.append((name, call))
                try:
                    times = clock.interleaved(runs, args.rounds)
                    for _, m in models:
                        for p in m.parameters():
                            p.grad = None
                    mems = {name: peak_bytes(call, device) for name, call in runs}
                except Exception as err:  # noqa: BLE001 - recorded in the row
                    traceback.print_exc()
                    for name, _ in models:
                        tab.add(dict(case=case, model=name, status='error',
                                     note=f'{type(err).__name__}: {err}'[:300]))
                    todo.remove(case)
                    free_memory(device)
                    continue
                ratios = [a / b for a, b in zip(times[dat_name], times[swin_name])]
                for name, model in models:
                    ts = times[name]
                    t = statistics.median(ts)
                    mem = mems[name]
                    row = dict(case=case, model=name, status='ok', median_ms=fmt_ms(t),
                               range_ms=f'{fmt_ms(min(ts))}-{fmt_ms(max(ts))}',
                               imgs_per_s=f'{B / t:.1f}',
                               params_m=f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}',
                               peak_mib='-' if mem is None else fmt_mib(mem))
                    if name == dat_name:
                        row['time_vs_swin'] = (f'{statistics.median(ratios):.2f} '
                                               f'({min(ratios):.2f}-{max(ratios):.2f})')
                        if mem is not None and mems[swin_name]:
                            row['mem_vs_swin'] = f"{mem / mems[swin_name]:.2f}"
                    else:
                        row['note'] = swin_source
                    tab.add(row)
                todo.remove(case)
                for _, m in models:
                    for p in m.parameters():
                        p.grad = None
                free_memory(device)
                print(f'  [backbones] {case}: {dat_name} / {swin_name} = '
                      f'{statistics.median(ratios):.2f}', flush=True)
    except StepTimeout:
        present = {(r['case'], r['model']) for r in tab.rows}
        for case in todo:
            status = ('not finished (step time limit)' if case == current
                      else 'not run (step time limit)')
            for name in (dat_name, swin_name):
                if (case, name) not in present:
                    tab.add(dict(case=case, model=name, status=status))
        tab.note(f'step time limit of {limit:.0f} s reached')
    finally:
        free_memory(device)
    return tab


# -- step 3: mmcv's compiled ops -----------------------------------------------------------
def step_mmcv_ops(args, device, out_dir, limit):
    """nms and roi_align of an mmcv build with ops against torchvision's, where carried."""
    tab = Table(out_dir, 'mmcv_ops', "mmcv's compiled ops", ['check', 'status', 'note'],
                with_csv=False)
    carried = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, '.whl', '*.whl'))
                     if os.path.basename(p).lower().startswith('mmcv-'))
    try:
        with time_limit(limit):
            spec = importlib.util.find_spec('mmcv')
            if spec is None:
                tab.add(dict(check='mmcv ops', status='skipped', note='mmcv is not installed'))
                return tab
            if importlib.util.find_spec('mmcv._ext') is None:
                import mmcv
                tab.add(dict(check='mmcv ops', status='skipped', note=(
                    f'mmcv {mmcv.__version__} here has no compiled ops (mmcv-lite); no mmcv '
                    f'wheel with ops for python {platform.python_version()} / torch '
                    f'{torch.__version__} was carried in .whl/ '
                    f'({", ".join(carried) or "none"})')))
                return tab
            import torchvision
            from mmcv.ops import nms, roi_align
            g = torch.Generator().manual_seed(0)
            xy = torch.rand(500, 2, generator=g) * 200
            wh = torch.rand(500, 2, generator=g) * 60 + 4
            boxes = torch.cat([xy, xy + wh], 1).to(device)
            scores = torch.rand(500, generator=g).to(device)
            _, keep = nms(boxes, scores, 0.5)
            keep_tv = torchvision.ops.nms(boxes, scores, 0.5)
            same = torch.equal(keep.sort().values.cpu(), keep_tv.sort().values.cpu())
            tab.add(dict(check=f'nms on {device.type}', status='pass' if same else 'FAIL',
                         note=f'{len(keep)} kept (torchvision: {len(keep_tv)})'))
            feat = torch.randn(2, 16, 64, 64, generator=g).to(device)
            rois = torch.cat([torch.randint(0, 2, (100, 1), generator=g).float(),
                              boxes[:100].cpu() / 4], 1).to(device)
            a = roi_align(feat, rois, (7, 7), 0.5, 2, 'avg', True)
            b = torchvision.ops.roi_align(feat, rois, (7, 7), 0.5, 2, aligned=True)
            err = rel_err(a, b)
            tab.add(dict(check=f'roi_align on {device.type}',
                         status='pass' if err <= RTOL32 else 'FAIL',
                         note=f'relative difference to torchvision {err:.1e}'))
    except StepTimeout:
        tab.add(dict(check='mmcv ops', status='not finished (step time limit)'))
    except Exception as err:  # noqa: BLE001 - recorded in the row
        traceback.print_exc()
        tab.add(dict(check='mmcv ops', status='error', note=f'{type(err).__name__}: {err}'))
    return tab


# -- environment and summary ---------------------------------------------------------------
def version_of(module):
    try:
        return importlib.import_module(module).__version__
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        return f'unavailable ({type(err).__name__})'


def environment(device, args):
    rows = [('python', platform.python_version()), ('torch', torch.__version__),
            ('torch CUDA / cuDNN', f'{torch.version.cuda} / {torch.backends.cudnn.version()}'),
            ('device', torch.cuda.get_device_name(device) if device.type == 'cuda' else
             f'CPU ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} threads)')]
    if device.type == 'cuda':
        cap = torch.cuda.get_device_capability(device)
        total = torch.cuda.get_device_properties(device).total_memory
        rows.append(('compute capability / memory', f'{cap[0]}.{cap[1]} / {total / 2**30:.0f}'
                                                    ' GiB'))
    mmcv_kind = 'with ops' if importlib.util.find_spec('mmcv._ext') else 'no ops (lite)'
    rows += [('numpy', version_of('numpy')), ('torchvision', version_of('torchvision')),
             ('mmengine', version_of('mmengine')),
             ('mmcv', f"{version_of('mmcv')}, {mmcv_kind}"
              if importlib.util.find_spec('mmcv') else 'not installed'),
             ('mmdet', version_of('mmdet')), ('dat_mm', version_of('dat_mm'))]
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ''
    rows.append(('repository commit', commit or 'n/a (no git metadata)'))
    rows.append(('mode', 'dry run (CPU, tiny sizes)' if args.dry_run else 'full'))
    rows.append(('budget', f'{args.budget:.0f} s, rounds {args.rounds}, '
                           f'target {args.target_ms:g} ms per measurement'))
    return rows


def write_summary(out_dir, env_rows, tables, started, extra=()):
    lines = ['# GPU acceptance run', '', '| | |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in env_rows]
    lines += ['', '## Results', '']
    for name, tab in tables:
        counts = {}
        for r in tab.rows:
            status = r.get('status', '')
            key = status if status in ('pass', 'FAIL', 'ok', 'error') else \
                status.split(' (')[0] if status else '?'
            counts[key] = counts.get(key, 0) + 1
        summary = ', '.join(f'{v} {k}' for k, v in sorted(counts.items()))
        files = [tab.md_path] + ([tab.csv_path] if tab.csv_path else [])
        lines.append(f'- {name} ({", ".join(f"`{os.path.basename(p)}`" for p in files)}): '
                     f'{summary or "no rows"}')
        lines += [f'  - {n}' for n in tab.notes]
    lines += [f'- {e}' for e in extra]
    lines.append(f'- wall time {time.monotonic() - started:.0f} s')
    with open(os.path.join(out_dir, 'summary.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=os.environ.get('OUT') or os.path.join(
        REPO, 'work_dirs', 'gpu_acceptance'), help='folder for the tables (default: $OUT)')
    p.add_argument('--dry-run', action='store_true',
                   help='tiny sizes on the CPU, to check the script without a GPU')
    p.add_argument('--budget', type=float, default=None,
                   help='seconds for all steps together (default 450; dry run 150)')
    p.add_argument('--rounds', type=int, default=None,
                   help='interleaved timing rounds (default 5; dry run 1)')
    p.add_argument('--target-ms', type=float, default=None,
                   help='length of one timed measurement (default 25 ms; dry run 0: one call)')
    p.add_argument('--fast-path-cases', nargs='+', default=None, help='HxWxBATCH sizes')
    p.add_argument('--backbone-cases', nargs='+', default=None,
                   help='HxWxBATCH:{infer,train}')
    p.add_argument('--threads', type=int, default=None,
                   help='CPU threads of torch (default: torch\'s; dry run 1)')
    p.add_argument('--steps', nargs='+', default=list(STEP_SHARES),
                   choices=list(STEP_SHARES))
    args = p.parse_args(argv)
    dry = args.dry_run
    if args.budget is None:
        args.budget = 150.0 if dry else 450.0
    if args.rounds is None:
        args.rounds = 1 if dry else 5
    if args.target_ms is None:
        args.target_ms = 0.0 if dry else 25.0
    if args.fast_path_cases is None:
        args.fast_path_cases = DRY_FAST_PATH_CASES if dry else GPU_FAST_PATH_CASES
    if args.backbone_cases is None:
        args.backbone_cases = DRY_BACKBONE_CASES if dry else GPU_BACKBONE_CASES
    args.depths = DRY_DEPTHS if dry else None
    return args


def main(argv=None):
    started = time.monotonic()
    args = parse_args(argv)
    if args.dry_run:
        device = torch.device('cpu')
        # one thread: a check of the code paths, often on a shared machine, where parallel
        # regions wait for preempted threads
        torch.set_num_threads(args.threads or 1)
    elif torch.cuda.is_available():
        device = torch.device('cuda', torch.cuda.current_device())
    else:
        print('gpu_acceptance: no CUDA device; use --dry-run to check the script on the CPU',
              file=sys.stderr)
        return 2
    if args.threads and not args.dry_run:
        torch.set_num_threads(args.threads)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    print(f'gpu_acceptance: tables go to {out_dir}', flush=True)
    try:
        import dat_mm  # noqa: F401 - fails here, clearly, if mmengine did not travel
    except Exception as err:  # noqa: BLE001 - the one fatal import, reported
        with open(os.path.join(out_dir, 'summary.md'), 'w') as f:
            f.write(f'# GPU acceptance run\n\n`import dat_mm` failed: {err!r}\n')
        print(f'gpu_acceptance: import dat_mm failed ({err!r}); were the wheels of .whl/ '
              'installed (benchmarks/gpu_acceptance.sh does it)?', file=sys.stderr)
        return 2
    env_rows = environment(device, args)
    for k, v in env_rows:
        print(f'  {k}: {v}')
    steps = {'fast_paths': ('1. fast paths vs reference', step_fast_paths),
             'backbones': ('2. DAT-T++ vs Swin-T', step_backbones),
             'mmcv_ops': ("3. mmcv's compiled ops", step_mmcv_ops)}
    tables = []
    deadline = started + args.budget
    chosen = [s for s in STEP_SHARES if s in args.steps]
    for i, key in enumerate(chosen):
        title, fn = steps[key]
        shares = [STEP_SHARES[s] for s in chosen[i:]]
        limit = max(1.0, (deadline - time.monotonic()) * shares[0] / sum(shares))
        print(f'{title} (time limit {limit:.0f} s)', flush=True)
        tables.append((title, fn(args, device, out_dir, limit)))
        write_summary(out_dir, env_rows, tables, started)
    failed = [r for _, tab in tables for r in tab.rows
              if r.get('status') in ('FAIL', 'error')]
    incomplete = [r for _, tab in tables for r in tab.rows
                  if 'time limit' in str(r.get('status'))]
    verdict = ('all comparisons passed' if not failed else
               f'{len(failed)} row(s) failed or raised an error')
    if incomplete:
        verdict += f'; {len(incomplete)} row(s) not run for lack of time'
    write_summary(out_dir, env_rows, tables, started, extra=[f'verdict: {verdict}'])
    print(f'\ngpu_acceptance: {verdict} ({time.monotonic() - started:.0f} s)')
    print(f'tables in {out_dir}:')
    for name in sorted(os.listdir(out_dir)):
        print(f'  {os.path.join(out_dir, name)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
