# DAT-B++ on ImageNet-1k at 224 (84.9 top-1, 93.7M params, 16.6G FLOPs).
# Reproduces the authors' configs/dat_base.yaml (LeapLabTHU/DAT, with their config.py
# defaults and train.sh's --amp).
# Deviations from it: none in the settings; the schedule base says how the warm-up is
# expressed (the ramp is scaled by the cosine: up to 1% lower lr near its end).
_base_ = [
    './_base_/models/dat_classifier.py', './_base_/datasets/imagenet_dat_224.py',
    './_base_/schedules/dat_in1k_300e.py'
]
# Published weights: dat_pp_base_in1k_224.pth; convert with
#   python tools/model_converters/dat_official_to_mm.py dat_pp_base_in1k_224.pth \
#       checkpoints/dat_b_pp_in1k.pth --config configs/mmpretrain/dat_b_pp_in1k.py
published_checkpoint = 'checkpoints/dat_b_pp_in1k.pth'

model = dict(backbone=dict(arch='base++', drop_path_rate=0.7), head=dict(in_channels=1024))
# The authors' yaml halves the per-GPU batch for B++: 64 per GPU x 8 GPUs,
# lr 5e-4 * 512 / 512.
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 512 / 512))
auto_scale_lr = dict(base_batch_size=512)
