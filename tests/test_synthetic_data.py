"""The generated datasets: deterministic, in the real formats, and read correctly by mmdet's
CocoDataset, mmseg's ADE20KDataset (reduce_zero_label) and mmpretrain's CustomDataset."""
import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dat_mm.datasets import (generate_ade20k_shapes, generate_coco_shapes,
                             generate_imagenet_shapes)
from dat_mm.datasets.coco_shapes import CLASS_COLORS

ROOT = Path(__file__).resolve().parents[1]


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob('*') if p.is_file())


def _same_files(a, b):
    files = _tree(a)
    assert files == _tree(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    return not mismatch and not errors


@pytest.mark.parametrize('gen,kwargs', [
    (generate_coco_shapes, dict(num_train=4, num_val=2, image_size=(64, 80))),
    (generate_ade20k_shapes, dict(num_train=3, num_val=2, image_size=(64, 64))),
    (generate_imagenet_shapes, dict(num_train_per_class=2, num_val_per_class=1, image_size=32)),
])
def test_deterministic_from_seed(tmp_path, gen, kwargs):
    gen(str(tmp_path / 'a'), seed=3, **kwargs)
    gen(str(tmp_path / 'b'), seed=3, **kwargs)
    gen(str(tmp_path / 'c'), seed=4, **kwargs)
    assert _same_files(tmp_path / 'a', tmp_path / 'b')
    assert not _same_files(tmp_path / 'a', tmp_path / 'c')


def test_coco_annotations_match_the_drawn_shapes(tmp_path):
    from pycocotools.coco import COCO
    ann_files = generate_coco_shapes(str(tmp_path), num_train=6, num_val=3, image_size=(96, 128),
                                     seed=0, max_objects=3)
    coco = COCO(ann_files['train'])
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == ['circle', 'square',
                                                                     'triangle']
    assert len(coco.getImgIds()) == 6
    n_anns = 0
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        assert (info['height'], info['width']) == (96, 128)
        img = np.asarray(Image.open(tmp_path / 'train' / info['file_name']).convert('RGB'),
                         dtype=np.float32)
        assert img.shape == (96, 128, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 3
        for ann in anns:
            n_anns += 1
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 96 and w > 5 and h > 5
            mask = coco.annToMask(ann).astype(bool)
            # the polygon area and the rasterised mask agree (boundary pixels aside)
            assert abs(mask.sum() - ann['area']) < 0.15 * ann['area'] + 20
            ys, xs = np.nonzero(mask)
            assert xs.min() >= x - 1.5 and xs.max() <= x + w + 1.5
            assert ys.min() >= y - 1.5 and ys.max() <= y + h + 1.5
            # pixels inside the mask carry the class colour (class_colors=True)
            name = coco.loadCats(ann['category_id'])[0]['name']
            inner = img[mask].mean(axis=0)
            assert np.abs(inner - np.array(CLASS_COLORS[name])).max() < 45, (name, inner)
    assert n_anns >= 6


def test_coco_read_by_mmdet(tmp_path):
    from mmengine.registry import init_default_scope
    from mmdet.registry import DATASETS
    from dat_mm.datasets import coco_shapes_metainfo
    generate_coco_shapes(str(tmp_path), num_train=4, num_val=2, image_size=(64, 64), seed=1)
    init_default_scope('mmdet')
    ds = DATASETS.build(dict(
        type='CocoDataset', data_root=str(tmp_path), ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), metainfo=coco_shapes_metainfo(), test_mode=True,
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='PackDetInputs')]))
    assert len(ds) == 2
    sample = ds[0]
    gt = sample['data_samples'].gt_instances
    with open(tmp_path / 'annotations' / 'instances_val.json') as f:
        raw = json.load(f)
    n = sum(a['image_id'] == raw['images'][0]['id'] for a in raw['annotations'])
    assert len(gt) == n and gt.masks.masks.shape[1:] == (64, 64)
    assert sample['inputs'].shape == (3, 64, 64)
    assert set(gt.labels.tolist()) <= {0, 1, 2}


def test_ade20k_read_by_mmseg_with_reduce_zero_label(tmp_path):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    generate_ade20k_shapes(str(tmp_path), num_train=2, num_val=2, image_size=(64, 96), seed=0)
    raw = np.asarray(Image.open(tmp_path / 'annotations' / 'validation' /
                                'ADE_val_00000000.png'))
    assert raw.dtype == np.uint8 and raw.shape == (64, 96)
    values = set(np.unique(raw).tolist())
    assert values <= {0, 1, 3, 4, 5, 7, 10, 13, 21} and len(values - {0}) >= 2
    init_default_scope('mmseg')
    ds = DATASETS.build(dict(
        type='ADE20KDataset', data_root=str(tmp_path),
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True),
                  dict(type='PackSegInputs')]))
    assert len(ds) == 2
    seg = ds[0]['data_samples'].gt_sem_seg.data[0].numpy()
    expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    np.testing.assert_array_equal(seg, expected)


def test_imagenet_folders_and_ann_file_agree(tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    generate_imagenet_shapes(str(tmp_path), num_train_per_class=3, num_val_per_class=2,
                             image_size=32, seed=0)
    init_default_scope('mmpretrain')
    by_folder = DATASETS.build(dict(type='CustomDataset', data_root=str(tmp_path),
                                    data_prefix='train', pipeline=[]))
    by_ann = DATASETS.build(dict(type='CustomDataset', data_root=str(tmp_path),
                                 ann_file='meta/train.txt', data_prefix='train',
                                 classes=str(tmp_path / 'meta' / 'classes.txt'), pipeline=[]))
    assert len(by_folder) == len(by_ann) == 12
    assert by_folder.CLASSES == by_ann.CLASSES == ('circle', 'square', 'star', 'triangle')
    folder = {Path(d['img_path']).name: d['gt_label'] for d in
              (by_folder.get_data_info(i) for i in range(len(by_folder)))}
    ann = {Path(d['img_path']).name: d['gt_label'] for d in
           (by_ann.get_data_info(i) for i in range(len(by_ann)))}
    assert folder == ann
    assert all(os.path.exists(by_ann.get_data_info(i)['img_path']) for i in range(len(by_ann)))


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match='unknown shape'):
        generate_coco_shapes(str(tmp_path), classes=('circle', 'hexagon'))
    with pytest.raises(ValueError, match='too small'):
        generate_ade20k_shapes(str(tmp_path), image_size=(16, 16))
    with pytest.raises(ValueError, match='min_frac'):
        generate_coco_shapes(str(tmp_path), min_frac=0.5, max_frac=0.2)


def test_cli_is_idempotent_and_protects_other_dirs(tmp_path):
    tool = ROOT / 'tools' / 'misc' / 'generate_synthetic_data.py'
    out = tmp_path / 'coco'
    cmd = [sys.executable, str(tool), 'coco', '--out', str(out), '--num-train', '2',
           '--num-val', '1', '--size', '48']
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert 'generated' in first.stdout
    mtime = (out / 'train' / '000000.jpg').stat().st_mtime_ns
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert 'already there' in second.stdout
    assert (out / 'train' / '000000.jpg').stat().st_mtime_ns == mtime
    # other arguments regenerate
    subprocess.run(cmd[:-1] + ['64'], capture_output=True, text=True, check=True)
    assert Image.open(out / 'train' / '000000.jpg').size == (64, 64)
    # a non-empty directory the tool did not make is never deleted
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('x')
    bad = subprocess.run(cmd[:3] + ['--out', str(foreign)], capture_output=True, text=True)
    assert bad.returncode != 0 and 'not made by this tool' in bad.stderr
    assert (foreign / 'keep.txt').exists()
