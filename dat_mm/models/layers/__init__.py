"""The modules DAT is built from. They own parameters (under the published checkpoint names)
and call the functions of :mod:`dat_mm.ops` for the attention itself."""
from .block import DATBlock
from .deformable_attn import DeformableAttention2d, grid_coords
from .drop import DropPath, drop_path_schedule
from .embed import overlapped_downsample, overlapped_stem, patch_downsample, patch_stem
from .mlp import ConvFFN, TokenMLP
from .neighborhood_attn import NeighborhoodAttention2d
from .norm import LayerNorm2d
from .tap import Tap
from .window_attn import WindowAttention2d

__all__ = [
    'DATBlock', 'DeformableAttention2d', 'grid_coords', 'DropPath', 'drop_path_schedule',
    'overlapped_downsample', 'overlapped_stem', 'patch_downsample', 'patch_stem', 'ConvFFN',
    'TokenMLP', 'NeighborhoodAttention2d', 'LayerNorm2d', 'Tap',
    'WindowAttention2d'
]
