"""Parameters and FLOPs of DAT / DAT++ models, counted from the operators a forward pass runs.

Counting rule
-------------
One FLOP here is one **multiply-accumulate (MAC)**, the convention of fvcore and of the DAT,
DAT++ and Swin papers (whose "FLOPs" columns are MACs). The count is taken from the ATen
operators that actually run in one forward pass (a ``TorchDispatchMode``), so it follows the
model at any input size (padding of small maps, border windows, key-grid sizes included). The
pass runs on the ``meta`` device by default: only shapes are computed, which is exact for
counting and takes no memory or time.

==================  =====================================================================
category            counted as
==================  =====================================================================
``conv``            every convolution (stems, down projections, 1x1 projections of DMHA,
                    ConvFFN, LPU and offset convs): ``out.numel() * C_in/groups * k_h * k_w``
``linear``          matrix products inside ``nn.Linear`` modules (qkv / proj of NA and window
                    attention, the v1 MLP, the classifier): ``M * K * N`` per product
``attn_matmul``     every other matrix product: the attention matmuls ``QK^T`` and ``AV``.
                    NA: ``2 * B * heads * H * W * k*k * head_dim`` (each query against its k*k
                    window), DMHA: ``2 * B * heads * HW * Ns * head_dim`` (every query against
                    the ``Ns = Hk*Wk`` sampled keys), window attention: ``2 * w^4 * C`` per
                    window. Fused ``scaled_dot_product_attention`` kernels count the same two
                    products.
``softmax``         ``SOFTMAX_FLOPS_PER_ELEMENT`` (3: exponential, running sum, division) per
                    element of the softmax input, i.e. per attention logit.
``grid_sample``     ``GRID_SAMPLE_FLOPS_PER_OUTPUT[mode]`` per output element, channels included
                    (bilinear 4: one MAC per corner tap, as fvcore counts ``grid_sampler``).
                    DMHA has two: the key/value sampling ``B * C * Ns`` outputs and the
                    deformable relative position bias ``B * heads * HW * Ns`` outputs.
==================  =====================================================================

Not counted (as in fvcore's and the papers' totals): normalisations, activations, additions,
bias additions, pooling, indexing/gathers, padding and reshapes. Attention is counted on the
``reference`` backend of each attention kind (the count describes the model's math, not the
kernel that happens to run); the modules' backend choice is restored afterwards.

Use :func:`count_model` on a module, :func:`count_config` on a config file, or
``tools/analysis/get_flops.py CONFIG [--shape H W]``.
"""
import contextlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from math import prod
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

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


# -- per-operator rules: (args, kwargs, out) -> {category: count} ------------------------------
def _conv(args, kwargs, out):
    x, w = args[0], args[1]
    transposed = args[6] if len(args) > 6 else kwargs.get('transposed', False)
    if transposed:  # each input element meets C_out/groups * k taps
        return {'conv': x.numel() * w.shape[1] * prod(w.shape[2:])}
    return {'conv': out.numel() * w.shape[1] * prod(w.shape[2:])}


def _mm(args, kwargs, out):
    a, b = args[-2], args[-1]  # mm(a, b), addmm(bias, a, b)
    return {'matmul': a.shape[0] * a.shape[1] * b.shape[1]}


def _bmm(args, kwargs, out):
    a, b = args[-2], args[-1]  # bmm(a, b), baddbmm(bias, a, b)
    return {'matmul': a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]}


def _softmax(args, kwargs, out):
    return {'softmax': SOFTMAX_FLOPS_PER_ELEMENT * args[0].numel()}


def _grid_sample(args, kwargs, out):
    mode = args[2] if len(args) > 2 else kwargs.get('interpolation_mode', 0)
    return {'grid_sample': GRID_SAMPLE_FLOPS_PER_OUTPUT.get(int(mode), 4) * out.numel()}


def _sdpa(args, kwargs, out):
    q, k, v = args[0], args[1], args[2]
    lead = prod(q.shape[:-2])
    L, S, E, Ev = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    return {'attn_matmul': lead * L * S * (E + Ev),
            'softmax': SOFTMAX_FLOPS_PER_ELEMENT * lead * L * S}


