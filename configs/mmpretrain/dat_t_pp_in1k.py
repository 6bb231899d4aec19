# DAT-T++ on ImageNet-1k at 224 (83.9 top-1, 24.0M params, 4.3G FLOPs).
# Reproduces the authors' configs/dat_tiny.yaml (LeapLabTHU/DAT, with their config.py
# defaults and train.sh's --amp).
# Deviations from it: none in the settings; the schedule base says how the warm-up is
# expressed (the ramp is scaled by the cosine: up to 1% lower lr near its end).
_base_ = [
    './_base_/models/dat_classifier.py', './_base_/datasets/imagenet_dat_224.py',
    './_base_/schedules/dat_in1k_300e.py'
]
# Published weights (LeapLabTHU/DAT README): dat_pp_tiny_in1k_224.pth. Convert them with
#   python tools/model_converters/dat_official_to_mm.py dat_pp_tiny_in1k_224.pth \
#       checkpoints/dat_t_pp_in1k.pth --config configs/mmpretrain/dat_t_pp_in1k.py
# and evaluate with mmpretrain's tools/test.py CONFIG checkpoints/dat_t_pp_in1k.pth.
published_checkpoint = 'checkpoints/dat_t_pp_in1k.pth'

model = dict(backbone=dict(arch='tiny++', drop_path_rate=0.2), head=dict(in_channels=512))
# 128 per GPU x 8 GPUs, lr by the authors' rule 5e-4 * 1024 / 512.
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 1024 / 512))
auto_scale_lr = dict(base_batch_size=1024)
