# DAT-T (v1, CVPR 2022) on ImageNet-1k at 224 (82.0 top-1, 28.3M params, 4.6G FLOPs).
# Reproduces the authors' configs/dat_tiny.yaml at tag CVPR2022 (LeapLabTHU/DAT, with that
# tag's config.py defaults and train.sh's --amp).
# Deviations from it: none in the settings; the schedule base says how the warm-up is
# expressed (the ramp is scaled by the cosine: up to 1% lower lr near its end).
_base_ = [
    './_base_/models/dat_classifier.py', './_base_/datasets/imagenet_dat_224.py',
    './_base_/schedules/dat_in1k_300e.py'
]
# Published weights (README at tag CVPR2022): dat_tiny_in1k_224.pth; convert with
#   python tools/model_converters/dat_official_to_mm.py dat_tiny_in1k_224.pth \
#       checkpoints/dat_t_in1k.pth --config configs/mmpretrain/dat_t_in1k.py
published_checkpoint = 'checkpoints/dat_t_in1k.pth'

model = dict(backbone=dict(arch='tiny', drop_path_rate=0.2), head=dict(in_channels=768))
# 128 per GPU x 8 GPUs, lr 5e-4 * 1024 / 512.
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 1024 / 512))
auto_scale_lr = dict(base_batch_size=1024)
