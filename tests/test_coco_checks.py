"""Degenerate COCO polygons (dat_mm/datasets/coco_checks.py): plain mmdet CocoMetric crashes in
pycocotools on them; the one cleaning rule counts them right, CheckedCocoDataset drops them on
load with one warning, CheckedCocoMetric evaluates such a file exactly like the cleaned file,
and every COCO dataset / evaluator of the mmdet configs is the checked one."""
import copy
import json
import logging
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmengine.config import Config

from dat_mm.datasets import coco_shapes_metainfo, generate_coco_shapes
from dat_mm.datasets.coco_checks import (CheckedCocoDataset, CheckedCocoMetric,
                                         drop_degenerate_polygons, is_valid_polygon)

from log_capture import CurrentLog
from small_configs import det_config

ROOT = Path(__file__).resolve().parents[1]
NAN, INF = float('nan'), float('inf')
SQUARE = [2, 2, 12, 2, 12, 12, 2, 12]


def _Warnings():
    return CurrentLog(logging.WARNING)


# ---- the rule -------------------------------------------------------------------------------
@pytest.mark.parametrize('polygon, valid', [
    ([0, 0, 10, 0, 10, 10], True), ((0, 0, 10, 0, 10, 10), True), ([0., 0, 1.5, 0, 1, 1], True),
    (SQUARE, True), ([10, 10, 20, 20], False), ([10, 10], False), ([], False),
    ([0, 0, 10, 0, 10, 10, 5], False), ([0, 0, 10, NAN, 10, 10], False),
    ([0, 0, INF, 0, 10, 10], False), ([0, 0, 10, 0, 10, '10'], False),
    ([0, 0, 10, 0, 10, None], False), ([0, 0, 10, 0, 10, True], False),
    ([[0, 0, 10, 0, 10, 10]], False), (7, False), ({'counts': 'x', 'size': [2, 2]}, False)])
def test_valid_polygon(polygon, valid):
    assert is_valid_polygon(polygon) is valid


def test_counts_on_a_hand_made_annotation_dict():
    rle = dict(size=[16, 16], counts='PPYo0')
    anns = [
        dict(id=1, segmentation=[[0, 0, 10, 0, 10, 10]]),                   # fine
        dict(id=2, segmentation=[SQUARE, [10, 10, 20, 20]]),                 # 1 dropped, kept
        dict(id=3, segmentation=[[10, 10, 20, 20]]),                         # 2 points: gone
        dict(id=4, segmentation=[[5, 5], [0, 0, 10, 0, 10, 10, 5]]),         # 1 pt + odd: gone
        dict(id=5, segmentation=[[0, 0, 10, NAN, 10, 10], [0, 0, INF, 0, 10, 10]]),  # gone
        dict(id=6, segmentation=rle),                                        # RLE: untouched
        dict(id=7, segmentation=[]),                                         # box-only: kept
        dict(id=8),                                                          # box-only: kept
        dict(id=9, segmentation=[0, 0, 10, 0, 10, 10]),                      # not nested: gone
        dict(id=10, segmentation=[[0, 0, 10, 0, 10, '10'], SQUARE, [1, 1]]),  # 2 dropped, kept
    ]
    coco = dict(images=[], categories=[], annotations=copy.deepcopy(anns))
    report = drop_degenerate_polygons(coco)
    assert (report.polygons, report.annotations, report.instances) == (9, 6, 4)
    assert report.dropped_ids == [3, 4, 5, 9]
    assert [a['id'] for a in coco['annotations']] == [1, 2, 6, 7, 8, 10]
    kept = {a['id']: a for a in coco['annotations']}
    assert kept[2]['segmentation'] == [SQUARE]
    assert kept[10]['segmentation'] == [SQUARE]
    for i in (1, 6, 7, 8):
        assert kept[i] == anns[i - 1]
    # idempotent: a clean dict is left alone and reports nothing
    again = drop_degenerate_polygons(coco)
    assert not again and again.polygons == 0 and again.dropped_ids == []
    message = report.message('ann.json', 'X')
    assert 'ann.json' in message and '9 degenerate polygon(s)' in message
    assert '4 instance(s) lost their whole mask and were dropped' in message
    assert 'annotation ids: 3, 4, 5, 9' in message


