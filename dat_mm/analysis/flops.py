"""Parameters and FLOPs of DAT / DAT++ models and of the detectors, segmentors and classifiers
built on them, counted with ``torch.utils.flop_counter.FlopCounterMode``.

Counting rule
-------------
One FLOP here is one **multiply-accumulate (MAC)**, the convention of fvcore and of the DAT,
DAT++ and Swin papers (whose "FLOPs" columns are MACs). torch's counter, which counts 2 FLOPs
per MAC, runs one forward pass and records every operator it has a formula for, per module;
dat_mm adds formulas for the two operators torch does not count and the papers do, and for
the fused CPU attention kernel it lacks:

==================  =====================================================================
category            counted as
==================  =====================================================================
``conv``            every convolution: ``out.numel() * C_in/groups * k_h * k_w`` (torch)
``linear``          matrix products inside ``nn.Linear`` modules: ``M * K * N`` (torch)
``attn_matmul``     every other matrix product: the attention matmuls ``QK^T`` and ``AV``
                    (torch's ``mm``/``bmm`` formulas); fused ``scaled_dot_product_attention``
                    kernels count the same two products plus their softmax
``softmax``         ``SOFTMAX_FLOPS_PER_ELEMENT`` (3: exponential, running sum, division) per
                    element of the softmax input, i.e. per attention logit (dat_mm's rule)
``grid_sample``     ``GRID_SAMPLE_FLOPS_PER_OUTPUT[mode]`` per output element, channels included
                    (bilinear 4: one MAC per corner tap, as fvcore counts ``grid_sampler``;
                    dat_mm's rule). DMHA has two: the key/value sampling and the deformable
                    relative position bias
==================  =====================================================================

Not counted (as in fvcore's and the papers' totals): normalisations, activations, additions,
pooling, indexing/gathers, padding, reshapes, and custom operators outside ATen (mmcv's
RoIAlign, NMS). Attention is counted on each kind's ``reference`` backend (the count describes
the model's math, not the kernel that happens to run); the modules' backend choice is restored
afterwards.

Whole models: a classifier counts backbone, neck and head; a segmentor its backbone, neck and
decode head (the auxiliary head runs in training only); a detector runs its ``predict`` pass
on a real input, so its heads are counted at the recipe's proposal and detection numbers
(e.g. 1000 RPN proposals through every box head, the 100 kept detections through every mask
head). The box score threshold is set to 0 for the count, so that a randomly initialised
detector keeps its full ``max_per_img`` as a trained one does on a typical image; the report
states the numbers of boxes each head saw.

Use :func:`count_model` on a module, :func:`count_config` on a config file, or
``tools/analysis/get_flops.py CONFIG [--shape H W]`` (docs/flops.md). Needs torch >= 2.4
(the model code itself runs on older torch).
"""
import contextlib
import copy
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from math import prod
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

SOFTMAX_FLOPS_PER_ELEMENT = 3
GRID_SAMPLE_FLOPS_PER_OUTPUT = {0: 4, 1: 1, 2: 16}  # aten mode ids: bilinear, nearest, bicubic
CATEGORIES = ('conv', 'linear', 'attn_matmul', 'softmax', 'grid_sample')

# Published ImageNet-1k FLOPs (G, MACs) of the classifiers, by (arch preset, input side).
# DAT++: arXiv 2309.01430, Table of ImageNet results (also in docs/model.md).
# DAT v1: CVPR 2022 paper, Table 2. The authors' READMEs list no FLOPs.
PAPER_GFLOPS = {
    ('tiny++', 224): 4.3, ('small++', 224): 9.4, ('base++', 224): 16.6, ('base++', 384): 49.7,
    ('tiny', 224): 4.6, ('small', 224): 9.0, ('base', 224): 15.8, ('base-384', 384): 49.8,
}
PAPER_NAMES = {
    ('tiny++', 224): 'DAT-T++', ('small++', 224): 'DAT-S++', ('base++', 224): 'DAT-B++',
    ('base++', 384): 'DAT-B++ 384', ('tiny', 224): 'DAT-T', ('small', 224): 'DAT-S',
    ('base', 224): 'DAT-B', ('base-384', 384): 'DAT-B 384',
}


