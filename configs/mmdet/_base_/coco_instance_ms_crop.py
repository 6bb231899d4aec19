# COCO instance segmentation with the DETR / Sparse R-CNN multi-scale + crop augmentation the
# authors trained every DAT++ detector with (1x and 3x alike): shorter side 480..800 (step 32),
# or 400/500/600 then a random 384..600 crop then 480..800. Test: 1333x800, single-scale
# as published. No test-time augmentation: mmdet 3.3's DetTTAModel merges boxes only (it
# asserts that the predictions carry no masks), so these configs define no tta_model and
# tools/test.py --tta stops with an error for the instance-segmentation models.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

ms_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
             (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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