# ---- a generated COCO file with degenerate polygons ---------------------------------------------
def _corrupt(coco, with_non_finite):
    """Corrupts a generated val file in place and returns the cleaned copy built by hand:
    annotation 1 gains a 2-point polygon (kept with its real one), annotation 2 becomes a
    2-point polygon and annotation 3 a 1-point plus an odd-length polygon (both dropped);
    with_non_finite also replaces annotation 4 by NaN / inf polygons (dropped)."""
    anns = {a['id']: a for a in coco['annotations']}
    clean = copy.deepcopy(coco)
    dropped = [2, 3] + ([4] if with_non_finite else [])
    clean['annotations'] = [a for a in clean['annotations'] if a['id'] not in dropped]
    anns[1]['segmentation'] = anns[1]['segmentation'] + [[10, 10, 20, 20]]
    anns[2]['segmentation'] = [[10, 10, 20, 20]]
    anns[3]['segmentation'] = [[5, 5], [0, 0, 10, 0, 10, 10, 5]]
    if with_non_finite:
        anns[4]['segmentation'] = [[0, 0, 10, NAN, 10, 10], [0, 0, INF, 0, 10, 10]]
    return clean, dropped


@pytest.fixture(scope='module')
def coco_files(tmp_path_factory):
    """{'root', 'clean', 'dirty' (NaN/inf included), 'crash' (no non-finite numbers: plain
    pycocotools would try to allocate an unbounded mask for those), 'original'}."""
    root = tmp_path_factory.mktemp('coco')
    generate_coco_shapes(str(root), num_train=1, num_val=4, image_size=(64, 64), max_objects=2,
                         splits=('val', ))
    ann_dir = root / 'annotations'
    original = json.loads((ann_dir / 'instances_val.json').read_text())
    assert len(original['annotations']) >= 5
    files = dict(root=root, original=original)
    for name, non_finite in (('dirty', True), ('crash', False)):
        coco = copy.deepcopy(original)
        clean, dropped = _corrupt(coco, non_finite)
        (ann_dir / f'{name}.json').write_text(json.dumps(coco))
        (ann_dir / f'{name}_clean.json').write_text(json.dumps(clean))
        files[name] = str(ann_dir / f'{name}.json')
        files[f'{name}_clean'] = str(ann_dir / f'{name}_clean.json')
        files[f'{name}_dropped'] = dropped
    return files


def _dataset(files, ann_file, cls=CheckedCocoDataset):
    return cls(data_root=str(files['root']), ann_file=ann_file, data_prefix=dict(img='val/'),
               metainfo=coco_shapes_metainfo(), pipeline=[])


def _instances(dataset):
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    return [(d['img_id'], inst['bbox'], inst['bbox_label'], inst['mask'])
            for d in infos for inst in d['instances']]


def test_dataset_drops_degenerate_polygons_with_one_warning(coco_files):
    with _Warnings() as caught:
        dataset = _dataset(coco_files, coco_files['dirty'])
    assert len(caught.messages) == 1, caught.messages
    (message,) = caught.messages
    assert coco_files['dirty'] in message and message.startswith('CheckedCocoDataset: ')
    assert 'dropped 6 degenerate polygon(s) from 4 annotation(s)' in message
    assert '3 instance(s) lost their whole mask' in message
    assert 'annotation ids: 2, 3, 4' in message
    # exactly what mmdet's own CocoDataset reads from the cleaned file, every polygon valid
    from mmdet.datasets import CocoDataset
    with _Warnings() as caught:
        reference = _dataset(coco_files, coco_files['dirty_clean'], cls=CocoDataset)
        clean = _dataset(coco_files, coco_files['dirty_clean'])
    assert caught.messages == []
    assert _instances(dataset) == _instances(reference) == _instances(clean)
    n_original = len(coco_files['original']['annotations'])
    assert len(_instances(dataset)) == n_original - 3
    assert all(is_valid_polygon(p) for *_, mask in _instances(dataset) for p in mask)
    assert len(dataset) == len(coco_files['original']['images'])


def test_dataset_pipeline_loads_the_cleaned_masks(coco_files):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets.transforms import LoadAnnotations
    pipeline = [dict(type=LoadImageFromFile),
                dict(type=LoadAnnotations, with_bbox=True, with_mask=True)]
    dataset = CheckedCocoDataset(
        data_root=str(coco_files['root']), ann_file=coco_files['dirty'],
        data_prefix=dict(img='val/'), metainfo=coco_shapes_metainfo(), pipeline=pipeline)
    for i in range(len(dataset)):
        out = dataset[i]
        assert len(out['gt_masks']) == len(out['gt_bboxes'])
        assert not out['gt_ignore_flags'].any()


