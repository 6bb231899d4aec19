"""ONNX export of DAT models built from configs, checked with onnxruntime at several sizes.

What is exported (``component``)
--------------------------------
* ``backbone``: the DAT backbone, an NCHW image to its stage maps (``out_indices``);
* ``backbone+neck``: the neck's outputs too (mmdet / mmseg FPN maps, the classifier's pooled
  vector);
* ``whole``: the model's tensor mode, ``model(x, mode='tensor')``, i.e. the network without
  post-processing: a classifier's logits, a segmentor's decode-head logits (at the head's
  resolution, before the resize to the image), a single-stage detector's per-level class
  scores and box deltas (no box decoding, no NMS).

Default: ``whole`` for classifiers, ``backbone+neck`` for other models with a neck, else
``backbone``. The input is one float32 ``(1, 3, H, W)`` image as the model sees it, i.e. after
the config's data preprocessor (channel order and mean/std normalisation are not in the
graph; the ONNX metadata states them). Height and width are dynamic, the batch is 1.

How
---
``torch.export.export`` (non-strict) captures the component with ``Dim.AUTO`` height and width,
then the torch.export-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``, which
needs ``onnxscript``) translates it and, by default, runs its graph optimiser. The legacy
TorchScript exporter (``dynamo=False``, deprecated since torch 2.9) is not used: it traces one
size and cannot say for which other sizes its graph is valid.

Attention is exported on the ``reference`` paths (:mod:`dat_mm.ops`), which are plain tensor
operations whose shapes follow the input symbolically. The fast paths cannot be captured for
all sizes: the tiled neighbourhood path builds its tiling plan on the host and caches it by
the map's size, and the chunked deformable path loops over query chunks whose count, and
whose bias method, it picks from the sizes and coordinate values of the call. Feature maps
stay in contiguous NCHW (``channels_last`` off; a memory layout means nothing in ONNX).

Which sizes the graph is valid for
----------------------------------
Python code that branches on a size (padding a map only when it is smaller than a kernel,
for instance) makes the captured graph hold one branch. ``torch.export`` records each such
decision as a guard and reports the range of heights and widths for which the graph is the
model: :attr:`ExportResult.min_size` / ``max_size``, also written into the ONNX metadata
(``dat_mm.min_height`` ...). For the DAT++ presets it is ``H, W >= 97``: below that the
stage-3 maps (stride 16) are smaller than the 7x7 neighbourhood kernel and PyTorch pads them,
a step the graph does not contain. A dimension that ``torch.export`` had to fix to the
example's value makes the export fail (:class:`ExportError`), and :func:`check_onnx` refuses
sizes outside the range. The ONNX graph itself does not check its input size: below the
range it silently computes something else.

Some specialisation is silent even in ``torch.export``: adaptive pooling to an output larger
than 1x1 (mmseg's UPerHead pyramid pooling) is decomposed with the pooling windows of the
export size, and the graph is wrong at other sizes without any guard. Such modules are
refused up front (:func:`component_module`); the multi-size onnxruntime check exists to catch
the cases nobody listed.

The check
---------
:func:`check_onnx` runs the ONNX file with onnxruntime (CPU) and the same PyTorch module
(reference attention) on one random input per size and reports, per output, the largest
absolute difference and the relative one, ``max|onnx - torch| / max|torch|`` (the largest
error against the output's scale: elementwise relative errors are meaningless where outputs
cross zero). A size passes when every output has the PyTorch shape, is finite and is within
``tolerance`` relative.
"""
import copy
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..apis import build_model_from_config, load_config
from ..checkpoint import atomic_write
from ..models import find_backbone
from ..models.layers import DeformableAttention2d, NeighborhoodAttention2d

__all__ = ['COMPONENTS', 'DEFAULT_OPSET', 'MIN_OPSET', 'DEFAULT_CHECK_SIZES', 'ExportError',
           'ExportResult', 'OutputDiff', 'SizeCheck', 'CheckReport', 'load_model',
           'default_component', 'component_module', 'use_exportable_paths', 'export_onnx',
           'check_onnx', 'export_config', 'ort_session', 'parse_size', 'preprocessing',
           'onnx_versions']

