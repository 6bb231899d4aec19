# ImageNet-1k at 224 as the authors train and evaluate (timm create_transform):
# RandomResizedCrop (bicubic), flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25
# (mode 'pixel' = mmpretrain 'rand') -- all in mmpretrain's Swin dataset base.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

# Evaluation: the authors resize to a 256 x 256 *square* (bicubic, PIL), then centre-crop 224
# (their data/build.py); this differs from mmpretrain's short-edge resize.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 256), backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
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

# 128 per GPU, as in the authors' yaml; their training loader drops the last incomplete batch
# (data/build.py: drop_last=True), so every iteration has the full batch.
train_dataloader = dict(batch_size=128, drop_last=True)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
