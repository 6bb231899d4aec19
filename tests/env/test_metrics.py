"""mmdet's CocoMetric and mmseg's IoUMetric give the known answers with the pinned numpy
(and pycocotools) on tiny generated cases."""
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmdet.evaluation import CocoMetric
from mmseg.evaluation import IoUMetric

H = W = 32
# one object per image: (x1, y1, x2, y2), category index into CLASSES
OBJECTS = [(2, 3, 12, 15, 0), (5, 5, 25, 20, 1), (0, 10, 8, 30, 0), (14, 2, 30, 12, 1)]
CLASSES = ('cat', 'dog')


def _mask(x1, y1, x2, y2):
    m = np.zeros((H, W), dtype=np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


@pytest.fixture(scope='module')
def coco_gt(tmp_path_factory):
    images, annotations = [], []
    for i, (x1, y1, x2, y2, c) in enumerate(OBJECTS):
        images.append(dict(id=i, file_name=f'{i}.jpg', height=H, width=W))
        rle = mask_utils.encode(np.asfortranarray(_mask(x1, y1, x2, y2)))
        rle['counts'] = rle['counts'].decode()
        annotations.append(dict(id=i + 1, image_id=i, category_id=c + 1, iscrowd=0,
                                bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                                segmentation=rle))
    gt = dict(images=images, annotations=annotations,
              categories=[dict(id=k + 1, name=n) for k, n in enumerate(CLASSES)])
    path = tmp_path_factory.mktemp('coco') / 'gt.json'
    path.write_text(json.dumps(gt))
    return str(path)


def _evaluate(ann_file, predictions):
    """predictions[i] = list of (x1, y1, x2, y2, label, score) for image i."""
    metric = CocoMetric(ann_file=ann_file, metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=CLASSES)
    samples = []
    for img_id, preds in enumerate(predictions):
        boxes = torch.tensor([p[:4] for p in preds], dtype=torch.float32).reshape(-1, 4)
        masks = torch.from_numpy(np.stack([_mask(*map(int, p[:4])) for p in preds]).astype(bool))
        samples.append(dict(
            img_id=img_id, ori_shape=(H, W),
            pred_instances=dict(bboxes=boxes, masks=masks,
                                labels=torch.tensor([p[4] for p in preds]),
                                scores=torch.tensor([p[5] for p in preds]))))
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def test_coco_metric_perfect(coco_gt):
    preds = [[(x1, y1, x2, y2, c, 0.9)] for x1, y1, x2, y2, c in OBJECTS]
    res = _evaluate(coco_gt, preds)
    for kind in ('bbox', 'segm'):
        assert res[f'coco/{kind}_mAP'] == 1.0
        assert res[f'coco/{kind}_mAP_50'] == 1.0
        assert res[f'coco/{kind}_mAP_75'] == 1.0


def test_coco_metric_half_wrong(coco_gt):
    # Per class: one object predicted exactly (higher score), one predicted far away from its
    # object (lower score). Ranked TP, FP: recall 0.5 at precision 1, recall 1 never reached.
    # COCO AP = mean interpolated precision over 101 recall points = 51 / 101 = 0.50495 at
    # every IoU threshold (IoUs are exactly 1 or 0), for both classes.
    far = {0: (20, 20, 30, 30), 1: (0, 24, 8, 32)}
    preds = []
    seen = set()
    for x1, y1, x2, y2, c in OBJECTS:
        if c not in seen:
            seen.add(c)
            preds.append([(x1, y1, x2, y2, c, 0.9)])
        else:
            preds.append([(*far[c], c, 0.5)])
    res = _evaluate(coco_gt, preds)
    for kind in ('bbox', 'segm'):
        assert res[f'coco/{kind}_mAP'] == round(51 / 101, 3) == 0.505
        assert res[f'coco/{kind}_mAP_50'] == 0.505


def test_coco_metric_wrong_ranked_first(coco_gt):
    # Same boxes, but the wrong ones score higher: FP, TP per class -> precision 1/2 at
    # recall 0.5; interpolated precision 0.5 on 51 of 101 recall points = 0.2525.
    far = {0: (20, 20, 30, 30), 1: (0, 24, 8, 32)}
    preds, seen = [], set()
    for x1, y1, x2, y2, c in OBJECTS:
        if c not in seen:
            seen.add(c)
            preds.append([(x1, y1, x2, y2, c, 0.5)])
        else:
            preds.append([(*far[c], c, 0.9)])
    res = _evaluate(coco_gt, preds)
    for kind in ('bbox', 'segm'):
        assert res[f'coco/{kind}_mAP'] == round(0.5 * 51 / 101, 3) == 0.252


def _seg_sample(pred, gt):
    return dict(pred_sem_seg=dict(data=torch.tensor(pred)[None]),
                gt_sem_seg=dict(data=torch.tensor(gt)[None]))


GT = [[0, 0, 1, 1],
      [0, 0, 1, 1],
      [2, 2, 2, 2],
      [2, 2, 255, 255]]
PRED = [[0, 1, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 1, 2],
        [0, 2, 0, 1]]


def test_iou_metric_hand_computed():
    # 14 valid pixels (2 ignored).  class 0: gt 4, pred 4, inter 3 -> IoU 3/5, acc 3/4
    # class 1: gt 4, pred 6, inter 4 -> IoU 4/6, acc 1;  class 2: gt 6, pred 4, inter 4 ->
    # IoU 4/6, acc 4/6.  aAcc = 11/14.
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    metric.process({}, [_seg_sample(PRED, GT)])
    res = metric.evaluate(size=1)
    assert res['mIoU'] == round(100 * (3 / 5 + 4 / 6 + 4 / 6) / 3, 2) == 64.44
    assert res['aAcc'] == round(100 * 11 / 14, 2) == 78.57
    assert res['mAcc'] == round(100 * (3 / 4 + 1 + 4 / 6) / 3, 2) == 80.56


def test_iou_metric_accumulates_over_images():
    # A perfect second image adds its pixels to every class: class 0 +4, class 1 +4,
    # class 2 +6 (its gt == pred == GT with the ignored pixels set to class 2).
    gt2 = [[2 if v == 255 else v for v in row] for row in GT]
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    metric.process({}, [_seg_sample(PRED, GT), _seg_sample(gt2, gt2)])
    res = metric.evaluate(size=2)
    # class 0: inter 3+4, union 5+4; class 1: 4+4 / 6+4; class 2: 4+8 / 6+8
    expected = (7 / 9 + 8 / 10 + 12 / 14) / 3
    assert res['mIoU'] == round(100 * expected, 2)
    assert res['aAcc'] == round(100 * (11 + 16) / (14 + 16), 2)