COMPONENTS = ('backbone', 'backbone+neck', 'whole')
#: torch 2.14's default opset for the torch.export-based exporter.
DEFAULT_OPSET = 20
#: The lowest opset the exporter's op library implements (it keeps 18 when asked for less).
MIN_OPSET = 18
#: Sizes checked when none are given: the export size, a larger non-square one, an odd one.
DEFAULT_CHECK_SIZES = ((224, 224), (256, 320), (231, 197))
EXPORT_SIZE = (224, 224)
INPUT_NAME = 'input'


class ExportError(ValueError):
    """A model, component, option or input size the exporter cannot handle; the message
    names the config and the reason."""


@dataclass
class ExportResult:
    path: str
    component: str
    input_name: str
    output_names: List[str]
    export_size: Tuple[int, int]
    #: smallest (H, W) for which torch.export proved the graph equal to the model
    min_size: Tuple[int, int]
    #: largest (H, W); None: unbounded
    max_size: Tuple[Optional[int], Optional[int]]
    opset: int
    optimized: bool
    seconds: float
    in_channels: int = 3

    def accepts(self, size: Tuple[int, int]) -> Optional[str]:
        """None if the graph is valid at ``size``, else why not."""
        for axis, value, low, high in zip(('height', 'width'), size, self.min_size,
                                          self.max_size):
            if value < low or (high is not None and value > high):
                bound = f'[{low}, {high}]' if high is not None else f'>= {low}'
                return (f'{size[0]}x{size[1]}: {axis} {value} is outside the range for '
                        f'which the exported graph is the model ({axis} {bound}, as '
                        'torch.export proved it); at that size the PyTorch code takes a '
                        'branch (e.g. padding a map smaller than an attention kernel) that '
                        'the graph does not contain')
        return None


@dataclass
class OutputDiff:
    name: str
    shape: Tuple[int, ...]
    max_abs: float
    max_rel: float
    problem: str = ''


@dataclass
class SizeCheck:
    size: Tuple[int, int]
    outputs: List[OutputDiff] = field(default_factory=list)
    error: str = ''

    def passed(self, tolerance: float) -> bool:
        return not self.error and all(not o.problem and o.max_rel <= tolerance
                                      for o in self.outputs)


@dataclass
class CheckReport:
    path: str
    tolerance: float
    sizes: List[SizeCheck]

    @property
    def passed(self) -> bool:
        return all(s.passed(self.tolerance) for s in self.sizes)

    def format(self) -> str:
        lines = [f'onnxruntime vs PyTorch (reference attention), relative = max|onnx - '
                 f'torch| / max|torch|, tolerance {self.tolerance:g}:']
        for s in self.sizes:
            verdict = 'ok' if s.passed(self.tolerance) else 'FAILED'
            lines.append(f'  {s.size[0]}x{s.size[1]}: {verdict}')
            if s.error:
                lines.append(f'    {s.error}')
            for o in s.outputs:
                shape = 'x'.join(str(d) for d in o.shape)
                extra = f'  {o.problem}' if o.problem else ''
                lines.append(f'    {o.name:<16} {shape:<18} max abs {o.max_abs:.3e}  '
                             f'max rel {o.max_rel:.3e}{extra}')
        return '\n'.join(lines)


def onnx_versions() -> Dict[str, str]:
    """Versions of the packages the export and the check use (``'missing'`` if absent)."""
    import importlib.metadata as md
    out = {'torch': torch.__version__}
    for name in ('onnx', 'onnxscript', 'onnxruntime'):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = 'missing'
    return out


def _require(*modules: str) -> None:
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f'ONNX export needs {", ".join(missing)}: pip install '
                          '"dat_mm[onnx]" (onnx, onnxscript, onnxruntime; the versions tested '
                          'are pinned in requirements/constraints.txt)')


