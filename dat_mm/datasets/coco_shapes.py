"""A small COCO-format instance segmentation dataset of shapes on textured backgrounds.

Layout (the same as COCO's, so mmdet's ``CocoDataset`` and ``CocoMetric`` read it as is)::

    ROOT/annotations/instances_train.json   ROOT/train/000000.jpg ...
    ROOT/annotations/instances_val.json     ROOT/val/000000.jpg ...

Each image holds 1..``max_objects`` non-overlapping filled shapes (circle, square, triangle,
optionally star) at random positions, sizes and rotations on a texture of smooth colour
noise and stripes. Every annotation carries the polygon that was drawn (``segmentation``),
its bounding box and its polygon area. With ``class_colors=True`` (default) each class has
its own hue (with jitter), which lets a randomly initialised detector learn something within
a few hundred CPU iterations; ``class_colors=False`` draws every shape in a random colour.

Deterministic: the same arguments give byte-identical files (one RNG stream per image).
"""
import json
import os
import os.path as osp
from typing import Dict, Sequence, Tuple

import numpy as np

from .shapes import (SHAPE_KINDS, image_rng, jitter_color, place_shapes, polygon_area,
                     polygon_bbox, save_jpeg, shade_polygon, textured_background)

DEFAULT_CLASSES = ('circle', 'square', 'triangle')
CLASS_COLORS = {
    'circle': (225, 50, 50),
    'square': (40, 200, 70),
    'triangle': (50, 80, 235),
    'star': (240, 210, 40),
}


def coco_shapes_metainfo(classes: Sequence[str] = DEFAULT_CLASSES) -> dict:
    """``metainfo`` for mmdet's CocoDataset (class names and a palette)."""
    return dict(classes=tuple(classes),
                palette=[CLASS_COLORS[c] for c in classes])


def _make_image(rng: np.random.Generator, size: Tuple[int, int], classes: Sequence[str],
                max_objects: int, min_frac: float, max_frac: float, class_colors: bool):
    h, w = size
    gray = rng.uniform(85, 170)
    tint = rng.uniform(-12, 12, size=3)
    canvas = textured_background(rng, h, w, base_color=gray + tint, contrast=45.0)
    num = int(rng.integers(1, max_objects + 1))
    shapes = place_shapes(rng, h, w, num, min_frac, max_frac, classes)
    objects = []
    for k, poly in shapes:
        if class_colors:
            color = jitter_color(rng, CLASS_COLORS[classes[k]], 30)
        else:
            color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        shade_polygon(rng, canvas, poly, color)
        objects.append((k, poly))
    return canvas, objects


def generate_coco_shapes(root: str, num_train: int = 64, num_val: int = 16,
                         image_size: Tuple[int, int] = (192, 192), seed: int = 0,
                         classes: Sequence[str] = DEFAULT_CLASSES, max_objects: int = 3,
                         min_frac: float = 0.2, max_frac: float = 0.45,
                         class_colors: bool = True, splits: Sequence[str] = ('train', 'val'),
                         ) -> Dict[str, str]:
    """Write the dataset under ``root``; returns ``{split: annotation file}``.

    ``image_size`` is (height, width). ``min_frac``/``max_frac`` bound a shape's size as a
    fraction of the shorter image side.
    """
    unknown = [c for c in classes if c not in SHAPE_KINDS]
    if unknown:
        raise ValueError(f'unknown shape classes {unknown}; choose from {SHAPE_KINDS}')
    if not 0 < min_frac <= max_frac < 1:
        raise ValueError(f'need 0 < min_frac <= max_frac < 1, got {min_frac}, {max_frac}')
    if max_objects < 1:
        raise ValueError(f'max_objects must be >= 1, got {max_objects}')
    h, w = int(image_size[0]), int(image_size[1])
    if min(h, w) < 32:
        raise ValueError(f'image_size {image_size} is too small (need >= 32 px)')
    counts = {'train': num_train, 'val': num_val}
    categories = [dict(id=i + 1, name=c, supercategory='shape') for i, c in enumerate(classes)]
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    ann_files = {}
    for split in splits:
        if split not in counts:
            raise ValueError(f'unknown split {split!r}; choose from {tuple(counts)}')
        img_dir = osp.join(root, split)
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        for idx in range(counts[split]):
            rng = image_rng(seed, split, idx)
            canvas, objects = _make_image(rng, (h, w), classes, max_objects, min_frac, max_frac,
                                          class_colors)
            file_name = f'{idx:06d}.jpg'
            save_jpeg(canvas, osp.join(img_dir, file_name))
            image_id = idx + 1
            images.append(dict(id=image_id, file_name=file_name, height=h, width=w))
            for k, poly in objects:
                x, y, bw, bh = polygon_bbox(poly)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id, category_id=k + 1,
                    bbox=[round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                    area=round(polygon_area(poly), 2), iscrowd=0,
                    segmentation=[[round(v, 2) for p in poly for v in p]]))
        ann = dict(info=dict(description=f'dat_mm synthetic shapes ({split}, seed {seed})'),
                   licenses=[], images=images, annotations=annotations,
                   categories=categories)
        ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
        with open(ann_file, 'w') as f:
            json.dump(ann, f)
        ann_files[split] = ann_file
    return ann_files
