# Quickstart (segmentation): the published UperNet + DAT-T++ 160k recipe
# (configs/mmseg/upernet_dat_t_pp.py), shrunk to a few minutes of CPU training on the
# generated ADE20K-format scenes:
#   python tools/misc/generate_synthetic_data.py ade20k
#   python tools/train.py configs/quickstart/upernet_dat_t_pp_synthetic.py
# Only data, crop size and schedule change; the model (150 ADE20K classes), losses and
# optimiser are the recipe's (fp32 on CPU). No pretrained weights (random init).
_base_ = '../mmseg/upernet_dat_t_pp.py'

data_root = 'data/generated/ade20k_shapes'
crop_size = (128, 128)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(drop_path_rate=0.0, with_cp=False, init_cfg=None))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
img_scale = (256, 128)  # test scale
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# --tta: the recipe's multi-scale + flip test (ratios 0.5-1.75) around this test scale
tta_pipeline = _base_.tta_pipeline
tta_pipeline[1].transforms[0] = [
    dict(type='Resize', scale=(int(img_scale[0] * r), int(img_scale[1] * r)), keep_ratio=True)
    for r in _base_.img_ratios]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# -- schedule: a few hundred iterations, short warm-up, evaluate at the end ----------------
max_iters = 120
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=max_iters, by_epoch=False),
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=20)
randomness = dict(seed=0)  # the same initialisation and data order on every run