# -- dat_mm's formulas, in torch's unit (2 per MAC) --------------------------------------------
def _softmax_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * SOFTMAX_FLOPS_PER_ELEMENT * prod(x_shape)


def _grid_sample_flops(x_shape, grid_shape, mode=0, *args, out_shape=None, **kwargs) -> int:
    return 2 * GRID_SAMPLE_FLOPS_PER_OUTPUT.get(int(mode), 4) * prod(out_shape)


def _sdpa_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """Both attention products of ``softmax(q k^T) v`` and the softmax, in torch's unit."""
    lead, L, S = prod(q_shape[:-2]), q_shape[-2], k_shape[-2]
    return 2 * lead * L * S * (q_shape[-1] + v_shape[-1]) + _softmax_flops((lead, L, S))


def _custom_rules() -> Dict:
    rules = {aten._softmax: _softmax_flops, aten.grid_sampler_2d: _grid_sample_flops}
    for name in ('_scaled_dot_product_flash_attention_for_cpu',
                 '_scaled_dot_product_flash_attention', '_scaled_dot_product_efficient_attention',
                 '_scaled_dot_product_cudnn_attention'):
        op = getattr(aten, name, None)
        if op is not None:  # torch's own formulas for these count the products only
            rules[op] = _sdpa_flops
    if hasattr(aten, '_safe_softmax'):
        rules[aten._safe_softmax] = _softmax_flops
    return rules


CUSTOM_RULES = _custom_rules()
_CATEGORY_OF_OP = {'convolution': 'conv', '_convolution': 'conv', 'cudnn_convolution': 'conv',
                   'mm': 'matmul', 'addmm': 'matmul', 'bmm': 'matmul', 'baddbmm': 'matmul',
                   '_softmax': 'softmax', '_safe_softmax': 'softmax',
                   'grid_sampler_2d': 'grid_sample'}


def _category(op) -> str:
    name = str(op).split('.', 1)[-1]
    if 'attention' in name:
        return 'attn_matmul'
    return _CATEGORY_OF_OP.get(name, 'other')


@contextlib.contextmanager
def reference_attention(model: nn.Module):
    """Run NA / DMHA modules on their ``reference`` backend inside the block, then restore."""
    from dat_mm.models.layers import DeformableAttention2d, NeighborhoodAttention2d
    saved = []
    for m in model.modules():
        if isinstance(m, (DeformableAttention2d, NeighborhoodAttention2d)):
            saved.append((m, m.backend))
            m.backend = 'reference'
    try:
        yield
    finally:
        for m, backend in saved:
            m.backend = backend


def _run_counter(model: nn.Module, run: Callable[[], object]) -> Dict[str, Dict[str, int]]:
    """Module name (as ``model.named_modules`` spells it, '' for the model) -> category ->
    MACs, inclusive of submodules; only the modules whose forward ran have an entry."""
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_RULES)
    if not hasattr(counter, 'mod_tracker'):
        raise RuntimeError(f'FLOP counting needs torch >= 2.4 (FlopCounterMode attributing '
                           f'operators to modules by itself); this is torch {torch.__version__}')
    with torch.no_grad(), reference_attention(model), counter:
        run()
    root = type(model).__name__
    out = {}
    for name, ops in counter.get_flop_counts().items():
        if name == 'Global' or not (name == root or name.startswith(root + '.')):
            continue
        row = out.setdefault(name[len(root) + 1:], {})
        for op, flops in ops.items():
            cat = _category(op)
            row[cat] = row.get(cat, 0) + flops // 2
    return out


# -- rows of the table -------------------------------------------------------------------------
#: The row of operators that ran outside every submodule's forward (a detector's
#: post-processing: score softmax, mask pasting).
OUTSIDE = '(outside modules)'
_DAT_PARTS = (
    (re.compile(r'^stem(\.|$)'), lambda m: 'stem'),
    (re.compile(r'^stages\.(\d+)(\.|$)'), lambda m: f'stage{m.group(1)}'),
    (re.compile(r'^downsamples\.(\d+)(\.|$)'), lambda m: f'down{m.group(1)}'),
    (re.compile(r'^norms\.(\d+)(\.|$)'), lambda m: 'out norms'),
)


