# DAT-B (v1, CVPR 2022) on ImageNet-1k at 224 (84.0 top-1, 87.9M params, 15.8G FLOPs).
# Reproduces the authors' configs/dat_base.yaml at tag CVPR2022 (LeapLabTHU/DAT, with that
# tag's config.py defaults and train.sh's --amp).
# Deviations from it: none in the settings; the schedule base says how the warm-up is
# expressed (the ramp is scaled by the cosine: up to 7% (50-epoch warm-up) lower lr near its end).
_base_ = [
    './_base_/models/dat_classifier.py', './_base_/datasets/imagenet_dat_224.py',
    './_base_/schedules/dat_in1k_300e.py'
]
# Published weights (README at tag CVPR2022): dat_base_in1k_224.pth; convert with
#   python tools/model_converters/dat_official_to_mm.py dat_base_in1k_224.pth \
#       checkpoints/dat_b_in1k.pth --config configs/mmpretrain/dat_b_in1k.py
published_checkpoint = 'checkpoints/dat_b_in1k.pth'

model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
# The v1 base yaml departs from the defaults: base lr 4e-4, 50 warm-up epochs, grad clip 1.0.
# 128 per GPU x 8 GPUs, lr 4e-4 * 1024 / 512. WARMUP_LR 5e-7 and MIN_LR 5e-6 stay the defaults
# and are scaled by the same rule as the lr, so as fractions of the lr they are 5e-7 / 4e-4
# (1.25e-3) and 5e-6 / 4e-4 (0.0125).
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=4e-4 * 1024 / 512), clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-7 / 4e-4, by_epoch=True, begin=0, end=50,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=5e-6 / 4e-4, by_epoch=True, begin=0, end=300,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(base_batch_size=1024)
