# mmseg's ADE20K data (512x512 crops; test at 2048x512, keep ratio) with the authors'
# multi-scale + flip test, the "MS" mIoU of every DAT-Segmentation result: their mmseg-0.x
# --aug-test, MultiScaleFlipAug(img_scale=(2048, 512), img_ratios=[0.5, ..., 1.75], flip=True).
# It resizes each image, keeping its aspect ratio, to the scale (int(2048 * r), int(512 * r))
# for each ratio r: scale factor min(long / max(h, w), short / min(h, w)), new size
# (int(w * s + 0.5), int(h * s + 0.5)) -- exactly what mmcv 2.x's Resize(scale, keep_ratio=True)
# computes (tests/test_tta.py checks the sizes against this rule). mmseg 1.x's own ADE20K
# tta_pipeline instead multiplies the raw image size by r (Resize(scale_factor=r)), which is not
# the published test. Each of the 12 views is predicted at the original image size, un-flipped,
# and the softmax probabilities are averaged: mmseg's SegTTAModel, the tta_model of
# mmseg::_base_/default_runtime.py that the model bases inherit.
# tools/test.py CONFIG CHECKPOINT --tta runs it; without --tta the test is single-scale.
_base_ = 'mmseg::_base_/datasets/ade20k.py'

img_scale = (2048, 512)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(img_scale[0] * r), int(img_scale[1] * r)),
                  keep_ratio=True) for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