def _row_of(name: str, dat_prefixes: Sequence[str]) -> str:
    """The table row of a module: DAT parts (stem, stageN, downN, out norms) under each DAT
    backbone, else the model's top-level child (neck, rpn_head, roi_head, decode_head...)."""
    for prefix in dat_prefixes:
        if prefix == '' or name == prefix[:-1] or name.startswith(prefix):
            rest = name[len(prefix):]
            for pattern, label in _DAT_PARTS:
                m = pattern.match(rest)
                if m:
                    return prefix + label(m)
            return prefix[:-1] if prefix else OUTSIDE
    return name.split('.', 1)[0] if name else OUTSIDE


def _exclusive_rows(model: nn.Module, inclusive: Dict[str, Dict[str, int]],
                    dat_prefixes: Sequence[str]) -> 'OrderedDict[str, Dict[str, int]]':
    """Per table row, the MACs of its modules, each op counted once: a module's inclusive
    count is split into its children's and its own remainder, which goes to its row. The
    matrix products of ``nn.Linear`` modules are ``linear``, all others ``attn_matmul``."""
    modules = dict(model.named_modules())
    rows: 'OrderedDict[str, Dict[str, int]]' = OrderedDict()

    def add(row, cat, n):
        if n:
            r = rows.setdefault(row, dict.fromkeys(CATEGORIES, 0))
            r[cat] = r.get(cat, 0) + n

    def visit(name: str) -> Dict[str, int]:
        """Inclusive counts of ``name`` (its entry, or its children's sum if it has none)."""
        children = {}
        for child, _ in modules[name].named_children():
            full = f'{name}.{child}' if name else child
            for cat, n in visit(full).items():
                children[cat] = children.get(cat, 0) + n
        own = inclusive.get(name)
        if own is None:
            return children
        row = _row_of(name, dat_prefixes)
        for cat, n in own.items():
            rest = n - children.get(cat, 0)
            if cat == 'matmul':
                cat = 'linear' if isinstance(modules[name], nn.Linear) else 'attn_matmul'
            if cat != 'other':
                add(row, cat, rest)
        return own

    visit('')
    # in the order the pass reached them (the counter records modules as they first count)
    first = {}
    for i, name in enumerate(inclusive):
        first.setdefault(_row_of(name, dat_prefixes), i)
    first[OUTSIDE] = len(inclusive)
    return OrderedDict(sorted(rows.items(), key=lambda item: first.get(item[0], len(inclusive))))


@dataclass
class FlopReport:
    """FLOPs (MACs) and parameters of one forward pass, per table row and in total."""
    model_name: str
    input_shape: Tuple[int, ...]
    rows: 'OrderedDict[str, Dict[str, int]]'  # row -> {params, categories...}
    arch: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    paper: Optional[Tuple[str, float]] = None  # (what, GMACs) the paper states for this model

    @property
    def params(self) -> int:
        return sum(r['params'] for r in self.rows.values())

    def total(self, category: str = None) -> int:
        cats = CATEGORIES if category is None else (category,)
        return sum(r[c] for r in self.rows.values() for c in cats)

    @property
    def flops(self) -> int:
        return self.total()

    def paper_gflops(self) -> Optional[float]:
        return None if self.paper is None else self.paper[1]

    def format(self) -> str:
        head = ['part', 'params', 'conv', 'linear', 'attn mm', 'softmax', 'grid_smp', 'GFLOPs']
        lines = [f'{self.model_name}, input {"x".join(map(str, self.input_shape))} '
                 f'(FLOPs = multiply-accumulates; see dat_mm.analysis.flops)']
        table = []
        for name, r in list(self.rows.items()) + [('total', self._totals())]:
            table.append([name, f'{r["params"]:,}'] +
                         [f'{r[c] / 1e6:.1f}M' for c in CATEGORIES] +
                         [f'{sum(r[c] for c in CATEGORIES) / 1e9:.3f}'])
        widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
        fmt = lambda cells: '  '.join(  # noqa: E731
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths)))
        lines.append(fmt(head))
        lines.append('  '.join('-' * w for w in widths))
        lines += [fmt(row) for row in table[:-1]]
        lines.append('  '.join('-' * w for w in widths))
        lines.append(fmt(table[-1]))
        lines += self.notes
        if self.paper is not None:
            what, paper = self.paper
            ours = self.flops / 1e9
            lines.append(f'paper ({what}): {paper:.1f}G; counted {ours:.2f}G '
                         f'({(ours / paper - 1) * 100:+.1f}%)')
        return '\n'.join(lines)

    def _totals(self):
        out = {'params': self.params}
        out.update({c: self.total(c) for c in CATEGORIES})
        return out


