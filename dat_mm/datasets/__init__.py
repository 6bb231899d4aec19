"""Small generated datasets in real formats (COCO, ADE20K, ImageNet folders) for tests, the
quickstart and smoke runs. They need numpy and Pillow only and never download anything.

Default locations used by the configs in ``configs/quickstart`` and by
``tools/misc/generate_synthetic_data.py``: ``data/generated/{coco_shapes,ade20k_shapes,
imagenet_shapes}``.
"""
from .ade20k_shapes import ADE_LABELS, generate_ade20k_shapes
from .coco_shapes import coco_shapes_metainfo, generate_coco_shapes
from .imagenet_shapes import generate_imagenet_shapes

DEFAULT_ROOTS = dict(coco='data/generated/coco_shapes', ade20k='data/generated/ade20k_shapes',
                     imagenet='data/generated/imagenet_shapes')

__all__ = ['generate_coco_shapes', 'coco_shapes_metainfo', 'generate_ade20k_shapes',
           'ADE_LABELS', 'generate_imagenet_shapes', 'DEFAULT_ROOTS']
