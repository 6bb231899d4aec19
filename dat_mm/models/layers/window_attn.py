"""Swin-style window attention (DAT v1 ``L`` blocks) and shifted-window attention (``S``).

Non-overlapping ``w x w`` windows, ``qkv`` projection, a learnable relative position bias table
of ``(2w-1)^2`` entries per head indexed Swin's way, and for ``S`` a cyclic shift of
``ceil(w/2)`` with Swin's ``-100`` mask between regions. Parameter names follow the published
v1 checkpoints (``proj_qkv``, ``proj_out``, ``relative_position_bias_table``); the index table
and the mask are recomputed, not stored (the converter drops the published buffers).

Maps that are not multiples of the window are zero-padded at the bottom/right after the norm
and cropped back, as mmdet's Swin does, so v1 runs at any input size; at the published training
resolutions no padding happens and the result is exactly the authors'.

A bias table of another window size with the same number of heads (a 224 checkpoint loaded
into the 384 model, windows 7 -> 12) is resized bicubically on ``load_state_dict``, as the
authors fine-tune at 384 (:mod:`dat_mm.ops.position_tables`).
"""
import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from dat_mm.ops.position_tables import FLAT, relative_position_index, resize_tables_on_load


def _region_ids(length: int, window: int, shift: int, device) -> torch.Tensor:
    """Swin's region of each row (or column) of the padded, rolled map: 0 in ``[0, L - w)``,
    1 in ``[L - w, L - shift)``, 2 in ``[L - shift, L)``."""
    i = torch.arange(length, device=device)
    return (i >= length - window).long() + (i >= length - shift).long()


def shifted_window_mask(height: int, width: int, window: int, shift: int, device, dtype):
    """Swin's ``(nW, w*w, w*w)`` mask for a (padded) ``height x width`` map: ``-100`` between
    tokens of different regions of a window, 0 within one.

    Built on ``device`` in ``dtype`` at each call (a few element-wise passes over the mask,
    small next to the attention it is added to), so nothing is cached on the host or copied
    to the device per call."""
    regions = (_region_ids(height, window, shift, device)[:, None] * 3
               + _region_ids(width, window, shift, device)[None, :])
    win = regions.reshape(height // window, window, width // window, window)
    win = win.permute(0, 2, 1, 3).reshape(-1, window * window)  # nW, w*w
    differ = win[:, None, :] != win[:, :, None]
    return torch.zeros(differ.shape, dtype=dtype, device=device).masked_fill_(differ, -100.0)


class WindowAttention2d(nn.Module):
    """Window attention on NCHW maps; ``shift > 0`` makes it the shifted-window variant."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift: int = 0,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        if not 0 <= shift < window_size:
            raise ValueError(f'shift must be in [0, window_size), got {shift}')
        self.num_heads, self.window_size, self.shift = num_heads, window_size, shift
        self.scale = (dim // num_heads) ** -0.5
        self.proj_qkv = nn.Linear(dim, dim * 3)
        self.proj_out = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01, a=-2.0, b=2.0)
        self.register_buffer('relative_position_index', relative_position_index(window_size),
                             persistent=False)
        self._register_load_state_dict_pre_hook(
            partial(resize_tables_on_load, (('relative_position_bias_table', FLAT),)),
            with_module=True)

    @classmethod
    def shifted(cls, dim: int, num_heads: int, window_size: int = 7, **kwargs):
        return cls(dim, num_heads, window_size=window_size, shift=math.ceil(window_size / 2),
                   **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H0, W0 = x.shape
        w, nh = self.window_size, self.num_heads
        ph, pw = -H0 % w, -W0 % w
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        H, W = x.shape[2:]
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(2, 3))
        # (B, C, H, W) -> (B*nW, w*w, C), windows in row-major order
        win = x.reshape(B, C, H // w, w, W // w, w).permute(0, 2, 4, 3, 5, 1)
        win = win.reshape(-1, w * w, C)
        q, k, v = self.proj_qkv(win).reshape(-1, w * w, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
        attn = torch.matmul(q * self.scale, k.transpose(-1, -2))  # (B*nW, nh, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(w * w, w * w, nh).permute(2, 0, 1).unsqueeze(0)
        if self.shift:
            mask = shifted_window_mask(H, W, w, self.shift, x.device, attn.dtype)
            nw = mask.shape[0]
            attn = (attn.reshape(B, nw, nh, w * w, w * w) + mask[None, :, None]).flatten(0, 1)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = torch.matmul(attn, v).transpose(1, 2).reshape(-1, w * w, C)
        out = self.proj_drop(self.proj_out(out))
        out = out.reshape(B, H // w, W // w, w, w, C).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(B, C, H, W)
        if self.shift:
            out = torch.roll(out, shifts=(self.shift, self.shift), dims=(2, 3))
        return out[:, :, :H0, :W0]

    def extra_repr(self) -> str:
        return f'heads={self.num_heads}, window_size={self.window_size}, shift={self.shift}'