def _dat_info(model: nn.Module):
    from dat_mm.models.backbones import ARCH_ZOO, DAT, resolve_arch
    prefixes, arch = [], None
    for name, m in model.named_modules():
        if isinstance(m, DAT):
            prefixes.append(name + '.' if name else '')
            for preset in ARCH_ZOO:
                if m.arch == resolve_arch(preset):
                    arch = preset
    return prefixes, arch


def count_model(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224),
                device: str = None, forward=None, model_name: str = None,
                inputs=None) -> FlopReport:
    """Count FLOPs (MACs) and parameters of one forward pass of ``model``.

    Args:
        model: any module; DAT backbones inside it get per-part rows (stem, stages, downs),
            every other top-level child one row.
        input_shape: NCHW shape of the input.
        device: ``None`` runs where the model is; ``'meta'`` (shapes only: exact, instant, no
            memory) or another device **moves the model there** (pass a copy to keep it).
        forward: ``callable(model, x)`` running the pass (default ``model(x)``).
        inputs: the input tensor to use instead of zeros of ``input_shape``.
    """
    if len(input_shape) != 4:
        raise ValueError(f'input_shape must be NCHW, got {tuple(input_shape)}')
    prefixes, arch = _dat_info(model)
    if device is not None:
        model.to(device)
    else:
        device = next(iter(model.parameters()), torch.zeros(())).device
    was_training = model.training
    model.eval()
    x = torch.zeros(*input_shape, device=device) if inputs is None else inputs
    run = forward or (lambda m, t: m(t))
    try:
        inclusive = _run_counter(model, lambda: run(model, x))
    finally:
        model.train(was_training)
    counted = _exclusive_rows(model, inclusive, prefixes)
    params = OrderedDict()
    for name, p in model.named_parameters():
        row = _row_of(name.rsplit('.', 1)[0] if '.' in name else '', prefixes)
        params[row] = params.get(row, 0) + p.numel()
    rows = OrderedDict()
    for row in list(counted) + list(params):  # in the order the pass reached them
        if row not in rows:
            rows[row] = dict(params=params.get(row, 0), **counted.get(
                row, dict.fromkeys(CATEGORIES, 0)))
    paper = None
    side = input_shape[-1] if input_shape[-1] == input_shape[-2] else None
    if arch is not None and (arch, side) in PAPER_GFLOPS and 'head' in rows:
        paper = (f'{PAPER_NAMES[(arch, side)]} classifier', PAPER_GFLOPS[(arch, side)])
    return FlopReport(model_name or type(model).__name__, tuple(input_shape), rows, arch,
                      paper=paper)


# -- configs -----------------------------------------------------------------------------------
def build_from_config(cfg, backbone_only: bool = False):
    """The model a config describes, to count (:func:`dat_mm.apis.build_model_from_config`):
    the whole model, or its backbone alone. Returns ``(module, description)``."""
    from mmengine.config import Config

    from ..apis.build import build_model_from_config
    if not isinstance(cfg, Config):
        cfg = Config.fromfile(cfg)
    if backbone_only:
        model = build_model_from_config(cfg, backbone_only=True)
        return model, f'{cfg.model.backbone.type} (backbone only)'
    return build_model_from_config(cfg), f'{cfg.model.type} (whole model)'


def _pipeline_size(cfg) -> Optional[Tuple[int, int]]:
    """Model input ``(H, W)`` of a test pipeline: the last crop / fixed resize, if any."""
    try:
        pipeline = cfg.test_dataloader.dataset.pipeline
    except (AttributeError, KeyError):
        return None
    size = None
    for t in pipeline:
        if t.get('type') == 'CenterCrop':
            size = t.get('crop_size')
        elif t.get('type') == 'Resize' and 'scale' in t:
            size = t['scale']
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    return tuple(size)[::-1]  # mmcv scales are (w, h)


