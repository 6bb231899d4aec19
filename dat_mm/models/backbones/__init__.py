from .dat import DAT
from .dat_arch import ARCH_ZOO, ArchSpec, StageSpec, resolve_arch

__all__ = ['DAT', 'ARCH_ZOO', 'ArchSpec', 'StageSpec', 'resolve_arch']