def _build_rules():
    rules = {}

    def add(names, fn):
        for name in names:
            op = getattr(aten, name, None)
            if op is not None:
                rules[op] = fn

    add(['convolution', '_convolution', 'cudnn_convolution', 'mkldnn_convolution'], _conv)
    add(['mm', 'addmm'], _mm)
    add(['bmm', 'baddbmm'], _bmm)
    add(['_softmax', '_safe_softmax'], _softmax)
    add(['grid_sampler_2d', 'cudnn_grid_sampler'], _grid_sample)
    add(['_scaled_dot_product_flash_attention_for_cpu', '_scaled_dot_product_flash_attention',
         '_scaled_dot_product_efficient_attention', '_scaled_dot_product_cudnn_attention'],
        _sdpa)
    return rules


RULES = _build_rules()


class _OpCounter(TorchDispatchMode):
    """Counts the operators of :data:`RULES`, attributed to the innermost running module."""

    def __init__(self, stack: List[Tuple[str, nn.Module]]):
        super().__init__()
        self.stack = stack
        self.counts: Dict[str, Dict[str, int]] = {}
        self.uncounted = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # The mode is inactive while its handler runs, so the ops a kernel calls internally
        # are not seen again: every op is counted once, at the level the model called it.
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = RULES.get(func.overloadpacket)
        if rule is None:
            self.uncounted.add(str(func.overloadpacket))
            return out
        name, module = self.stack[-1] if self.stack else ('', None)
        first = out[0] if isinstance(out, (tuple, list)) else out
        for cat, n in rule(args, kwargs, first).items():
            if cat == 'matmul':
                cat = 'linear' if isinstance(module, nn.Linear) else 'attn_matmul'
            row = self.counts.setdefault(name, dict.fromkeys(CATEGORIES, 0))
            row[cat] += int(n)
        return out


@contextlib.contextmanager
def _module_stack(model: nn.Module):
    stack: List[Tuple[str, nn.Module]] = []
    handles = []
    for name, module in model.named_modules():
        def pre(mod, inputs, _name=name):
            stack.append((_name, mod))

        def post(mod, inputs, output):
            stack.pop()
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


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


# -- rows of the table -----------------------------------------------------------------------
_DAT_PARTS = (
    (re.compile(r'^stem(\.|$)'), lambda m: 'stem'),
    (re.compile(r'^stages\.(\d+)(\.|$)'), lambda m: f'stage{m.group(1)}'),
    (re.compile(r'^downsamples\.(\d+)(\.|$)'), lambda m: f'down{m.group(1)}'),
    (re.compile(r'^norms\.(\d+)(\.|$)'), lambda m: 'out norms'),
)


def _row_of(name: str, dat_prefixes: Sequence[str]) -> str:
    for prefix in dat_prefixes:
        if prefix == '' or name == prefix[:-1] or name.startswith(prefix):
            rest = name[len(prefix):]
            for pattern, label in _DAT_PARTS:
                m = pattern.match(rest)
                if m:
                    return prefix + label(m)
            return prefix[:-1] if prefix else '(other)'
    return name.split('.', 1)[0] if name else '(top)'


@dataclass
class FlopReport:
    """FLOPs (MACs) and parameters of one forward pass, per table row and in total."""
    model_name: str
    input_shape: Tuple[int, ...]
    rows: 'OrderedDict[str, Dict[str, int]]'  # row -> {params, categories...}
    uncounted_ops: List[str] = field(default_factory=list)
    arch: Optional[str] = None

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
        if self.arch is None or self.input_shape[-1] != self.input_shape[-2]:
            return None
        return PAPER_GFLOPS.get((self.arch, self.input_shape[-1]))

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
        paper = self.paper_gflops()
        if paper is not None:
            name = PAPER_NAMES[(self.arch, self.input_shape[-1])]
            ours = self.flops / 1e9
            lines.append(f'paper ({name} classifier): {paper:.1f}G; counted {ours:.2f}G '
                         f'({(ours / paper - 1) * 100:+.1f}%)')
        return '\n'.join(lines)

    def _totals(self):
        out = {'params': self.params}
        out.update({c: self.total(c) for c in CATEGORIES})
        return out


