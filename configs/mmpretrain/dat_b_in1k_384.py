# DAT-B (v1, CVPR 2022) fine-tuned on ImageNet-1k at 384 (84.8 top-1, 88.2M params, 49.8G
# FLOPs). Reproduces the authors' configs/dat_base_384.yaml at tag CVPR2022 (LeapLabTHU/DAT,
# with that tag's config.py defaults and train.sh's --amp). Deviations from it: none in the
# settings. The 'base-384' preset has 12 x 12 windows and tables built for 384.
_base_ = [
    './_base_/models/dat_classifier.py', './_base_/datasets/imagenet_dat_384.py',
    './_base_/schedules/dat_in1k_384_30e.py'
]
# Published weights (README at tag CVPR2022): dat_base_in1k_384.pth; convert with
#   python tools/model_converters/dat_official_to_mm.py dat_base_in1k_384.pth \
#       checkpoints/dat_b_in1k_384.pth --config configs/mmpretrain/dat_b_in1k_384.py
published_checkpoint = 'checkpoints/dat_b_in1k_384.pth'
# The fine-tune starts from the whole 224 classifier, as the authors' did; make that file with
#   python tools/model_converters/dat_official_to_mm.py dat_base_in1k_224.pth \
#       checkpoints/dat_b_in1k.pth --config configs/mmpretrain/dat_b_in1k.py
# (the published dat_base_in1k_224.pth); training fails naming this file if it is absent.
# Its position tables (7 x 7 windows, rpe tables for 224) are resized bicubically to the 12 x 12
# windows and 384 tables on load, as the authors do (dat_mm/ops/position_tables.py).
pretrained_224 = 'checkpoints/dat_b_in1k.pth'

model = dict(
    backbone=dict(arch='base-384', drop_path_rate=0.5),
    head=dict(in_channels=1024),
    init_cfg=dict(type='Pretrained', checkpoint=pretrained_224))

# v1 evaluates with the default crop: a 438 x 438 square resize (int(256 / 224 * 384)), then a
# centre crop of 384.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(438, 438), backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=384),
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
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# v1 384 yaml: lr 2e-6 and MIN_LR 1e-7 at 24 per GPU x 8 GPUs, both scaled by 192 / 512;
# no warm-up, weight decay 1e-8.
train_dataloader = dict(batch_size=24)
optim_wrapper = dict(optimizer=dict(lr=2e-6 * 192 / 512, weight_decay=1e-8))
param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-7 / 2e-6, by_epoch=True, begin=0, end=30,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=192)