def _check_options(component: Optional[str] = None, opset: Optional[int] = None,
                   tolerance: Optional[float] = None) -> None:
    """An :class:`ExportError` for an unknown component, an opset the exporter does not
    implement or a tolerance that is not positive (None: not checked)."""
    if component is not None and component not in COMPONENTS:
        raise ExportError(f'unknown component {component!r}; choose one of {COMPONENTS}')
    if opset is not None and (not isinstance(opset, int) or opset < MIN_OPSET):
        raise ExportError(f'opset {opset!r}: the torch.export-based exporter implements opset '
                          f'{MIN_OPSET} and newer')
    if tolerance is not None and not tolerance > 0:
        raise ExportError(f'tolerance must be positive, got {tolerance!r}')


def parse_size(text: str) -> Tuple[int, int]:
    """``'231x197'`` (height x width) or ``'224'`` (square) -> ``(H, W)``."""
    parts = text.lower().split('x')
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ExportError(f'size {text!r}: expected HxW with positive integers, e.g. 231x197')
    return size


# ---------------------------------------------------------------------------------------
# The model and the component


def load_model(config: str, checkpoint: Optional[str] = None,
               cfg_options: Optional[dict] = None):
    """``(model, cfg, note)``: the model of ``config`` in eval mode, on the CPU.

    With ``checkpoint``: its weights, read by :func:`dat_mm.apis.load_model_weights`
    (through :func:`dat_mm.checkpoint.safe_load`: a missing file, a TorchScript archive or a
    pickle asking for other globals is an error naming the file). Without: random weights
    (the modules' constructors; ``model.backbone.init_cfg`` is set to None, so no pretrained
    file is needed), and ``note`` says so. The model must hold one DAT backbone.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config not found: {config}')
    if checkpoint is not None and '://' not in checkpoint and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    options = dict(cfg_options or {})
    if checkpoint is None:
        options['model.backbone.init_cfg'] = None
    cfg, _ = load_config(config, cfg_options=options)
    if cfg.get('model') is None or not isinstance(cfg.model.get('backbone'), dict):
        raise ExportError(f'{config}: its model has no backbone; the exporter handles models '
                          'built on a DAT backbone')
    model = build_model_from_config(cfg, checkpoint).eval()
    try:
        find_backbone(model)
    except ValueError as err:
        raise ExportError(f'{config}: {err}; the exporter handles models built on a DAT '
                          'backbone') from None
    note = '' if checkpoint is not None else (
        'no checkpoint given: random weights (the modules\' initialisation; '
        'model.backbone.init_cfg=None), enough to check the export, not for predictions')
    return model, cfg, note


def _is_two_stage_detector(model: nn.Module) -> bool:
    return any(c.__name__ == 'TwoStageDetector' for c in type(model).__mro__)


def _kind(model: nn.Module) -> str:
    for cls in type(model).__mro__:
        if cls.__name__ == 'ImageClassifier':
            return 'classifier'
        if cls.__name__ == 'BaseSegmentor':
            return 'segmentor'
        if cls.__name__ == 'BaseDetector':
            return 'detector'
    return 'model'


def default_component(model: nn.Module) -> str:
    if _kind(model) == 'classifier':
        return 'whole'
    return 'backbone+neck' if getattr(model, 'neck', None) is not None else 'backbone'


class _Component(nn.Module):
    """``component`` of ``model`` as a module of one image tensor; flat tuple of outputs."""

    def __init__(self, model: nn.Module, component: str):
        super().__init__()
        self.model = model
        self.component = component

    def forward(self, x: torch.Tensor):
        if self.component == 'backbone':
            out = find_backbone(self.model)(x)
        elif self.component == 'backbone+neck':
            out = self.model.neck(self.model.backbone(x))
        else:
            out = self.model(x, mode='tensor')
        return tuple(torch.utils._pytree.tree_leaves(out))


def _output_names(model: nn.Module, component: str) -> Optional[List[str]]:
    if component == 'backbone':
        return [f'stage{i}' for i in find_backbone(model).out_indices]
    if component == 'backbone+neck':
        return None  # counted after a forward pass: neck{i}
    kind = _kind(model)
    return {'classifier': ['logits'], 'segmentor': ['seg_logits']}.get(kind)


def _unexportable_modules(module: nn.Module, skip: Sequence[str] = ()) -> List[str]:
    """Modules whose ONNX graph torch 2.14 specialises to the export size without a guard."""
    found = []
    for name, m in module.named_modules():
        if any(name == s or name.startswith(s + '.') for s in skip):
            continue
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size = m.output_size
            sizes = size if isinstance(size, (tuple, list)) else (size, size)
            if any(s is not None and s != 1 for s in sizes):
                found.append(f'{name} ({type(m).__name__}(output_size={size}))')
    return found


def component_module(model: nn.Module, component: Optional[str] = None, where: str = 'model'):
    """``(module, component, output_names)``: what :func:`export_onnx` exports.

    ``output_names`` is None where they are only known after a forward pass (a neck's maps).
    An unknown component, one the model lacks, or one that cannot be exported correctly is
    an :class:`ExportError` naming ``where`` and the reason.
    """
    component = component or default_component(model)
    _check_options(component=component)
    find_backbone(model)
    kind = _kind(model)
    if component == 'backbone+neck' and getattr(model, 'neck', None) is None:
        raise ExportError(
            f'{where}: {type(model).__name__} has no neck (its backbone feeds the head '
            "directly); export 'backbone' or 'whole'")
    if component == 'whole':
        if kind == 'model':
            raise ExportError(f'{where}: {type(model).__name__} is not an mmpretrain '
                              "classifier, mmseg segmentor or mmdet detector; 'whole' exports "
                              "their tensor mode. Export 'backbone'")
        if _is_two_stage_detector(model):
            raise ExportError(
                f"{where}: 'whole' is not available for {type(model).__name__}: a two-stage "
                'detector\'s tensor mode selects RPN proposals (box decoding and NMS with the '
                'images\' metadata) before its RoI heads, which the ONNX exporter cannot '
                "capture; export 'backbone+neck' (the default) and run the heads in mmdet")
        skip = ('auxiliary_head',)  # training only
        bad = _unexportable_modules(model, skip)
        if bad:
            raise ExportError(
                f"{where}: 'whole' cannot be exported with dynamic sizes: {', '.join(bad)}: "
                'torch 2.14 exports adaptive pooling to more than 1x1 with the pooling windows '
                'of the export size, a graph that is wrong (or fails in onnxruntime) at other '
                "sizes without any guard; export 'backbone'"
                + (" or 'backbone+neck'" if getattr(model, 'neck', None) is not None else ''))
    module = _Component(model, component).eval()
    return module, component, _output_names(model, component)


def use_exportable_paths(module: nn.Module) -> int:
    """Put every attention layer of ``module`` on its ``reference`` path and DAT backbones on
    NCHW maps (see the module docstring); returns the number of attention layers set."""
    n = 0
    for m in module.modules():
        if isinstance(m, (NeighborhoodAttention2d, DeformableAttention2d)):
            m.backend = 'reference'
            n += 1
        if hasattr(m, 'channels_last') and type(m).__name__ == 'DAT':
            m.channels_last = False
    return n


# ---------------------------------------------------------------------------------------
# Export


def _symbol_range(ep, dim, axis: str, where: str, example: int):
    """``(symbol name, low, high)`` of one input dimension of an ExportedProgram."""
    if not isinstance(dim, torch.SymInt):
        raise ExportError(
            f'{where}: the exported graph fixes the input {axis} to {example} (the model\'s '
            f'code branches on the {axis} in a way torch.export can only keep for the export '
            'size), so it would be wrong at any other size; this component cannot be exported '
            'with dynamic height and width')
    expr = dim.node.expr
    symbols = getattr(expr, 'free_symbols', set())
    if len(symbols) != 1 or expr != next(iter(symbols)):
        raise ExportError(f'{where}: torch.export constrains the input {axis} to {expr}; only a '
                          'free height and width are supported')
    symbol = next(iter(symbols))
    bounds = ep.range_constraints.get(symbol)
    low = int(bounds.lower) if bounds is not None else 1
    upper = bounds.upper if bounds is not None else None
    try:
        high = int(upper) if upper is not None else None
    except (TypeError, ValueError, AttributeError, OverflowError):  # int_oo: unbounded
        high = None
    return str(symbol), max(low, 1), high


def _violations(message: str) -> str:
    """The guards of a torch.export constraint violation (its bullet lines, first sentence
    each, without the advice on ``mark_dynamic``), joined."""
    lines = []
    for line in message.splitlines():
        line = line.strip()
        if line.startswith('- '):
            text = line[2:]
            lines.append(text.split('. If you', 1)[0].rstrip('.'))
    return ' / '.join(lines[:6]) or message.strip().splitlines()[0]


def _capture(module: nn.Module, example: torch.Tensor, where: str,
             min_size: Optional[Tuple[int, int]] = None):
    """``torch.export`` with named, dynamic height and width.

    The dimensions are declared with a range (``min_size``, default 1, to unbounded), so that
    every guard the trace records must hold on the whole range or the export fails with the
    guard (``Dim.AUTO`` would instead let some guards fix intermediate sizes silently, e.g. an
    upsampling output computed from a float scale factor). Without ``min_size``, a violation
    that torch.export can fix by narrowing the range (its suggested fix) is applied and the
    trace repeated once; a fix that fixes a dimension to one value is an error."""
    from torch._dynamo.exc import UserError
    from torch.export import Dim
    from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes
    low_h, low_w = min_size or (1, 1)
    shapes = ({2: Dim('height', min=low_h), 3: Dim('width', min=low_w)},)

    def export(dynamic_shapes):
        # As torch.onnx's own capture: size-oblivious reasoning keeps size-1 dims generic.
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes,
                                       strict=False)

    def failure(err):
        text = [line for line in str(err).strip().splitlines() if line.strip()][:8]
        return ExportError(f'{where}: torch.export could not capture the model with dynamic '
                           f'height and width ({type(err).__name__}): ' + ' / '.join(text))

    try:
        return export(shapes)
    except UserError as err:
        violation = err
    except Exception as err:  # noqa: BLE001 - reported with the component and config
        raise failure(err) from None
    guards = _violations(violation.msg)
    if min_size is not None:
        raise ExportError(f'{where}: the graph is not valid for every height >= {low_h} and '
                          f'width >= {low_w} (min_size): torch.export found the guards '
                          f'{guards}') from None
    try:
        refined = refine_dynamic_shapes_from_suggested_fixes(violation.msg, shapes)
    except Exception:  # noqa: BLE001 - no fix it can apply: report the guards
        refined = None
    fixed = [axis for axis, key in (('height', 2), ('width', 3))
             if refined is None or not isinstance(refined[0][key], Dim)]
    if not fixed:
        try:
            return export(refined)
        except UserError as err:
            guards = _violations(err.msg)
            fixed = ['height', 'width']
        except Exception as err:  # noqa: BLE001
            raise failure(err) from None
    raise ExportError(
        f'{where}: the {" and ".join(fixed)} cannot be dynamic: the model\'s code branches on '
        'the input size in ways one graph cannot hold for all sizes (torch.export: '
        f'{guards}); this component cannot be exported with dynamic height and width') from None


def export_onnx(module: nn.Module, path: str, *, where: str = 'model',
                component: str = 'backbone', output_names: Optional[List[str]] = None,
                example_size: Tuple[int, int] = EXPORT_SIZE, opset: int = DEFAULT_OPSET,
                optimize: bool = True, metadata: Optional[Dict[str, str]] = None,
                min_size: Optional[Tuple[int, int]] = None,
                in_channels: Optional[int] = None) -> ExportResult:
    """Export ``module`` (one ``(1, C, H, W)`` float tensor in, a tuple of tensors out) to
    ``path`` with dynamic height and width; the file is written atomically.

    ``min_size``: the smallest (H, W) the graph must be valid for (an error if torch.export
    cannot prove it); None: the smallest it can prove, found by one more trace when the first
    one's range (from 1) does not hold. ``in_channels``: of the input (None: the module's DAT
    backbone's)."""
    _require('onnx', 'onnxscript')
    _check_options(opset=opset)
    start = time.perf_counter()
    use_exportable_paths(module)
    module.eval()
    in_channels = in_channels or find_backbone(module).in_channels
    if min_size is not None:
        if len(min_size) != 2 or min(min_size) < 1:
            raise ExportError(f'min_size must be (H, W) >= 1, got {min_size}')
        example_size = tuple(max(e, m) for e, m in zip(example_size, min_size))
    example = torch.randn(1, in_channels, *example_size)
    try:
        with torch.no_grad():
            outputs = module(example)
    except Exception as err:  # noqa: BLE001 - any failure of the model's own code
        first = str(err).strip().splitlines()[0] if str(err).strip() else ''
        cause = type(err).__name__ + (f': {first}' if first else '')
        raise ExportError(
            f'{where}: {component} does not run on an image tensor alone ({cause}); a model '
            "whose tensor mode needs the images' metadata (data samples: image shapes, padding "
            "masks) cannot be exported whole; export 'backbone' or 'backbone+neck'") from None
    if output_names is None or len(output_names) != len(outputs):
        prefix = 'neck' if component == 'backbone+neck' else 'output'
        output_names = [f'{prefix}{i}' for i in range(len(outputs))]
    ep = _capture(module, example, where, min_size)
    placeholder = [n for n in ep.graph.nodes if n.op == 'placeholder'][-1]
    shape = placeholder.meta['val'].shape
    h_sym, h_low, h_high = _symbol_range(ep, shape[2], 'height', where, example_size[0])
    w_sym, w_low, w_high = _symbol_range(ep, shape[3], 'width', where, example_size[1])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        program = torch.onnx.export(ep, dynamo=True, opset_version=opset, optimize=optimize,
                                    input_names=[INPUT_NAME], output_names=output_names,
                                    verbose=False)
    program.rename_axes({h_sym: 'height', w_sym: 'width'})
    props = {'dat_mm.component': component, 'dat_mm.min_height': str(h_low),
             'dat_mm.min_width': str(w_low),
             'dat_mm.max_height': str(h_high) if h_high is not None else 'unbounded',
             'dat_mm.max_width': str(w_high) if w_high is not None else 'unbounded',
             'dat_mm.attention': 'reference'}
    props.update(metadata or {})
    program.model.metadata_props.update(props)
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    atomic_write(path, lambda tmp: program.save(tmp))
    return ExportResult(path=path, component=component, input_name=INPUT_NAME,
                        output_names=list(output_names), export_size=tuple(example_size),
                        min_size=(h_low, w_low), max_size=(h_high, w_high), opset=opset,
                        optimized=optimize, seconds=time.perf_counter() - start,
                        in_channels=in_channels)


# ---------------------------------------------------------------------------------------
# Check


def ort_session(path: str, threads: Optional[int] = None):
    """An onnxruntime CPU session of ``path`` (warnings off; ``threads`` intra-op threads,
    None: onnxruntime's default, one per core)."""
    _require('onnxruntime')
    import onnxruntime as ort
    ort.set_default_logger_severity(3)  # errors come back as exceptions, reported per size
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _compare(name: str, got, expected: torch.Tensor) -> OutputDiff:
    import numpy as np
    exp = expected.detach().double().numpy()
    got = np.asarray(got)
    if got.shape != exp.shape:
        return OutputDiff(name, tuple(got.shape), float('inf'), float('inf'),
                          f'shape {tuple(got.shape)}, PyTorch {tuple(exp.shape)}')
    if not np.isfinite(got).all():
        return OutputDiff(name, tuple(got.shape), float('inf'), float('inf'),
                          'non-finite values in the onnxruntime output')
    diff = float(np.abs(got.astype(np.float64) - exp).max()) if exp.size else 0.0
    scale = float(np.abs(exp).max()) if exp.size else 0.0
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float('inf'))
    return OutputDiff(name, tuple(got.shape), diff, rel)


