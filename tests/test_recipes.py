"""End to end on generated data, from the real configs with a small override:
tools/train.py (a real MMEngine Runner) trains a few iterations and saves a checkpoint,
tools/test.py evaluates it with the config's metric (CocoMetric box + mask AP, IoUMetric,
Accuracy), and tools/train.py --resume continues from the saved iteration.
And a short run on the generated shapes learns: the loss falls and box AP rises clearly
above the untrained model's.
"""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from dat_mm.checkpoint import safe_load
from dat_mm.datasets import (generate_ade20k_shapes, generate_coco_shapes,
                             generate_imagenet_shapes)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STARTS = []


@HOOKS.register_module(force=True)
class RecordTrainStartHook(Hook):
    """Records (epoch, iter) when training starts, i.e. after a resume has loaded."""

    def before_train(self, runner):
        TRAIN_STARTS.append((runner.epoch, runner.iter))


def _train_tool():
    spec = importlib.util.spec_from_file_location('dat_mm_train_tool',
                                                  ROOT / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    generate_coco_shapes(str(root / 'coco'), num_train=4, num_val=2, image_size=(96, 96))
    generate_ade20k_shapes(str(root / 'ade'), num_train=4, num_val=2, image_size=(96, 96))
    generate_imagenet_shapes(str(root / 'imagenet'), num_train_per_class=1,
                             num_val_per_class=1, image_size=48)
    return root


# ---- small overrides (data, size, length; the model and optimiser stay the recipe's) ---------
def det_override(config, data_root, kind, size=96):
    masks = kind != 'retinanet'
    if kind == 'cascade':
        heads = '''
_heads = _base_.model.roi_head.bbox_head
for _h in _heads:
    _h.num_classes = 3
_rcnn = _base_.model.train_cfg.rcnn
for _stage in _rcnn:
    _stage.sampler.num = 64   # RoIs per image and stage (512 in the recipe)
model = dict(roi_head=dict(bbox_head=_heads, mask_head=dict(num_classes=3)),
             train_cfg=dict(rcnn=_rcnn))
del _heads, _h, _rcnn, _stage'''
    elif kind == 'mask_rcnn':
        heads = 'model = dict(roi_head=dict(bbox_head=dict(num_classes=3), ' \
                'mask_head=dict(num_classes=3)))'
    else:
        # score_thr 0: an untrained RetinaNet scores ~0.01 (focal-loss prior) and would
        # otherwise have no detections for CocoMetric to evaluate
        heads = 'model = dict(bbox_head=dict(num_classes=3), test_cfg=dict(score_thr=0.0))'
    return f'''
_base_ = '{ROOT / config}'
{heads}
model.update(backbone=dict(init_cfg=None))
data_root = '{data_root}/'
metainfo = dict(classes=('circle', 'square', 'triangle'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask={masks}),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask={masks}),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
'''


def seg_override(config, data_root, size=96):
    return f'''
_base_ = '{ROOT / config}'
data_root = '{data_root}'
model = dict(data_preprocessor=dict(size=({size}, {size})), backbone=dict(init_cfg=None))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=({2 * size}, {size}), ratio_range=(0.75, 1.25),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=({size}, {size}), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({2 * size}, {size}), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
'''


def cls_override(config, data_root, size=48):
    return f'''
_base_ = '{ROOT / config}'
data_root = '{data_root}'
classes = ['circle', 'square', 'star', 'triangle']
data_preprocessor = dict(num_classes=4)
model = dict(backbone=dict(init_cfg=None), head=dict(num_classes=4))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale={size}),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({size}, {size})),
    dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 ann_file='meta/train.txt', data_prefix='train', classes=classes,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 ann_file='meta/val.txt', data_prefix='val', classes=classes,
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
'''


# name: (config, dataset, override kind, checkpoint after the first run, metric keys)
CASES = {
    'mask_rcnn': ('configs/mmdet/mask_rcnn_dat_t_pp_1x.py', 'coco', 'mask_rcnn',
                  'epoch_1.pth', ('coco/bbox_mAP', 'coco/segm_mAP')),
    'cascade_mask_rcnn': ('configs/mmdet/cascade_dat_t_pp_1x.py', 'coco', 'cascade',
                          'epoch_1.pth', ('coco/bbox_mAP', 'coco/segm_mAP')),
    'retinanet': ('configs/mmdet/retinanet_dat_t_pp_1x.py', 'coco', 'retinanet',
                  'epoch_1.pth', ('coco/bbox_mAP', )),
    'upernet': ('configs/mmseg/upernet_dat_t_pp.py', 'ade', 'seg', 'iter_2.pth', ('mIoU', )),
    'semantic_fpn': ('configs/mmseg/fpn_dat_t_pp.py', 'ade', 'seg', 'iter_2.pth', ('mIoU', )),
    'classifier': ('configs/mmpretrain/dat_t_pp_in1k.py', 'imagenet', 'cls', 'epoch_1.pth',
                   ('accuracy/top1', )),
}


def _metrics(log):
    """``key: value`` pairs mmengine logs for the test epoch (progress lines included)."""
    metrics = {}
    for line in log.splitlines():
        if re.search(r'(Epoch|Iter)\(test\)', line):
            metrics.update((k, float(v)) for k, v in re.findall(r'([\w/]+): (-?[\d.]+)', line))
    assert metrics, log[-3000:]
    return metrics


@pytest.mark.parametrize('name', sorted(CASES))
def test_train_test_resume(name, data, tmp_path):
    config, dataset, kind, ckpt_name, keys = CASES[name]
    if not (ROOT / config).exists():
        pytest.skip(f'{config} does not exist yet')
    data_root = data / dataset
    if kind == 'seg':
        text, by_epoch = seg_override(config, data_root), False
    elif kind == 'cls':
        text, by_epoch = cls_override(config, data_root), True
    else:
        text, by_epoch = det_override(config, data_root, kind), True
    override = tmp_path / f'{name}_small.py'
    override.write_text(text)
    work = tmp_path / 'work'
    tool = _train_tool()

    # 1. train a few iterations with the real Runner, save a checkpoint
    runner = tool.main([str(override), '--work-dir', str(work)])
    assert runner.iter == 2
    ckpt = work / ckpt_name
    assert ckpt.is_file()
    saved = safe_load(str(ckpt), map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert any(k.startswith('backbone.stages.') for k in saved['state_dict'])

    # 2. tools/test.py evaluates the checkpoint with the config's metric
    out = tmp_path / ('preds' if kind == 'seg' else 'preds.pkl')
    show = tmp_path / 'show'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'test.py'), str(override), str(ckpt),
         '--work-dir', str(tmp_path / 'test'), '--out', str(out), '--show-dir', str(show)],
        capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = _metrics(proc.stdout + proc.stderr)
    for key in keys:
        assert key in metrics, (key, metrics)
        assert -1.0 <= metrics[key] <= 100.0
    assert out.exists()
    if kind == 'seg':
        assert len(list(out.glob('*.png'))) == 2
    # --show-dir: the scope's visualization hook drew every test image
    drawn = [p for p in show.rglob('*') if p.suffix in ('.png', '.jpg')]
    n_test = 4 if kind == 'cls' else 2          # images in the generated val split
    assert len(drawn) == n_test, sorted(str(p) for p in show.rglob('*'))

    # 3. --resume continues from the saved iteration
    resume_cfg = tmp_path / f'{name}_resume.py'
    length = 'max_epochs=2' if by_epoch else 'max_iters=4'
    resume_cfg.write_text(f"_base_ = '{override}'\n"
                          f"custom_hooks = [dict(type='RecordTrainStartHook')]\n"
                          f"train_cfg = dict({length})\n")
    TRAIN_STARTS.clear()
    runner = tool.main([str(resume_cfg), '--work-dir', str(work), '--resume', str(ckpt)])
    assert TRAIN_STARTS == [(1, 2) if by_epoch else (0, 2)]
    assert runner.iter == 4
    final = work / ('epoch_2.pth' if by_epoch else 'iter_4.pth')
    assert safe_load(str(final), map_location='cpu')['meta']['iter'] == 4


