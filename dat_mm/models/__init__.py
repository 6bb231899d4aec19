from .backbones import ARCH_ZOO, DAT, resolve_arch

__all__ = ['ARCH_ZOO', 'DAT', 'resolve_arch']
