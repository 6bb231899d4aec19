# Quickstart: the published Cascade Mask R-CNN + DAT-S++ 3x recipe (configs/mmdet/
# cascade_dat_s_pp.py), shrunk to a few minutes of CPU training on the generated shapes set:
#   python tools/misc/generate_synthetic_data.py coco
#   python tools/train.py configs/quickstart/cascade_dat_s_pp_synthetic.py
# Only data, image size, schedule and per-image sampling sizes change; the model, heads,
# losses and optimiser are the recipe's. No pretrained weights (random init).
_base_ = '../mmdet/cascade_dat_s_pp.py'

data_root = 'data/generated/coco_shapes/'
metainfo = dict(classes=('circle', 'square', 'triangle'),
                palette=[(225, 50, 50), (40, 200, 70), (50, 80, 235)])
num_classes = 3
img_scale = (128, 128)

# -- model: 3 classes; fewer proposals/RoIs per image (small images, few objects) ---------
_bbox_heads = _base_.model.roi_head.bbox_head
for _head in _bbox_heads:
    _head.num_classes = num_classes
_rcnn_train = _base_.model.train_cfg.rcnn
for _stage in _rcnn_train:
    _stage.sampler.num = 32
model = dict(
    backbone=dict(drop_path_rate=0.0, with_cp=False, init_cfg=None),
    roi_head=dict(bbox_head=_bbox_heads, mask_head=dict(num_classes=num_classes)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=300, max_per_img=100), rcnn=_rcnn_train),
    # <= 3 shapes per image: 20 detections, not 100, go through the three mask heads
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))
del _bbox_heads, _head, _rcnn_train, _stage

# -- data ----------------------------------------------------------------------------------
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# -- schedule: a few epochs, short warm-up, evaluate at the end -----------------------------
max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[3],
         gamma=0.1),
]
optim_wrapper = dict(clip_grad=dict(max_norm=10.0, norm_type=2))
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=8),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=8)
randomness = dict(seed=0)  # the same initialisation and data order on every run
