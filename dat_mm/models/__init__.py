from .backbones import ARCH_ZOO, DAT, find_backbone, resolve_arch

__all__ = ['ARCH_ZOO', 'DAT', 'find_backbone', 'resolve_arch']
