"""Drawing deformable sampling points over an image with Pillow.

Coordinates are continuous pixel coordinates ``(x, y)`` of the picture (pixel ``k`` spans
``[k, k + 1)``, so its centre is ``k + 0.5``), the convention of Pillow's drawing and of
:func:`dat_mm.visualization.to_image_pixels` (which returns ``(y, x)``: flip the last axis).
"""
import colorsys
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Distinguishable on photos (tab10-like, without grey); more groups cycle through hues.
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (23, 190, 207), (227, 119, 194), (188, 189, 34), (140, 86, 75), (255, 215, 0)]


def group_colors(n: int) -> List[Tuple[int, int, int]]:
    """``n`` RGB colours, one per offset group."""
    if n <= len(_PALETTE):
        return _PALETTE[:n]
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / n, 0.85, 0.95))
            for i in range(n)]


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1, or without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _as_pil(image):
    from PIL import Image
    if isinstance(image, Image.Image):
        return image.convert('RGB')
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f'expected an HxWx3 RGB image, got an array of shape {arr.shape}')
    if arr.dtype != np.uint8:
        raise ValueError(f'expected a uint8 image, got dtype {arr.dtype}')
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), 'RGB')


def draw_sampling_points(image, points, weights, *, refs=None, query: Optional[Sequence] = None,
                         query_box: Optional[Sequence] = None, caption: Sequence[str] = (),
                         radius: Optional[Tuple[float, float]] = None, dim: float = 0.35,
                         legend: bool = True, group_ids: Optional[Sequence[int]] = None,
                         num_groups: Optional[int] = None, supersample: int = 2):
    """The image with sampling points coloured by group and sized by weight.

    Args:
        image: ``HxWx3`` uint8 RGB array or a PIL image; the output has its size.
        points: ``(g, N, 2)`` sampling positions ``(x, y)`` per group, in image pixels.
        weights: ``(g, N)`` non-negative weights; a point's *area* is proportional to its
            weight (largest weight of all groups -> ``radius[1]``, zero -> ``radius[0]``).
        refs: optional ``(g, N, 2)`` reference points ``(x, y)``: drawn as small grey dots
            joined to their sampling points.
        query: optional ``(x, y)`` marked with a white cross; query_box: optional
            ``(x0, y0, x1, y1)`` outlined (the query's cell of the attention map).
        caption: lines of text written top-left on a translucent box.
        radius: ``(min, max)`` point radii in pixels; default from the image size.
        dim: how much the image is darkened (0: not at all) so the points stand out.
        legend: add a line with the group colours under the caption.
        group_ids: the group index of each row of ``points`` (default ``0..g-1``), for colours
            and legend when only some groups are drawn; num_groups: the block's number of
            groups (default ``max(group_ids) + 1``), colours are ``group_colors(num_groups)``.
        supersample: drawing resolution factor for smooth circles.
    Returns:
        a PIL RGB image of the input's size.
    """
    from PIL import Image, ImageDraw

    base = _as_pil(image)
    W, H = base.size
    points = np.asarray(points, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f'points must be (groups, N, 2), got shape {points.shape}')
    if weights.shape != points.shape[:2]:
        raise ValueError(f'weights must be (groups, N) = {points.shape[:2]}, got '
                         f'{weights.shape}')
    if not (np.isfinite(points).all() and np.isfinite(weights).all()):
        raise ValueError('points and weights must be finite')
    if (weights < 0).any():
        raise ValueError('weights must be non-negative')
    g = points.shape[0]
    group_ids = list(range(g)) if group_ids is None else [int(j) for j in group_ids]
    if len(group_ids) != g or min(group_ids, default=0) < 0:
        raise ValueError(f'group_ids must give a non-negative index for each of the {g} '
                         f'groups, got {group_ids}')
    palette = group_colors(max(max(group_ids, default=0) + 1, num_groups or 0))
    colors = [palette[j] for j in group_ids]
    if radius is None:
        rmax = float(np.clip(min(W, H) / 45, 3, 18))
        radius = (max(1.0, rmax / 6), rmax)
    rmin, rmax = radius
    wmax = weights.max() if weights.size and weights.max() > 0 else 1.0
    radii = rmin + (rmax - rmin) * np.sqrt(weights / wmax)

    if dim > 0:
        base = Image.blend(base, Image.new('RGB', base.size, (0, 0, 0)), dim)
    s = supersample
    overlay = Image.new('RGBA', (W * s, H * s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    if refs is not None:
        refs = np.asarray(refs, dtype=np.float64)
        if refs.shape != points.shape:
            raise ValueError(f'refs must have the shape of points {points.shape}, got '
                             f'{refs.shape}')
        for (rx, ry), (px, py) in zip(refs.reshape(-1, 2), points.reshape(-1, 2)):
            draw.line([(rx * s, ry * s), (px * s, py * s)], fill=(230, 230, 230, 140),
                      width=max(1, s))
            r = max(1.0, rmin * 0.6) * s
            draw.ellipse([rx * s - r, ry * s - r, rx * s + r, ry * s + r],
                         fill=(200, 200, 200, 200))
    # Largest first, so that small points stay visible on top of large ones.
    order = np.argsort(-radii, axis=None)
    for flat in order:
        j, n = divmod(int(flat), points.shape[1])
        x, y = points[j, n] * s
        r = radii[j, n] * s
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colors[j] + (190,),
                     outline=(0, 0, 0, 200), width=max(1, s // 2))
    if query_box is not None:
        x0, y0, x1, y1 = (v * s for v in query_box)
        draw.rectangle([x0, y0, x1, y1], outline=(255, 255, 255, 255), width=2 * s)
    if query is not None:
        qx, qy = query[0] * s, query[1] * s
        arm = max(6.0, rmax * 1.2) * s
        for width, color in ((4 * s, (0, 0, 0, 255)), (2 * s, (255, 255, 255, 255))):
            draw.line([(qx - arm, qy - arm), (qx + arm, qy + arm)], fill=color, width=width)
            draw.line([(qx - arm, qy + arm), (qx + arm, qy - arm)], fill=color, width=width)
    if s > 1:
        overlay = overlay.resize((W, H), Image.LANCZOS)
    out = Image.alpha_composite(base.convert('RGBA'), overlay)
    _draw_caption(out, list(caption), list(zip(group_ids, colors)) if legend else [])
    return out.convert('RGB')


def _draw_caption(img, lines: List[str], colors):
    """Caption lines (and a group-colour legend) top-left on a translucent box, in place."""
    from PIL import Image, ImageDraw
    if not lines and not colors:
        return
    W, H = img.size
    size = int(np.clip(min(W, H) / 30, 9, 22))
    font = _font(size)
    pad, gap = max(2, size // 3), max(1, size // 4)
    probe = ImageDraw.Draw(img)
    rows = []  # (kind, payload, width)
    for line in lines:
        x0, y0, x1, y1 = probe.textbbox((0, 0), line, font=font)
        rows.append(('text', line, x1))
    if colors:
        items = []
        width = probe.textbbox((0, 0), 'groups', font=font)[2]
        for j, c in colors:
            label = str(j)
            tw = probe.textbbox((0, 0), label, font=font)[2]
            items.append((c, label, tw))
            width += gap * 2 + size + gap + tw
        rows.append(('legend', items, width))
    line_h = size + gap
    box_w = min(W, max(w for _, _, w in rows) + 2 * pad)
    box_h = min(H, len(rows) * line_h + 2 * pad)
    layer = Image.new('RGBA', img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rectangle([0, 0, box_w, box_h], fill=(0, 0, 0, 150))
    y = pad
    for kind, payload, _ in rows:
        if kind == 'text':
            draw.text((pad, y), payload, font=font, fill=(255, 255, 255, 255))
        else:
            x = pad
            draw.text((x, y), 'groups', font=font, fill=(255, 255, 255, 255))
            x += probe.textbbox((0, 0), 'groups', font=font)[2] + 2 * gap
            for c, label, tw in payload:
                d = size * 0.8
                cy = y + size * 0.55
                draw.ellipse([x, cy - d / 2, x + d, cy + d / 2], fill=c + (255,),
                             outline=(0, 0, 0, 255))
                x += size + gap
                draw.text((x, y), label, font=font, fill=(255, 255, 255, 255))
                x += tw + 2 * gap
        y += line_h
    img.alpha_composite(layer)