def _dat_info(model: nn.Module):
    from dat_mm.models.backbones import ARCH_ZOO, DAT
    prefixes, arch = [], None
    for name, m in model.named_modules():
        if isinstance(m, DAT):
            prefixes.append(name + '.' if name else '')
            for preset in ARCH_ZOO:
                if m.arch == _resolved(preset):
                    arch = preset
    return prefixes, arch


def _resolved(preset):
    from dat_mm.models.backbones import resolve_arch
    return resolve_arch(preset)


def count_model(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224),
                device: str = None, forward=None, model_name: str = None) -> FlopReport:
    """Count FLOPs (MACs) and parameters of one forward pass of ``model``.

    Args:
        model: any module; DAT backbones inside it get per-part rows (stem, stages, downs).
        input_shape: NCHW shape of the input.
        device: ``None`` runs where the model is; ``'meta'`` (shapes only: exact, instant, no
            memory) or another device **moves the model there** (pass a copy to keep it).
        forward: ``callable(model, x)`` running the pass (default ``model(x)``).
    """
    if len(input_shape) != 4:
        raise ValueError(f'input_shape must be NCHW, got {tuple(input_shape)}')
    prefixes, arch = _dat_info(model)
    params = OrderedDict()
    for name, p in model.named_parameters():
        module_name = name.rsplit('.', 1)[0] if '.' in name else ''
        row = _row_of(module_name, prefixes)
        params[row] = params.get(row, 0) + p.numel()
    if device is not None:
        model.to(device)
    else:
        device = next(iter(model.parameters()), torch.zeros(())).device
    was_training = model.training
    model.eval()
    x = torch.zeros(*input_shape, device=device)
    run = forward or (lambda m, t: m(t))
    try:
        with torch.no_grad(), reference_attention(model), _module_stack(model) as stack:
            counter = _OpCounter(stack)
            with counter:
                run(model, x)
    finally:
        model.train(was_training)
    rows = OrderedDict()
    order = []  # rows in the order the forward pass reaches them, then parameter-only rows
    for row in [_row_of(n, prefixes) for n in counter.counts] + list(params):
        if row not in order:
            order.append(row)
    for row in order:
        rows[row] = dict(params=params.get(row, 0), **dict.fromkeys(CATEGORIES, 0))
    for name, cats in counter.counts.items():
        row = rows[_row_of(name, prefixes)]
        for c, n in cats.items():
            row[c] += n
    return FlopReport(model_name or type(model).__name__, tuple(input_shape), rows,
                      sorted(counter.uncounted), arch)


# -- configs -----------------------------------------------------------------------------------
def build_from_config(cfg):
    """The model a config describes, to count: the whole classifier for mmpretrain configs, the
    backbone alone for any other (det/seg) config, built by
    :func:`dat_mm.apis.build_model_from_config`. Returns ``(module, description)``."""
    from mmengine.config import Config

    from ..apis.build import build_model_from_config
    if not isinstance(cfg, Config):
        cfg = Config.fromfile(cfg)
    if cfg.get('default_scope') == 'mmpretrain' or cfg.model.get('type') == 'ImageClassifier':
        return build_model_from_config(cfg), f'{cfg.model.type} (whole classifier)'
    model = build_model_from_config(cfg, backbone_only=True)
    return model, f'{cfg.model.backbone.type} (backbone only)'


def _pipeline_size(cfg) -> Optional[Tuple[int, int]]:
    """Model input side of an mmpretrain test pipeline (last crop / fixed resize), if any."""
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


def count_config(config, shape: Optional[Sequence[int]] = None, device: str = 'meta'
                 ) -> FlopReport:
    """Count the model built from ``config`` (a path or Config) at ``shape`` ``(H, W)``; the
    default is the classifier's test input size, else 224 x 224."""
    from mmengine.config import Config
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    model, what = build_from_config(cfg)
    if shape is None:
        shape = _pipeline_size(cfg) or (224, 224)
    h, w = shape
    if what.endswith('(whole classifier)'):
        def forward(m, x):
            return m(x, mode='tensor')
    else:
        forward = None
    name = f'{getattr(cfg, "filename", "config")}: {what}'
    return count_model(model, (1, 3, h, w), device=device, forward=forward, model_name=name)


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