def check_onnx(result: ExportResult, module: nn.Module,
               sizes: Sequence[Tuple[int, int]] = DEFAULT_CHECK_SIZES,
               tolerance: float = 1e-4, *, seed: int = 0,
               allow_outside_range: bool = False) -> CheckReport:
    """Run the exported file and ``module`` (as exported: reference attention) on the same
    random input at each size and compare every output (see the module docstring).

    A size outside the range the export is valid for is an :class:`ExportError`, unless
    ``allow_outside_range`` (to show what the graph computes there)."""
    _check_options(tolerance=tolerance)
    if not sizes:
        raise ExportError('no sizes to check')
    for size in sizes:
        reason = result.accepts(tuple(size))
        if reason and not allow_outside_range:
            raise ExportError(f'{result.path}: {reason}')
    use_exportable_paths(module)
    module.eval()
    session = ort_session(result.path)
    in_channels = result.in_channels
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for h, w in sizes:
        x = torch.randn(1, in_channels, h, w, generator=generator)
        check = SizeCheck((h, w))
        with torch.no_grad():
            expected = module(x)
        try:
            got = session.run(None, {result.input_name: x.numpy()})
        except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
            check.error = f'onnxruntime failed: {str(err).strip().splitlines()[0]}'
            checks.append(check)
            continue
        if len(got) != len(expected):
            check.error = (f'{len(got)} outputs from onnxruntime, {len(expected)} from '
                           'PyTorch')
        for name, g, e in zip(result.output_names, got, expected):
            check.outputs.append(_compare(name, g, e))
        checks.append(check)
    return CheckReport(result.path, tolerance, checks)


