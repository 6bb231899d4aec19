"""Conversion of the authors' published checkpoints to dat_mm's layout, as pure functions.

Published layout (DAT / DAT++ ImageNet checkpoints under ``model``; the mmdet 2 / mmseg 0.x
ones under ``state_dict`` with a ``backbone.`` prefix) -> dat_mm:

=====================================================  ===================================
published                                               dat_mm
=====================================================  ===================================
``patch_proj.{n}``                                       ``stem.{n}``
``stages.{i}.layer_norms.{2j}`` / ``{2j+1}``              ``stages.{i}.blocks.{j}.norm1`` / ``norm2``
``stages.{i}.local_perception_units.{j}``                ``stages.{i}.blocks.{j}.lpu``
``stages.{i}.attns.{j}``                                 ``stages.{i}.blocks.{j}.attn``
``stages.{i}.mlps.{j}``                                  ``stages.{i}.blocks.{j}.mlp``
``down_projs.{i}``                                       ``downsamples.{i}``
``norms.{i}`` (det/seg)                                  ``norms.{i}``
``cls_norm``                                             ``norms.3`` (the last stage)
``cls_head``                                             ``head.fc`` (mmpretrain LinearClsHead)
=====================================================  ===================================

The published LayerNorm wrappers add a ``.norm`` level (``*.norm.weight``) that dat_mm does
not have. Every published key must match one of the published leaf names (docs/model.md) (so a
misspelt or foreign key is reported under its published name, without needing a model). The
v1 window-attention buffers ``stages.{i}.attns.{j}.relative_position_index`` and ``.attn_mask``
are recomputed by dat_mm: they are checked (Swin's index table; a 0/-100 mask of square windows)
and dropped. Any other key is an error that lists it.
"""
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Tuple

import torch
from mmengine.logging import print_log

from .checkpoint import load_checkpoint
from .ops.position_tables import FLAT, GRID, can_resize_table, relative_position_index

NUM_STAGES = 4
# Non-backbone parts of the published mmdet 2 / mmseg 0.x models keep their names in
# mmdet 3 / mmseg 1.
DENSE_HEAD_PREFIXES = ('neck.', 'rpn_head.', 'roi_head.', 'bbox_head.', 'mask_head.',
                       'decode_head.', 'auxiliary_head.')

_WB = r'(?:weight|bias)'
_NORM_WB = r'(?:norm\.weight|norm\.bias)'
_ATTN_LEAF = (rf'(?:(?:qkv|proj|proj_q|proj_k|proj_v|proj_out|proj_qkv|conv_offset\.0)\.{_WB}'
              rf'|conv_offset\.1\.{_NORM_WB}|conv_offset\.3\.weight'
              r'|rpb|rpe_table|relative_position_bias_table)')
_MLP_LEAF = rf'(?:(?:linear1\.0|linear2\.0|dwc|chunk\.linear1|chunk\.linear2)\.{_WB})'
# (published key pattern, dat_mm replacement); the wrapped-norm level is removed afterwards.
_RULES = [(re.compile(p), r) for p, r in [
    (rf'^patch_proj\.([03])\.({_WB})$', r'stem.\1.\2'),
    (rf'^patch_proj\.([14])\.({_NORM_WB})$', r'stem.\1.\2'),
    (rf'^stages\.(\d+)\.local_perception_units\.(\d+)\.({_WB})$', r'stages.\1.blocks.\2.lpu.\3'),
    (rf'^stages\.(\d+)\.attns\.(\d+)\.({_ATTN_LEAF})$', r'stages.\1.blocks.\2.attn.\3'),
    (rf'^stages\.(\d+)\.mlps\.(\d+)\.({_MLP_LEAF})$', r'stages.\1.blocks.\2.mlp.\3'),
    (rf'^down_projs\.(\d+)\.(0\.weight|1\.{_NORM_WB})$', r'downsamples.\1.\2'),
    (rf'^norms\.(\d+)\.({_NORM_WB})$', r'norms.\1.\2'),
    (rf'^cls_norm\.({_NORM_WB})$', rf'norms.{NUM_STAGES - 1}.\1'),
]]
_LAYER_NORM = re.compile(rf'^stages\.(\d+)\.layer_norms\.(\d+)\.({_NORM_WB})$')
_WRAPPED_NORM = re.compile(r'\.norm\.(weight|bias)$')
_V1_BUFFER = re.compile(r'^stages\.\d+\.attns\.\d+\.(relative_position_index|attn_mask)$')


