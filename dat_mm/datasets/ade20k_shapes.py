"""A small ADE20K-format semantic segmentation dataset (scenes of textured regions + shapes).

Layout (ADEChallengeData2016's, so mmseg's ``ADE20KDataset`` reads it unchanged)::

    ROOT/images/training/ADE_train_00000000.jpg      ROOT/annotations/training/....png
    ROOT/images/validation/ADE_val_00000000.jpg      ROOT/annotations/validation/....png

Label maps use ADE20K's raw values: 0 is "other" (ignored under ``reduce_zero_label=True``),
and 1..150 are the ADE20K classes, which mmseg maps to 0..149. Each scene has a top region
(wall or sky) and a bottom region (floor, grass or road) split by a wavy boundary, 1..3
objects (tree = circle, car = square, person = triangle), and a few small "other" blobs
(label 0). Every class has its own colour and texture so a short run can learn it.

Deterministic: the same arguments give byte-identical files.
"""
import math
import os
import os.path as osp
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

from .shapes import image_rng, jitter_color, place_shapes, save_jpeg, shade_polygon, fill_polygon

# raw ADE20K label values (1-based) -> name; mmseg's class index is value - 1
ADE_LABELS = {1: 'wall', 3: 'sky', 4: 'floor', 5: 'tree', 7: 'road', 10: 'grass',
              13: 'person', 21: 'car'}
TOP_REGIONS = (1, 3)             # wall, sky
BOTTOM_REGIONS = (4, 10, 7)      # floor, grass, road
OBJECTS = {5: 'circle', 21: 'square', 13: 'triangle'}   # tree, car, person
LABEL_COLORS = {1: (190, 180, 160), 3: (120, 170, 235), 4: (150, 110, 70),
                10: (70, 160, 60), 7: (90, 90, 95), 5: (30, 110, 40), 21: (210, 40, 40),
                13: (240, 200, 150)}
OTHER_COLOR = (200, 60, 200)


def _region_texture(rng, h, w, color, amount=14.0):
    base = np.asarray(jitter_color(rng, color, 20), np.float32).reshape(1, 1, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, math.pi)
    stripes = np.sin((xx * math.cos(a) + yy * math.sin(a)) * rng.uniform(0.1, 0.4))[..., None]
    noise = rng.normal(0, 1, size=(h, w, 1)).astype(np.float32)
    return np.clip(base + amount * stripes + amount * noise, 0, 255).astype(np.uint8)


def _make_scene(rng, size: Tuple[int, int], max_objects: int):
    h, w = size
    top, bottom = int(rng.choice(TOP_REGIONS)), int(rng.choice(BOTTOM_REGIONS))
    xs = np.arange(w, dtype=np.float32)
    horizon = (rng.uniform(0.35, 0.6) * h + rng.uniform(2, 0.08 * h) *
               np.sin(xs * rng.uniform(0.02, 0.08) + rng.uniform(0, 2 * math.pi)))
    yy = np.arange(h, dtype=np.float32)[:, None]
    below = yy >= horizon[None, :]
    label = np.where(below, bottom, top).astype(np.uint8)
    canvas = np.where(below[..., None], _region_texture(rng, h, w, LABEL_COLORS[bottom]),
                      _region_texture(rng, h, w, LABEL_COLORS[top]))
    canvas = np.ascontiguousarray(canvas)
    obj_labels = list(OBJECTS)
    kinds = [OBJECTS[v] for v in obj_labels]
    num = int(rng.integers(1, max_objects + 1))
    for k, poly in place_shapes(rng, h, w, num, 0.18, 0.4, kinds):
        value = obj_labels[k]
        shade_polygon(rng, canvas, poly, jitter_color(rng, LABEL_COLORS[value], 25))
        mask_img = Image.new('L', (w, h), 0)
        fill_polygon(mask_img, poly, 255)
        label[np.asarray(mask_img) > 127] = value
    # a few small blobs of "other" (label 0: ignored after reduce_zero_label)
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(0.03, 0.06) * min(h, w)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        poly = [(cx + r * math.cos(t), cy + r * math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 12, endpoint=False)]
        shade_polygon(rng, canvas, poly, OTHER_COLOR, texture=8.0)
        mask_img = Image.new('L', (w, h), 0)
        fill_polygon(mask_img, poly, 255)
        label[np.asarray(mask_img) > 127] = 0
    return canvas, label


def generate_ade20k_shapes(root: str, num_train: int = 32, num_val: int = 8,
                           image_size: Tuple[int, int] = (256, 256), seed: int = 0,
                           max_objects: int = 3,
                           splits: Sequence[str] = ('training', 'validation')
                           ) -> Dict[str, Tuple[str, str]]:
    """Write the dataset under ``root``; returns ``{split: (img_dir, ann_dir)}``.

    ``image_size`` is (height, width).
    """
    h, w = int(image_size[0]), int(image_size[1])
    if min(h, w) < 32:
        raise ValueError(f'image_size {image_size} is too small (need >= 32 px)')
    if max_objects < 1:
        raise ValueError(f'max_objects must be >= 1, got {max_objects}')
    counts = {'training': num_train, 'validation': num_val}
    prefixes = {'training': 'ADE_train', 'validation': 'ADE_val'}
    out = {}
    for split in splits:
        if split not in counts:
            raise ValueError(f'unknown split {split!r}; choose from {tuple(counts)}')
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for idx in range(counts[split]):
            rng = image_rng(seed, split, idx)
            canvas, label = _make_scene(rng, (h, w), max_objects)
            stem = f'{prefixes[split]}_{idx:08d}'
            save_jpeg(canvas, osp.join(img_dir, stem + '.jpg'))
            Image.fromarray(label).save(osp.join(ann_dir, stem + '.png'))
        out[split] = (img_dir, ann_dir)
    return out
