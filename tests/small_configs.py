"""Small overrides of the real configs for tests on generated data: data, image size and
length change; the model, heads, losses and optimiser stay the recipe's."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# At most 3 shapes per generated image: fewer proposals and detections (the recipe's 1000 and
# 100) keep the bbox and mask heads' test-time cost small; what runs is the same.
SMALL_TEST_CFG = 'dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=10))'


def det_override(config, data_root, kind, size=96):
    masks = kind != 'retinanet'
    if kind == 'cascade':
        heads = f'''
_heads = _base_.model.roi_head.bbox_head
for _h in _heads:
    _h.num_classes = 3
_rcnn = _base_.model.train_cfg.rcnn
for _stage in _rcnn:
    _stage.sampler.num = 16   # RoIs per image and stage (512 in the recipe)
model = dict(roi_head=dict(bbox_head=_heads, mask_head=dict(num_classes=3)),
             train_cfg=dict(rcnn=_rcnn), test_cfg={SMALL_TEST_CFG})
del _heads, _h, _rcnn, _stage'''
    elif kind == 'mask_rcnn':
        heads = 'model = dict(roi_head=dict(bbox_head=dict(num_classes=3), ' \
                f'mask_head=dict(num_classes=3)), test_cfg={SMALL_TEST_CFG})'
    else:
        # score_thr 0: an untrained RetinaNet scores ~0.01 (focal-loss prior) and would
        # otherwise have no detections for CocoMetric to evaluate
        heads = 'model = dict(bbox_head=dict(num_classes=3), ' \
                'test_cfg=dict(score_thr=0.0, max_per_img=10))'
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
