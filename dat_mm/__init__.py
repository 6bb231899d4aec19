"""dat_mm: DAT / DAT++ (Deformable Attention Transformer) for OpenMMLab 2.0.

``import dat_mm`` (or ``custom_imports=dict(imports=['dat_mm'])`` in a config) registers the
``DAT`` backbone, the ``SafeCheckpointHook`` and the ``DATOptimWrapperConstructor`` once, in
MMEngine's root registries, from which the mmdet, mmseg and mmpretrain registries (their
children) all resolve them. It changes nothing else in the process: safe checkpoint loading is
installed where checkpoints are loaded (``dat_mm.checkpoint.use_safe_loader``). Only torch and
mmengine are needed to import it.

It also adds ``dat_mm`` to the packages whose configs mmengine finds by scope, so that after
``import dat_mm`` a config can inherit ``'dat_mm::mmdet/cascade_dat_s_pp.py'`` and
``mmengine.hub.get_config('dat_mm::...')`` works: both read the configs and the model index
that the installed package carries in ``dat_mm/.mim`` (see setup.py).
"""
from mmengine.config import utils as _config_utils

from .engine import SafeCheckpointHook
from .models import ARCH_ZOO, DAT, resolve_arch

_config_utils.MODULE2PACKAGE.setdefault('dat_mm', 'dat_mm')

__version__ = '0.1.0'
__all__ = ['ARCH_ZOO', 'DAT', 'SafeCheckpointHook', 'resolve_arch', '__version__']
