# COCO detection (boxes only) with the DETR / Sparse R-CNN multi-scale + crop augmentation the
# authors trained every DAT++ detector with (1x and 3x alike): shorter side 480..800 (step 32),
# or 400/500/600 then a random 384..600 crop then 480..800. Test: 1333x800.
# The published box AP is single-scale. tools/test.py --tta adds mmdet 3.x's own RetinaNet
# test-time augmentation (mmdet's configs/retinanet/retinanet_tta.py): 1333x800, 666x400
# and 2000x1200 (keep ratio) x flip, the boxes of the 6 views merged by NMS (DetTTAModel);
# it has no published counterpart.
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

ms_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
             (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
# Checked* (dat_mm/datasets/coco_checks.py, imported by the model base's custom_imports):
# mmdet's CocoDataset / CocoMetric that drop degenerate polygons on load, consistently.
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset', pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_evaluator = dict(type='CheckedCocoMetric')
test_evaluator = dict(type='CheckedCocoMetric')

tta_model = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
tta_scales = [(1333, 800), (666, 400), (2000, 1200)]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=s, keep_ratio=True) for s in tta_scales],
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
            [dict(type='LoadAnnotations', with_bbox=True)],
            [dict(type='PackDetInputs',
                  meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                             'flip', 'flip_direction'))],
        ]),
]
