"""A tiny ImageNet-style classification dataset: one shape per image, class = shape kind.

Layout (readable by mmpretrain's ``CustomDataset`` from the folders, or by ``ImageNet`` /
``CustomDataset`` with ``ann_file``)::

    ROOT/train/<class>/<class>_0000.jpg      ROOT/meta/train.txt   ("circle/circle_0000.jpg 0")
    ROOT/val/<class>/<class>_0000.jpg        ROOT/meta/val.txt
    ROOT/meta/classes.txt                    (one class name a line, index order)

Class indices follow the sorted class names (the folder-scanning order of CustomDataset),
so the folder layout and the annotation files agree. Deterministic from the seed.
"""
import os
import os.path as osp
from typing import Dict, Sequence

from .coco_shapes import CLASS_COLORS
from .shapes import (SHAPE_KINDS, image_rng, jitter_color, save_jpeg, shade_polygon,
                     shape_polygon, textured_background, clip_polygon)

DEFAULT_CLASSES = ('circle', 'square', 'star', 'triangle')


def generate_imagenet_shapes(root: str, num_train_per_class: int = 16,
                             num_val_per_class: int = 4, image_size: int = 64, seed: int = 0,
                             classes: Sequence[str] = DEFAULT_CLASSES,
                             splits: Sequence[str] = ('train', 'val')) -> Dict[str, str]:
    """Write the dataset under ``root``; returns ``{split: annotation file}``."""
    classes = tuple(sorted(classes))
    unknown = [c for c in classes if c not in SHAPE_KINDS]
    if unknown:
        raise ValueError(f'unknown shape classes {unknown}; choose from {SHAPE_KINDS}')
    if image_size < 32:
        raise ValueError(f'image_size {image_size} is too small (need >= 32 px)')
    counts = {'train': num_train_per_class, 'val': num_val_per_class}
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', 'classes.txt'), 'w') as f:
        f.write(''.join(c + '\n' for c in classes))
    ann_files = {}
    s = image_size
    for split in splits:
        if split not in counts:
            raise ValueError(f'unknown split {split!r}; choose from {tuple(counts)}')
        lines = []
        for label, name in enumerate(classes):
            os.makedirs(osp.join(root, split, name), exist_ok=True)
            for idx in range(counts[split]):
                rng = image_rng(seed, f'{split}/{name}', idx)
                canvas = textured_background(rng, s, s, contrast=40.0)
                size = rng.uniform(0.45, 0.8) * s
                cx = rng.uniform(size / 2, s - size / 2)
                cy = rng.uniform(size / 2, s - size / 2)
                poly = clip_polygon(shape_polygon(name, cx, cy, size, rng.uniform(0, 6.283)),
                                    s, s)
                shade_polygon(rng, canvas, poly, jitter_color(rng, CLASS_COLORS[name], 40))
                rel = f'{name}/{name}_{idx:04d}.jpg'   # relative to ROOT/<split>, as ImageNet's
                save_jpeg(canvas, osp.join(root, split, rel))
                lines.append(f'{rel} {label}')
        ann_file = osp.join(root, 'meta', f'{split}.txt')
        with open(ann_file, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        ann_files[split] = ann_file
    return ann_files