# ---- evaluation ---------------------------------------------------------------------------------
def _predictions(coco):
    """Hand-made predictions from the original (uncorrupted) annotations: every object found
    with its polygon's mask, one of them with a shifted box and mask, scores descending."""
    imgs = {im['id']: im for im in coco['images']}
    samples = {i: [] for i in imgs}
    for k, ann in enumerate(coco['annotations']):
        im = imgs[ann['image_id']]
        h, w = im['height'], im['width']
        mask = mask_utils.decode(mask_utils.merge(
            mask_utils.frPyObjects(ann['segmentation'], h, w))).astype(bool)
        x, y, bw, bh = ann['bbox']
        box = [x, y, x + bw, y + bh]
        if k == 0:
            mask = np.roll(mask, 6, axis=1)
            box = [box[0] + 6, box[1], box[2] + 6, box[3]]
        samples[ann['image_id']].append((box, ann['category_id'] - 1, 0.9 - 0.05 * k, mask))
    out = []
    for img_id, preds in samples.items():
        im = imgs[img_id]
        out.append(dict(
            img_id=img_id, ori_shape=(im['height'], im['width']),
            pred_instances=dict(
                bboxes=torch.tensor([p[0] for p in preds], dtype=torch.float32).reshape(-1, 4),
                labels=torch.tensor([p[1] for p in preds], dtype=torch.int64),
                scores=torch.tensor([p[2] for p in preds], dtype=torch.float32),
                masks=torch.from_numpy(np.stack([p[3] for p in preds])))))
    return out


def _evaluate(metric, coco):
    metric.dataset_meta = coco_shapes_metainfo()
    metric.process({}, _predictions(coco))
    return metric.evaluate(size=len(coco['images']))


def test_plain_coco_metric_crashes_on_a_degenerate_polygon(coco_files):
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(ann_file=coco_files['crash'], metric=['bbox', 'segm'])
    with pytest.raises(TypeError):
        _evaluate(metric, coco_files['original'])


@pytest.mark.parametrize('name', ['dirty', 'crash'])
def test_checked_metric_equals_the_cleaned_file(coco_files, name):
    from mmdet.evaluation import CocoMetric
    with _Warnings() as caught:
        checked = _evaluate(CheckedCocoMetric(ann_file=coco_files[name], metric=['bbox', 'segm']),
                            coco_files['original'])
    messages = [m for m in caught.messages if m.startswith('CheckedCocoMetric: ')]
    assert len(messages) == 1, caught.messages
    assert coco_files[name] in messages[0]
    assert f'{len(coco_files[name + "_dropped"])} instance(s) lost' in messages[0]
    reference = _evaluate(CocoMetric(ann_file=coco_files[f'{name}_clean'],
                                     metric=['bbox', 'segm']), coco_files['original'])
    assert checked == reference
    # a real comparison: the dropped objects' and the shifted object's detections are false
    # positives, the rest are exact
    for kind in ('bbox', 'segm'):
        assert 0.2 < checked[f'coco/{kind}_mAP'] < 1.0, checked


def test_checked_metric_on_a_clean_file_changes_nothing(coco_files):
    from mmdet.evaluation import CocoMetric
    with _Warnings() as caught:
        metric = CheckedCocoMetric(ann_file=coco_files['dirty_clean'], metric=['bbox', 'segm'])
    assert caught.messages == [] and not metric.degenerate_report
    assert (_evaluate(metric, coco_files['original'])
            == _evaluate(CocoMetric(ann_file=coco_files['dirty_clean'], metric=['bbox', 'segm']),
                         coco_files['original']))


# ---- the configs --------------------------------------------------------------------------------
MMDET_CONFIGS = sorted(p for p in (ROOT / 'configs' / 'mmdet').glob('*.py')) + [
    ROOT / 'configs' / 'quickstart' / 'cascade_dat_s_pp_synthetic.py']


def _assert_checked(cfg):
    assert 'dat_mm.datasets.coco_checks' in cfg.custom_imports['imports']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.type == 'CheckedCocoDataset', loader
    for evaluator in ('val_evaluator', 'test_evaluator'):
        assert cfg[evaluator].type == 'CheckedCocoMetric', evaluator


@pytest.mark.parametrize('path', MMDET_CONFIGS, ids=lambda p: p.name)
def test_every_coco_dataset_and_evaluator_is_checked(path):
    _assert_checked(Config.fromfile(str(path)))


@pytest.mark.parametrize('kind, config', [
    ('cascade', 'configs/mmdet/cascade_dat_t_pp_1x.py'),
    ('mask_rcnn', 'configs/mmdet/mask_rcnn_dat_t_pp_1x.py'),
    ('retinanet', 'configs/mmdet/retinanet_dat_t_pp_1x.py')])
def test_small_test_configs_are_checked(tmp_path, kind, config):
    cfg = det_config(config, tmp_path, kind)
    _assert_checked(cfg)
    assert cfg.val_evaluator.ann_file == f'{tmp_path}/annotations/instances_val.json'


def test_registered_in_mmdet_registries():
    from mmdet.registry import DATASETS, METRICS
    assert DATASETS.get('CheckedCocoDataset') is CheckedCocoDataset
    assert METRICS.get('CheckedCocoMetric') is CheckedCocoMetric
