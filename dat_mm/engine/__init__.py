"""Runner components registered by dat_mm (mmengine's root registries, so mmdet, mmseg and
mmpretrain configs resolve them)."""
from .checkpoint_hook import SafeCheckpointHook, rng_state, set_rng_state

__all__ = ['SafeCheckpointHook', 'rng_state', 'set_rng_state']
