from .dat import DAT, find_backbone
from .dat_arch import ARCH_ZOO, ArchSpec, StageSpec, resolve_arch

__all__ = ['DAT', 'find_backbone', 'ARCH_ZOO', 'ArchSpec', 'StageSpec', 'resolve_arch']
