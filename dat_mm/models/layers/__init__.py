from .attention_backends import available_backends, choose_backend, register_backend
from .block import DATBlock
from .deformable_attn import DeformableAttention2d, deformable_rpe_bias, dmha_reference
from .drop import DropPath, drop_path_schedule
from .embed import (overlapped_downsample, overlapped_stem, patch_downsample, patch_stem)
from .mlp import ConvFFN, TokenMLP
from .neighborhood_attn import NeighborhoodAttention2d, na2d_reference
from .norm import LayerNorm2d
from .residual_conv import ResidualDWConv2d
from .window_attn import WindowAttention2d

__all__ = [
    'available_backends', 'choose_backend', 'register_backend', 'DATBlock',
    'DeformableAttention2d', 'deformable_rpe_bias', 'dmha_reference', 'DropPath',
    'drop_path_schedule', 'overlapped_downsample', 'overlapped_stem', 'patch_downsample',
    'patch_stem', 'ConvFFN', 'TokenMLP', 'NeighborhoodAttention2d', 'na2d_reference',
    'LayerNorm2d', 'ResidualDWConv2d', 'WindowAttention2d'
]

# Fast attention backends register themselves into attention_backends on import (after the
# reference functions above, which they are tested against).
from dat_mm import ops as _fast_ops  # noqa: E402,F401
