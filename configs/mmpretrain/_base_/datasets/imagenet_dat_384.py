# ImageNet-1k at 384 for the fine-tunes: the same training augmentation as at 224
# (the authors' 384 yaml keeps every AUG default), at 384.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]

# DAT-B++ 384 evaluates without a crop (TEST.CROP False): a 384 x 384 bicubic resize.
# (The v1 DAT-B 384 config replaces this with its resize-438 + centre-crop-384.)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(384, 384), backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]

# tools/test.py --tta: the test pipeline, then the image as it is and flipped (mmpretrain's
# flip TTA, as its tools/test.py builds it for a config without a tta_pipeline).
tta_pipeline = [
    *test_pipeline[:-1],
    dict(type='TestTimeAug',
         transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                     [test_pipeline[-1]]]),
]

# 24 per GPU; the last incomplete batch is dropped, as in the authors' loader (drop_last=True).
train_dataloader = dict(batch_size=24, drop_last=True, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=24, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
