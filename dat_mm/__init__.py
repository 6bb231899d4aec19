"""dat_mm: DAT / DAT++ (Deformable Attention Transformer) for OpenMMLab 2.0.

``import dat_mm`` (or ``custom_imports=dict(imports=['dat_mm'])`` in a config) registers the
``DAT`` backbone once, in MMEngine's root ``MODELS`` registry, from which the mmdet, mmseg and
mmpretrain registries (its children) all resolve ``type='DAT'``. Only torch and mmengine are
needed to import it.
"""
from . import checkpoint  # noqa: F401  (safe loader for Runner checkpoints, see its doc)
from .models import ARCH_ZOO, DAT, resolve_arch

__version__ = '0.1.0'
__all__ = ['ARCH_ZOO', 'DAT', 'resolve_arch', '__version__']
