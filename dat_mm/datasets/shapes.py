"""Drawing primitives shared by the synthetic dataset generators.

Everything is a pure function of a ``numpy.random.Generator`` so a dataset is reproducible
from its seed. Shapes are described by polygons (lists of ``(x, y)`` vertices); the same
polygon is rasterised into the image and written to the annotations, so a mask or label map
always agrees with what was drawn.
"""
import math
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

Polygon = List[Tuple[float, float]]

SHAPE_KINDS = ('circle', 'square', 'triangle', 'star')


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """A generator for one image, independent of how many other images are made."""
    split_id = sum((i + 1) * ord(c) for i, c in enumerate(split))
    return np.random.default_rng([int(seed), split_id, int(index)])


def textured_background(rng: np.random.Generator, height: int, width: int,
                        base_color: Sequence[float] = None,
                        contrast: float = 40.0) -> np.ndarray:
    """An HxWx3 uint8 texture: smooth colour noise plus faint stripes around a base colour."""
    if base_color is None:
        base_color = rng.uniform(70, 185, size=3)
    base = np.asarray(base_color, dtype=np.float32).reshape(1, 1, 3)
    # low-frequency noise, bilinearly upsampled
    cells = int(rng.integers(3, 7))
    coarse = rng.normal(0, 1, size=(cells, cells, 3)).astype(np.float32)
    coarse_img = Image.fromarray(((coarse - coarse.min()) / (np.ptp(coarse) + 1e-6) * 255)
                                 .astype(np.uint8))
    smooth = np.asarray(coarse_img.resize((width, height), Image.BILINEAR),
                        dtype=np.float32) / 255.0 - 0.5
    # stripes at a random angle and frequency
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(0.05, 0.25)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq)[..., None]
    fine = rng.normal(0, 1, size=(height, width, 1)).astype(np.float32)
    img = base + contrast * smooth + 0.35 * contrast * stripes + 0.15 * contrast * fine
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_polygon(kind: str, cx: float, cy: float, size: float, angle: float) -> Polygon:
    """Vertices of a shape of bounding extent about ``size`` centred at (cx, cy)."""
    r = size / 2.0
    if kind == 'circle':
        n = 32
        return [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n))
                for k in range(n)]
    if kind == 'square':
        rr = r * math.sqrt(2) * 0.8
        return [(cx + rr * math.cos(angle + math.pi / 4 + k * math.pi / 2),
                 cy + rr * math.sin(angle + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    if kind == 'triangle':
        return [(cx + r * math.cos(angle - math.pi / 2 + k * 2 * math.pi / 3),
                 cy + r * math.sin(angle - math.pi / 2 + k * 2 * math.pi / 3)) for k in range(3)]
    if kind == 'star':
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = angle - math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    raise ValueError(f'unknown shape kind {kind!r}; known: {SHAPE_KINDS}')


def clip_polygon(poly: Polygon, width: int, height: int) -> Polygon:
    return [(min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)) for x, y in poly]


def polygon_bbox(poly: Polygon) -> Tuple[float, float, float, float]:
    """(x, y, w, h) of a polygon's extent."""
    xs = [p[0] for p in poly]
    ys = [p[1] for p in poly]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def polygon_area(poly: Polygon) -> float:
    """Shoelace area."""
    s = 0.0
    for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


def boxes_overlap(a, b, margin: float = 0.0) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return not (ax + aw + margin <= bx or bx + bw + margin <= ax or
                ay + ah + margin <= by or by + bh + margin <= ay)


def place_shapes(rng: np.random.Generator, height: int, width: int, num: int,
                 min_frac: float, max_frac: float, kinds: Sequence[str],
                 max_tries: int = 50):
    """Choose up to ``num`` non-overlapping shapes: list of (kind_index, polygon)."""
    placed = []
    boxes = []
    side = min(height, width)
    for _ in range(num):
        for _try in range(max_tries):
            k = int(rng.integers(len(kinds)))
            size = rng.uniform(min_frac, max_frac) * side
            cx = rng.uniform(size / 2, width - size / 2)
            cy = rng.uniform(size / 2, height - size / 2)
            poly = clip_polygon(shape_polygon(kinds[k], cx, cy, size, rng.uniform(0, 2 * math.pi)),
                                width, height)
            box = polygon_bbox(poly)
            if all(not boxes_overlap(box, b, margin=2.0) for b in boxes):
                placed.append((k, poly))
                boxes.append(box)
                break
    return placed


def jitter_color(rng: np.random.Generator, color: Sequence[float], amount: float) -> tuple:
    c = np.asarray(color, dtype=np.float32) + rng.uniform(-amount, amount, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def fill_polygon(img: Image.Image, poly: Polygon, color) -> None:
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in poly], fill=color)


def shade_polygon(rng: np.random.Generator, canvas: np.ndarray, poly: Polygon,
                  color: Sequence[int], texture: float = 18.0) -> None:
    """Paint a polygon in place with a colour plus a little texture (HxWx3 uint8 canvas)."""
    h, w = canvas.shape[:2]
    mask_img = Image.new('L', (w, h), 0)
    fill_polygon(mask_img, poly, 255)
    mask = np.asarray(mask_img) > 127
    noise = rng.normal(0, texture, size=(h, w, 1)).astype(np.float32)
    painted = np.clip(np.asarray(color, np.float32).reshape(1, 1, 3) + noise, 0, 255)
    canvas[mask] = painted[mask].astype(np.uint8)


def save_jpeg(array: np.ndarray, path: str, quality: int = 92) -> None:
    Image.fromarray(array).save(path, format='JPEG', quality=quality)