def _check_v1_buffer(key: str, kind: str, value: torch.Tensor) -> None:
    """The published v1 buffers are recomputed; make sure they are what dat_mm recomputes."""
    n = value.shape[-1] if value.ndim else 0
    window = int(round(n ** 0.5))
    ok = n > 0 and window * window == n
    if ok and kind == 'relative_position_index':
        ok = value.shape == (n, n) and torch.equal(value.long().cpu(),
                                                   relative_position_index(window, device='cpu'))
    elif ok:
        ok = value.ndim == 3 and value.shape[1:] == (n, n) and bool(
            ((value == 0) | (value == -100)).all())
    if not ok:
        raise ValueError(f'{key}: shape {tuple(value.shape)} is not the Swin {kind} that '
                         f'dat_mm recomputes; the checkpoint is not a published DAT v1 one')


def is_published_layout(keys: Iterable[str]) -> bool:
    """True if backbone keys (without prefix) are in the authors' layout."""
    return any(k.startswith(('patch_proj.', 'down_projs.', 'cls_norm.')) or
               '.layer_norms.' in k or '.attns.' in k for k in keys)


def is_published_checkpoint(ckpt) -> bool:
    """True for a loaded checkpoint of the authors': an ImageNet one (``model``) or an
    mmdet 2 / mmseg 0.x one (``state_dict`` whose ``backbone.*`` keys are in their layout)."""
    if not isinstance(ckpt, dict):
        return False
    if isinstance(ckpt.get('model'), dict):
        return is_published_layout(ckpt['model'])
    state = ckpt.get('state_dict')
    return isinstance(state, dict) and is_published_layout(
        k[len('backbone.'):] for k in state if k.startswith('backbone.'))


def _map_backbone_key(key: str):
    m = _LAYER_NORM.match(key)
    if m:
        i, n, rest = m.groups()
        new = f'stages.{i}.blocks.{int(n) // 2}.norm{int(n) % 2 + 1}.{rest}'
    else:
        for pattern, repl in _RULES:
            if pattern.match(key):
                new = pattern.sub(repl, key)
                break
        else:
            return None
    return _WRAPPED_NORM.sub(r'.\1', new)


