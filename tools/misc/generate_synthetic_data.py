"""Generate the small built-in datasets (COCO shapes, ADE20K-format scenes, ImageNet folders).

    python tools/misc/generate_synthetic_data.py coco      # -> data/generated/coco_shapes
    python tools/misc/generate_synthetic_data.py ade20k    # -> data/generated/ade20k_shapes
    python tools/misc/generate_synthetic_data.py imagenet  # -> data/generated/imagenet_shapes
    python tools/misc/generate_synthetic_data.py all

The output is deterministic from the arguments. A ``dat_mm_synthetic.json`` manifest records
them; a second call with the same arguments leaves the files alone (``--force`` rewrites).
"""
import argparse
import json
import os
import os.path as osp
import shutil
import time

from dat_mm.datasets import (DEFAULT_ROOTS, generate_ade20k_shapes, generate_coco_shapes,
                             generate_imagenet_shapes)

MANIFEST = 'dat_mm_synthetic.json'
DEFAULTS = dict(
    coco=dict(num_train=64, num_val=16, size=128),
    ade20k=dict(num_train=32, num_val=8, size=256),
    imagenet=dict(num_train=16, num_val=4, size=64),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('kind', choices=['coco', 'ade20k', 'imagenet', 'all'])
    p.add_argument('--out', help='output root (default data/generated/<kind>_shapes); not '
                   'with "all"')
    p.add_argument('--num-train', type=int, help='training images (imagenet: per class)')
    p.add_argument('--num-val', type=int, help='validation images (imagenet: per class)')
    p.add_argument('--size', type=int, help='image side in pixels')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--max-objects', type=int, default=3, help='coco/ade20k: objects per image')
    p.add_argument('--force', action='store_true', help='rewrite even if the manifest matches')
    args = p.parse_args(argv)
    if args.kind == 'all' and args.out:
        p.error('--out names one dataset; generate them one by one to choose roots')
    return args


def generate(kind: str, root: str, num_train: int, num_val: int, size: int, seed: int,
             max_objects: int = 3, force: bool = False) -> bool:
    """Generate one dataset; returns False if an identical one was already there."""
    params = dict(kind=kind, num_train=num_train, num_val=num_val, size=size, seed=seed,
                  max_objects=max_objects, format_version=1)
    manifest = osp.join(root, MANIFEST)
    if not force and osp.exists(manifest):
        with open(manifest) as f:
            if json.load(f) == params:
                return False
    if osp.exists(root) and os.listdir(root):
        if not osp.exists(manifest):
            raise FileExistsError(f'{root} exists and was not made by this tool; choose '
                                  f'another --out or remove it')
        shutil.rmtree(root)
    if kind == 'coco':
        generate_coco_shapes(root, num_train, num_val, (size, size), seed,
                             max_objects=max_objects)
    elif kind == 'ade20k':
        generate_ade20k_shapes(root, num_train, num_val, (size, size), seed,
                               max_objects=max_objects)
    else:
        generate_imagenet_shapes(root, num_train, num_val, size, seed)
    with open(manifest, 'w') as f:
        json.dump(params, f, indent=1)
    return True


def main(argv=None):
    args = parse_args(argv)
    kinds = ['coco', 'ade20k', 'imagenet'] if args.kind == 'all' else [args.kind]
    for kind in kinds:
        d = DEFAULTS[kind]
        root = args.out or DEFAULT_ROOTS[kind]
        t0 = time.time()
        made = generate(kind, root,
                        args.num_train if args.num_train is not None else d['num_train'],
                        args.num_val if args.num_val is not None else d['num_val'],
                        args.size or d['size'], args.seed, args.max_objects, args.force)
        state = f'generated in {time.time() - t0:.1f}s' if made else 'already there'
        print(f'{kind}: {root} ({state})')


if __name__ == '__main__':
    main()
