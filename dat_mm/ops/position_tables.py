"""Resizing learned relative-position tables to another resolution.

DAT v1 sizes its tables by the training resolution: the window attention's
``relative_position_bias_table`` has ``(2w-1)^2`` rows (a ``(2w-1) x (2w-1)`` grid per head,
row-major, heads last) and the deformable attention's ``rpe_table`` is ``(heads, 2H-1, 2W-1)``
for the stage's feature size at ``img_size``. The authors fine-tune DAT-B at 384 (windows of 12,
tables for 384) from the 224 model by interpolating each table bicubically to the new grid
(``load_pretrained`` in their ``models/dat.py``): ``F.interpolate(..., mode='bicubic')`` with
PyTorch's default ``align_corners=False`` on the per-head grid. :func:`resize_position_table`
does exactly that, and :func:`resize_tables_on_load` is the ``load_state_dict`` pre-hook through
which the attention modules apply it, so that a checkpoint of another resolution loads with
the ordinary ``load_state_dict`` (and hence mmengine's ``Pretrained`` init and ``load_from``).

DAT++ models keep the tables of ``img_size`` 224 at every resolution (they are sampled in
normalised coordinates), so a DAT++ checkpoint always has the model's table shapes and nothing
is resized.
"""
import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ['GRID', 'FLAT', 'relative_position_index', 'resize_position_table', 'can_resize_table',
           'resize_tables_on_load']

GRID = 'grid'  # (heads, H, W): the deformable attention's rpe_table
FLAT = 'flat'  # (H*W, heads), a square grid in row-major order: Swin's bias table
_LAYOUTS = (GRID, FLAT)


def relative_position_index(window: int, device=None) -> torch.Tensor:
    """Swin's ``(w*w, w*w)`` index into the ``(2w-1)^2`` bias table.

    On ``device``; ``None`` is the default device, so that the module's buffer, built with its
    parameters, lands where they do (``with torch.device(...)`` construction included)."""
    ar = torch.arange(window, device=device)
    coords = torch.stack(torch.meshgrid(ar, ar, indexing='ij')).flatten(1)  # 2, w*w
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def _square_side(rows: int) -> int:
    """The side of a square grid with ``rows`` cells, or 0 when ``rows`` is not a square."""
    side = math.isqrt(rows) if rows > 0 else 0
    return side if side * side == rows else 0


def _grid_size(shape: Sequence[int], layout: str) -> Tuple[int, int]:
    """The spatial ``(H, W)`` of a table of ``shape``; ``(0, 0)`` when it is not a table."""
    if layout == GRID:
        return (shape[1], shape[2]) if len(shape) == 3 else (0, 0)
    side = _square_side(shape[0]) if len(shape) == 2 else 0
    return (side, side)


def _num_heads(shape: Sequence[int], layout: str) -> int:
    return shape[0] if layout == GRID else shape[-1]


def can_resize_table(saved_shape: Sequence[int], own_shape: Sequence[int], layout: str) -> bool:
    """Whether a table of ``saved_shape`` is the same table as ``own_shape`` at another spatial
    size: same layout, same number of heads, non-empty grids (a flat table must be square)."""
    if layout not in _LAYOUTS:
        raise ValueError(f'layout must be one of {_LAYOUTS}, got {layout!r}')
    saved_shape, own_shape = tuple(saved_shape), tuple(own_shape)
    if len(saved_shape) != len(own_shape) or len(own_shape) != (3 if layout == GRID else 2):
        return False
    if _num_heads(saved_shape, layout) != _num_heads(own_shape, layout):
        return False
    return min(_grid_size(saved_shape, layout) + _grid_size(own_shape, layout)) > 0


def resize_position_table(table: torch.Tensor, size: Union[int, Tuple[int, int]],
                          layout: str) -> torch.Tensor:
    """Resize ``table`` to the spatial ``size`` ``(H, W)`` bicubically, as the authors do.

    Args:
        table: ``(heads, h, w)`` for ``layout='grid'`` (``rpe_table``), or ``(h*w, heads)``
            with ``h == w`` for ``layout='flat'`` (``relative_position_bias_table``).
        size: the new grid, ``(H, W)`` or one int for a square.
        layout: ``'grid'`` or ``'flat'``.
    Returns:
        ``(heads, H, W)`` or ``(H*W, heads)``, a new tensor of ``table``'s dtype and device.

    Each head's grid is interpolated with ``F.interpolate(mode='bicubic',
    align_corners=False)``. Half-precision tables are interpolated in float32 and cast back;
    float32 and float64 tables in their own dtype (the authors' float32 numbers exactly).
    """
    if layout not in _LAYOUTS:
        raise ValueError(f'layout must be one of {_LAYOUTS}, got {layout!r}')
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'size must be a positive (H, W), got {size}')
    h, w = _grid_size(table.shape, layout)
    if h == 0:
        expected = '(heads, h, w)' if layout == GRID else '(side * side, heads)'
        raise ValueError(f'a {layout} position table must be {expected}, got shape '
                         f'{tuple(table.shape)}')
    heads = _num_heads(table.shape, layout)
    work = table.detach()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    grid = work if layout == GRID else work.reshape(h, w, heads).permute(2, 0, 1)
    resized = F.interpolate(grid.unsqueeze(0), size=size, mode='bicubic',
                            align_corners=False).squeeze(0)
    if layout == FLAT:
        resized = resized.reshape(heads, size[0] * size[1]).transpose(0, 1)
    return resized.contiguous().to(table.dtype)


def resize_tables_on_load(names: Tuple[Tuple[str, str], ...], module: torch.nn.Module,
                          state_dict: dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: resize incoming position tables to the module's size.

    ``names`` pairs each table attribute with its layout (``(('rpe_table', 'grid'),)``);
    bind it with ``functools.partial`` and register with
    ``module._register_load_state_dict_pre_hook(hook, with_module=True)``. An incoming table
    that :func:`can_resize_table` accepts and whose shape differs from the module's is
    replaced in ``state_dict`` by :func:`resize_position_table`, with one log line naming the
    key and both shapes. Anything else (another number of heads, a flat table that is not
    square, an absent table) is left as it is, so ``load_state_dict`` reports it as usual.
    """
    from mmengine.logging import print_log
    for name, layout in names:
        key = prefix + name
        saved, own = state_dict.get(key), getattr(module, name, None)
        if not (torch.is_tensor(saved) and torch.is_tensor(own)) or saved.shape == own.shape:
            continue
        if not saved.is_floating_point() or not can_resize_table(saved.shape, own.shape,
                                                                  layout):
            continue
        with torch.no_grad():
            resized = resize_position_table(saved, _grid_size(own.shape, layout), layout)
        state_dict[key] = resized
        print_log(f'{key}: resized the position table bicubically from '
                  f'{tuple(saved.shape)} to {tuple(resized.shape)}', logger='current')
