"""Runner components registered by dat_mm (mmengine's root registries, so mmdet, mmseg and
mmpretrain configs resolve them)."""
from .checkpoint_hook import SafeCheckpointHook, rng_state, set_rng_state
from .optim_constructor import DATOptimWrapperConstructor

__all__ = ['DATOptimWrapperConstructor', 'SafeCheckpointHook', 'rng_state', 'set_rng_state']
