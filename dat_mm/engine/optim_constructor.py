"""``DATOptimWrapperConstructor``: mmengine's DefaultOptimWrapperConstructor with one more
``paramwise_cfg`` option, ``backbone_norm_decay_mult``.

``backbone_norm_decay_mult`` multiplies the weight decay of every parameter of the
normalisation layers inside ``model.backbone`` (the layer types of mmengine's
``norm_decay_mult``: BatchNorm, InstanceNorm, GroupNorm, LayerNorm), selected by module type,
not by name. It is ``norm_decay_mult`` restricted to the backbone: the necks' and heads'
normalisation layers keep the other rules. For backbone normalisation layers it takes the place
of ``norm_decay_mult``. A parameter whose name contains one of the ``custom_keys`` takes that
key's settings (mmengine applies the longest matching key); if that key states a
``decay_mult``, it decides the weight decay, as it would in mmengine's constructor; if it does
not (e.g. ``'backbone': dict(lr_mult=0.1)``, a lower learning rate for the whole backbone), the
key's learning rate stands and ``backbone_norm_decay_mult`` still sets the decay. So a config
can lower the backbone's learning rate with one key and keep its normalisation layers free of
weight decay without naming each of them (the DINO and Mask2Former configs do).

The DAT-Segmentation recipes need it: the authors exempted every backbone LayerNorm from
weight decay (their key ``'norm'``, which all their LayerNorm wrappers carry in the name) but
not the heads' BatchNorms (named ``bn``). dat_mm's backbone names some LayerNorms after their
position in a ``Sequential`` (``stem.1``, ``downsamples.0.1``, ...), names fixed by the
published checkpoints, so a name rule cannot state that set; the module type does.

Registered in mmengine's root ``OPTIM_WRAPPER_CONSTRUCTORS``, so mmdet, mmseg and mmpretrain
configs name it as ``optim_wrapper = dict(constructor='DATOptimWrapperConstructor',
paramwise_cfg=dict(backbone_norm_decay_mult=0.0, ...), ...)``.
"""
from typing import List, Optional, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

__all__ = ['DATOptimWrapperConstructor', 'NORM_LAYERS']

# the layer types mmengine's norm_decay_mult applies to
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
               nn.GroupNorm, nn.LayerNorm)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DATOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """DefaultOptimWrapperConstructor plus ``paramwise_cfg.backbone_norm_decay_mult`` (see the
    module docstring). Without that option it builds exactly what mmengine's constructor does.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        mult = self.paramwise_cfg.get('backbone_norm_decay_mult')
        if mult is not None and self.base_wd is None:
            raise ValueError('backbone_norm_decay_mult needs the optimizer\'s weight_decay')

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        super().add_params(params, module, prefix=prefix, is_dcn_module=is_dcn_module)
        mult = self.paramwise_cfg.get('backbone_norm_decay_mult')
        if prefix or mult is None:
            return  # mmengine recurses through the children; the rule runs once, at the top
        backbone = getattr(module, 'backbone', None)
        if not isinstance(backbone, nn.Module):
            raise ValueError('backbone_norm_decay_mult needs a model with a `backbone` '
                             f'module; {type(module).__name__} has none')
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        # mmengine's order: the longest key first (ties alphabetical); the first match applies
        keys = sorted(sorted(custom_keys), key=len, reverse=True)
        names = {id(p): f'backbone.{layer}.{name}' if layer else f'backbone.{name}'
                 for layer, m in backbone.named_modules() if isinstance(m, NORM_LAYERS)
                 for name, p in m.named_parameters(recurse=False)}
        for group in params:
            (param, ) = group['params']  # mmengine's groups hold one parameter each
            name = names.get(id(param))
            if name is None:
                continue
            key = next((k for k in keys if k in name), None)
            if key is not None and 'decay_mult' in custom_keys[key]:
                continue
            group['weight_decay'] = self.base_wd * mult
            print_log(f'paramwise_options -- {name}:weight_decay={group["weight_decay"]} '
                      '(backbone_norm_decay_mult)', logger='current')
