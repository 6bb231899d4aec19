"""The model a config describes, with the weights of a checkpoint: one path from a config to a
module for dat_mm's tools (FLOP counting, visualisation, checkpoint conversion) and for Python.

>>> from dat_mm.apis import build_model_from_config
>>> model = build_model_from_config('configs/mmpretrain/dat_t_pp_in1k.py',
...                                 'checkpoints/dat_t_pp_in1k.pth').eval()
>>> backbone = build_model_from_config('configs/mmdet/mask_rcnn_dat_t_pp.py',
...                                    backbone_only=True)
"""
import copy
import os
from collections import OrderedDict
from typing import Optional, Union

import torch
from mmengine.config import Config

from ..checkpoint import load_checkpoint
from ..converters import (check_state_dict_fits, convert_published_checkpoint,
                          is_published_layout, resizable_table, state_dict_of, with_prefix)
from ..models import find_backbone
from .runner import config_scope

ConfigLike = Union[str, os.PathLike, Config]


def _config(config: ConfigLike, cfg_options: Optional[dict]) -> Config:
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    elif isinstance(config, (str, os.PathLike)):
        if not os.path.isfile(config):
            raise FileNotFoundError(f'config not found: {os.fspath(config)}')
        cfg = Config.fromfile(os.fspath(config))
    else:
        raise TypeError(f'expected a config path or an mmengine Config, got '
                        f'{type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_model_from_config(config: ConfigLike, checkpoint: Optional[str] = None, *,
                            backbone_only: bool = False, device='cpu',
                            cfg_options: Optional[dict] = None):
    """Build the model of a config through the registries of its ``default_scope``.

    Args:
        config: a config file or an mmengine ``Config`` (not modified).
        checkpoint: optional weights, loaded by :func:`load_model_weights` (dat_mm / OpenMMLab
            2.0 layout, whole model or backbone only, or the authors' published layout).
            The config's own pretrained files (``init_cfg``) are then not needed: the copy
            that is built has ``init_cfg=None``. Without a checkpoint the weights are those of
            the modules' constructors (``init_weights`` is not called).
        backbone_only: build ``model.backbone`` alone (det/seg configs for the DAT backbone).
        device: where the model goes; on the CPU, SyncBN layers become BatchNorm
            (``mmengine.model.revert_sync_batchnorm``), as in the OpenMMLab inference APIs.
        cfg_options: overrides merged into the config first (as ``--cfg-options``).

    The whole model gets the config's top-level ``data_preprocessor`` as the Runner gives it.
    Configs without ``default_scope`` build from MMEngine's root registry (where ``DAT``
    is); a scope other than mmdet / mmseg / mmpretrain is an error.
    """
    from mmengine.logging import print_log
    from mmengine.registry import MODELS, DefaultScope

    cfg = _config(config, cfg_options)
    where = cfg.filename or 'the config'
    try:
        scope = config_scope(cfg) if cfg.get('default_scope') is not None else None
    except ValueError as e:
        raise ValueError(f'{where}: {e}') from None
    if cfg.get('model') is None:
        raise ValueError(f'{where} defines no model')
    model_cfg = copy.deepcopy(cfg.model)
    if backbone_only:
        if model_cfg.get('backbone') is None:
            raise ValueError(f'{where}: model {model_cfg.get("type")} has no backbone')
        model_cfg = model_cfg.backbone
    elif cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    if checkpoint is not None:
        model_cfg['init_cfg'] = None
        if isinstance(model_cfg.get('backbone'), dict):
            model_cfg.backbone['init_cfg'] = None
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(model_cfg)
    if checkpoint is not None:
        print_log(f'{where}: {load_model_weights(model, checkpoint)}', logger='current')
    if torch.device(device).type == 'cpu':
        from mmengine.model import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)
    return model.to(device)


def load_model_weights(model, checkpoint: str) -> str:
    """Load a checkpoint into a model built from a config (or into a DAT backbone).

    The file is read through :func:`dat_mm.checkpoint.load_checkpoint` (weights only; a URL
    through mmengine's loader) and may hold: a whole-model state dict (``backbone.*``, neck,
    heads; a Runner checkpoint's ``state_dict``; ``module.`` of DDP is removed), a backbone
    state dict without prefix, or the authors' published checkpoints (converted by
    :func:`dat_mm.converters.convert_published_checkpoint`). The backbone part must fit the
    model's DAT backbone (output norms ``norms.*`` may be absent or extra): otherwise
    ``KeyError`` naming the file and the keys. Whole-model keys that the model does not have
    are not used; the model keys that the checkpoint lacks keep their values and are logged.

    Returns a one-line description of what was loaded.
    """
    from mmengine.runner import load_state_dict

    checkpoint = os.fspath(checkpoint)
    if '://' not in checkpoint and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    try:
        state = state_dict_of(load_checkpoint(checkpoint, map_location='cpu'), checkpoint)
    except TypeError as e:
        raise ValueError(str(e)) from None
    state = with_prefix(state, 'module.', keep_others=True)
    backbone_state = with_prefix(state, 'backbone.')
    if is_published_layout(backbone_state or state):
        # det/seg files keep their 'backbone.' prefix; ImageNet ones have none ('model').
        published = {'state_dict': state} if backbone_state else {'model': state}
        state = convert_published_checkpoint(published)
        backbone_state = with_prefix(state, 'backbone.')
    whole = bool(backbone_state)
    backbone = find_backbone(model)
    check_state_dict_fits(backbone, backbone_state if whole else state,
                          allow_missing=('norms.',), allow_unexpected=('norms.',),
                          source=checkpoint)
    if whole and model is not backbone:
        target, source = model, state
    else:
        target, source = backbone, backbone_state if whole else state
    own = target.state_dict()
    fitting = OrderedDict((k, v) for k, v in source.items() if k in own and (
        v.shape == own[k].shape or resizable_table(k, v, own[k])))
    load_state_dict(target, fitting, strict=False, logger='current')
    name = os.path.basename(checkpoint)
    if target is backbone and model is not backbone:
        return f'checkpoint {name} (backbone only)'
    unused, missing = len(source) - len(fitting), len(own) - len(fitting)
    counts = f' ({unused} keys not used, {missing} model keys not in it)' \
        if unused or missing else ''
    return f'checkpoint {name}{counts}'