class _BoxCounter:
    """Numbers of boxes that each RoI extractor of a detector receives in one pass."""

    def __init__(self, model: nn.Module):
        self.seen: Dict[str, List[int]] = {}
        self.handles = []
        for name, m in model.named_modules():
            if name.endswith('roi_extractor') or re.search(r'roi_extractor\.\d+$', name):
                self.handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, args, output):
            self.seen.setdefault(name, []).append(int(args[1].shape[0]))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()

    def notes(self) -> List[str]:
        return [f'{name}: {", ".join(map(str, n))} boxes' for name, n in self.seen.items()]


def _detector_pass(model: nn.Module, h: int, w: int):
    """``forward(model, x)`` running mmdet's ``predict`` on one image of ``h x w``, with the
    box score threshold at 0 so that the heads see the recipe's full box numbers."""
    from mmdet.structures import DetDataSample
    for node in (model.test_cfg, getattr(getattr(model, 'roi_head', None), 'test_cfg', None),
                 getattr(getattr(model, 'bbox_head', None), 'test_cfg', None)):
        if node is None:
            continue
        for sub in (node, node.get('rcnn')) if hasattr(node, 'get') else (node,):
            if sub is not None and 'score_thr' in sub:
                sub['score_thr'] = 0.0
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))

    def forward(m, x):
        return m(x, [DetDataSample(metainfo=meta)], mode='predict')
    return forward


def count_config(config, shape: Optional[Sequence[int]] = None, device: str = None,
                 backbone_only: bool = False) -> FlopReport:
    """Count the model built from ``config`` (a path or Config) at input ``shape`` ``(H, W)``.

    Default shape: the test pipeline's fixed size (classifiers), else 224 x 224. Classifiers
    and segmentors run on the ``meta`` device unless ``device`` says otherwise; detectors need
    real values (their heads keep boxes by score) and run on the CPU with random input.
    """
    from mmengine.config import Config
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    cfg = copy.deepcopy(cfg)
    model, what = build_from_config(cfg, backbone_only=backbone_only)
    if shape is None:
        shape = _pipeline_size(cfg) or (224, 224)
    h, w = shape
    scope = cfg.get('default_scope')
    name = f'{getattr(cfg, "filename", "config")}: {what}'
    if backbone_only:
        return count_model(model, (1, 3, h, w), device=device or 'meta', model_name=name)
    if scope == 'mmdet':
        forward = _detector_pass(model, h, w)
        boxes = _BoxCounter(model)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, h, w, generator=generator) * 50 + 110
        try:
            report = count_model(model, (1, 3, h, w), device=device or 'cpu', forward=forward,
                                 model_name=name, inputs=x.to(device or 'cpu'))
        finally:
            boxes.remove()
        report.notes += boxes.notes()
        return report

    def forward(m, x):
        return m(x, mode='tensor')
    return count_model(model, (1, 3, h, w), device=device or 'meta', forward=forward,
                       model_name=name)


def count_preset(arch: str, side: int = 224, with_head: bool = True,
                 device: str = 'meta') -> FlopReport:
    """Count a DAT preset as the published classifier (backbone + LN + GAP + Linear) without
    mmpretrain: the backbone with its last-stage norm, then the 1000-way ``fc``."""
    from dat_mm.models.backbones import DAT

    class _Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = DAT(arch, out_indices=(3,))
            dim = self.backbone.num_features[-1]
            self.head = nn.Module()
            self.head.fc = nn.Linear(dim, 1000)

        def forward(self, x):
            feat = self.backbone(x)[-1].mean((2, 3))
            return self.head.fc(feat)

    model = _Classifier() if with_head else DAT(arch, out_indices=(3,))
    return count_model(model, (1, 3, side, side), device=device,
                       model_name=f'DAT {arch!r} {"classifier" if with_head else "backbone"}')


def paper_comparison(device: str = 'meta') -> List[Tuple[str, int, float, float, int]]:
    """``(paper name, side, paper GFLOPs, counted GFLOPs, params)`` for every published model."""
    out = []
    for (arch, side), paper in PAPER_GFLOPS.items():
        r = count_preset(arch, side, device=device)
        out.append((PAPER_NAMES[(arch, side)], side, paper, r.flops / 1e9, r.params))
    return out