def convert_backbone_state_dict(state: Dict[str, torch.Tensor]
                                ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Published backbone keys (no prefix, no ``cls_head``) -> (dat_mm keys, unmapped keys)."""
    out, unmapped = OrderedDict(), []
    for key, value in state.items():
        buffer = _V1_BUFFER.match(key)
        if buffer:
            _check_v1_buffer(key, buffer.group(1), value)
            continue
        new = _map_backbone_key(key)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    return out, unmapped


def convert_published_checkpoint(ckpt: dict, backbone_only: bool = False) -> dict:
    """A published checkpoint (as loaded) -> a dat_mm/OpenMMLab 2.0 state dict.

    * ImageNet checkpoints (``model``): ``backbone.*`` + ``head.fc.*`` for the mmpretrain
      classifier configs; with ``backbone_only`` the backbone alone without prefix (and without
      the classifier's ``cls_norm``), for ``init_cfg`` of det/seg configs.
    * mmdet 2 / mmseg 0.x checkpoints (``state_dict``): ``backbone.*`` converted, the neck and
      heads kept as they are; with ``backbone_only`` the backbone alone without prefix.

    Raises ``KeyError`` listing every key that has no place in dat_mm's layout.
    """
    if not isinstance(ckpt, dict):
        raise TypeError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    if 'model' in ckpt and isinstance(ckpt['model'], dict):
        src, dense = ckpt['model'], False
    elif 'state_dict' in ckpt and isinstance(ckpt['state_dict'], dict):
        src, dense = ckpt['state_dict'], True
    else:
        raise KeyError(f"checkpoint has neither 'model' (ImageNet) nor 'state_dict' (det/seg); "
                       f'top-level keys: {sorted(ckpt)[:20]}')
    backbone, rest, unmapped = OrderedDict(), OrderedDict(), []
    for key, value in src.items():
        if dense:
            if key.startswith('backbone.'):
                backbone[key[len('backbone.'):]] = value
            elif key.startswith(DENSE_HEAD_PREFIXES):
                rest[key] = value
            else:
                unmapped.append(key)
        elif key.startswith('cls_head.'):
            rest['head.fc.' + key[len('cls_head.'):]] = value
        else:
            backbone[key] = value
    if backbone_only and not dense:
        backbone = OrderedDict((k, v) for k, v in backbone.items()
                               if not k.startswith('cls_norm.'))
    converted, bad = convert_backbone_state_dict(backbone)
    unmapped += [('backbone.' if dense else '') + k for k in bad]
    if not converted:
        raise KeyError('checkpoint holds no DAT backbone weights')
    if unmapped:
        raise KeyError(f'{len(unmapped)} keys of the published checkpoint have no place in '
                       f'dat_mm: {sorted(unmapped)}')
    if backbone_only:
        return converted
    out = OrderedDict(('backbone.' + k, v) for k, v in converted.items())
    out.update(rest)
    return out


def _listed(keys: List[str], limit: int = 10) -> str:
    shown = ', '.join(keys[:limit])
    return f'({len(keys)}) [{shown}' + (f', ... {len(keys) - limit} more]' if len(keys) > limit
                                         else ']')


def resizable_table(key: str, saved: torch.Tensor, own: torch.Tensor) -> bool:
    """A position table of another resolution that the attention modules resize on load
    (``rpe_table``, v1 ``relative_position_bias_table``; the rule of
    :func:`dat_mm.ops.position_tables.can_resize_table`)."""
    layout = GRID if key.endswith('.rpe_table') else \
        FLAT if key.endswith('.relative_position_bias_table') else None
    return layout is not None and can_resize_table(saved.shape, own.shape, layout)


def state_dict_problems(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor],
                        allow_missing: Tuple[str, ...] = (),
                        allow_unexpected: Tuple[str, ...] = ()) -> List[str]:
    """What keeps ``state`` from loading into a module whose state dict is ``own``: missing,
    unexpected and wrong-shape keys (the first ten of each, with their counts), except the
    allowed prefixes and position tables that are resized on load (:func:`resizable_table`).
    Empty when it fits."""
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own and not k.startswith(allow_unexpected)]
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
              for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
              and not resizable_table(k, v, own[k])]
    problems = []
    if missing:
        problems.append(f'missing keys {_listed(missing)}')
    if unexpected:
        problems.append(f'unexpected keys {_listed(unexpected)}')
    if shapes:
        problems.append(f'shape mismatches {_listed(shapes)}')
    return problems


def check_state_dict_fits(model: torch.nn.Module, state: Dict[str, torch.Tensor],
                          allow_missing: Tuple[str, ...] = (),
                          allow_unexpected: Tuple[str, ...] = (),
                          source: str = 'checkpoint') -> None:
    """Raise ``KeyError`` naming what keeps ``state`` from fitting ``model``
    (:func:`state_dict_problems`); ``source`` (the file) starts the message."""
    problems = state_dict_problems(model.state_dict(), state, allow_missing, allow_unexpected)
    if problems:
        raise KeyError(f'{source} does not fit {type(model).__name__}: ' + '; '.join(problems))


def state_dict_of(ckpt, path: str = 'checkpoint') -> dict:
    """The state dict of a loaded checkpoint: its ``state_dict`` (MMEngine Runner, the
    published det/seg ones), its ``model`` (the published ImageNet ones) or the dict itself."""
    state = ckpt
    for key in ('state_dict', 'model'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    if not isinstance(state, dict) or not state:
        raise TypeError(f'{path}: no state dict found')
    return state


def with_prefix(state: Dict, prefix: str, keep_others: bool = False) -> OrderedDict:
    """The keys of ``state`` that start with ``prefix``, without it. Keys without the prefix
    are dropped, or kept as they are with ``keep_others`` (to unwrap ``module.`` of DDP)."""
    out = OrderedDict()
    for key, value in state.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
        elif keep_others:
            out[key] = value
    return out


def load_backbone_weights(backbone: torch.nn.Module, path: str, prefix: str = None,
                          map_location='cpu') -> None:
    """Load backbone weights in dat_mm's or the authors' layout into ``backbone``.

    The state dict is taken from ``state_dict``, ``model`` or the file itself; ``prefix``
    selects a sub-module's keys (``'backbone.'``; chosen automatically when every key has it).
    Output norms (``norms.*``) may be absent (an ImageNet backbone under a det/seg model) or
    extra (a det/seg backbone under a classifier); any other mismatch is an error.
    """
    state = state_dict_of(load_checkpoint(path, map_location=map_location), path)
    if prefix is None and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = with_prefix(state, prefix)
        if not state:
            raise KeyError(f'{path}: no key starts with prefix {prefix!r}')
    if is_published_layout(state):
        state = convert_published_checkpoint({'model': state}, backbone_only=True)
        print_log(f'DAT: converted the published checkpoint {path} on the fly',
                  logger='current')
    check_state_dict_fits(backbone, state, allow_missing=('norms.',),
                          allow_unexpected=('norms.',))
    own = backbone.state_dict()
    backbone.load_state_dict(OrderedDict((k, v) for k, v in state.items() if k in own),
                             strict=False)
    print_log(f'DAT: loaded backbone weights from {path}', logger='current')