# ---- a short run learns ------------------------------------------------------------------
LEARN_ITERS = 48   # 2 epochs of 48 images, batch 2


@pytest.fixture(scope='module')
def learn_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('learn')
    generate_coco_shapes(str(root / 'coco'), num_train=48, num_val=8, image_size=(128, 128),
                         seed=0)
    return root / 'coco'


def test_short_run_learns_on_generated_shapes(learn_data, tmp_path):
    """The quickstart recipe (Cascade Mask R-CNN) with DAT-T++ and 2 of its 3 epochs, for CI
    time: the loss falls and box AP rises clearly above the untrained model's."""
    override = tmp_path / 'learn.py'
    override.write_text(f'''
_base_ = '{ROOT / 'configs/quickstart/cascade_dat_s_pp_synthetic.py'}'
data_root = '{learn_data}/'
model = dict(backbone=dict(arch='tiny++'), neck=dict(in_channels=[64, 128, 256, 512]),
             test_cfg=dict(rcnn=dict(max_per_img=20)))   # <= 3 shapes per image
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
randomness = dict(seed=0)
''')
    tool = _train_tool()
    work = tmp_path / 'work'
    # untrained: the same initialisation, evaluated before any update
    runner = tool.main([str(override), '--work-dir', str(work / 'untrained'),
                        '--cfg-options', 'train_cfg.max_epochs=0'])
    untrained = runner.test()
    runner = tool.main([str(override), '--work-dir', str(work / 'trained'), '--no-validate',
                        '--cfg-options', 'train_cfg.max_epochs=2'])
    assert runner.iter == LEARN_ITERS
    trained = runner.test()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    first, last = losses[:8].mean(), losses[-8:].mean()
    record = dict(untrained_bbox_mAP=untrained['coco/bbox_mAP'],
                  trained_bbox_mAP=trained['coco/bbox_mAP'],
                  untrained_segm_mAP=untrained['coco/segm_mAP'],
                  trained_segm_mAP=trained['coco/segm_mAP'],
                  loss_first8=float(first), loss_last8=float(last))
    (tmp_path / 'learning.json').write_text(json.dumps(record, indent=1))
    print('learning run:', record)
    assert last < 0.75 * first, record
    assert trained['coco/bbox_mAP'] >= untrained['coco/bbox_mAP'] + 0.05, record