def preprocessing(cfg) -> str:
    """The config's data preprocessor as one line for the ONNX metadata (the graph expects
    its output)."""
    pre = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    keys = ('type', 'mean', 'std', 'to_rgb', 'bgr_to_rgb', 'pad_size_divisor')
    found = {k: pre[k] for k in keys if k in pre}
    return repr(copy.deepcopy(found)) if found else 'none in the config'


def export_config(config: str, checkpoint: Optional[str] = None, out: Optional[str] = None, *,
                  component: Optional[str] = None, opset: int = DEFAULT_OPSET,
                  optimize: bool = True, sizes: Sequence[Tuple[int, int]] = DEFAULT_CHECK_SIZES,
                  tolerance: float = 1e-4, cfg_options: Optional[dict] = None,
                  min_size: Optional[Tuple[int, int]] = None,
                  log=print) -> Tuple[ExportResult, CheckReport]:
    """What tools/deployment/export_onnx.py does: load the model of ``config`` (and
    ``checkpoint``), export ``component`` to ``out`` (default: the config's name with the
    component, ``.onnx``, in the working directory) and check it at ``sizes``.

    Sizes outside the range the export turns out to be valid for are refused after the
    export (the range is known only then); a bad size, component or opset is refused before
    anything is built. ``log`` receives progress lines."""
    _require('onnx', 'onnxscript', 'onnxruntime')
    _check_options(component, opset, tolerance)
    sizes = [tuple(s) for s in sizes]
    if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise ExportError(f'sizes must be (H, W) pairs of positive integers, got {sizes}')
    model, cfg, note = load_model(config, checkpoint, cfg_options)
    if note:
        log(f'note: {note}')
    module, component, names = component_module(model, component, config)
    if out is None:
        name = osp.splitext(osp.basename(config))[0]
        out = f'{name}_{component.replace("+", "_")}.onnx'
    log(f'exporting {component} of {config} ({type(model).__name__}) to {out}: torch.export '
        f'+ ONNX opset {opset}, attention on the reference paths')
    metadata = {'dat_mm.config': config, 'dat_mm.checkpoint': osp.basename(checkpoint)
                if checkpoint else 'none (random weights)',
                'dat_mm.input': 'float32 (1, 3, height, width) after the data preprocessor',
                'dat_mm.preprocessing': preprocessing(cfg)}
    result = export_onnx(module, out, where=config, component=component, output_names=names,
                         opset=opset, optimize=optimize, metadata=metadata,
                         min_size=min_size)
    high = ['unbounded' if v is None else str(v) for v in result.max_size]
    log(f'exported in {result.seconds:.0f} s: {out}; outputs {", ".join(result.output_names)}; '
        f'valid for height {result.min_size[0]}..{high[0]}, width {result.min_size[1]}..'
        f'{high[1]}')
    report = check_onnx(result, module, sizes, tolerance)
    return result, report
