# DAT-B++ fine-tuned on ImageNet-1k at 384 (85.9 top-1, 93.7M params, 49.7G FLOPs).
# Reproduces the authors' configs/dat_base_384.yaml (LeapLabTHU/DAT, with their config.py
# defaults and train.sh's --amp). Deviations from it: none in the settings.
# The rpe tables stay those of the 224 model (they are sampled in normalised coordinates).
_base_ = [
    './_base_/models/dat_classifier.py', './_base_/datasets/imagenet_dat_384.py',
    './_base_/schedules/dat_in1k_384_30e.py'
]
# Published weights: dat_pp_base_in1k_384.pth; convert with
#   python tools/model_converters/dat_official_to_mm.py dat_pp_base_in1k_384.pth \
#       checkpoints/dat_b_pp_in1k_384.pth --config configs/mmpretrain/dat_b_pp_in1k_384.py
published_checkpoint = 'checkpoints/dat_b_pp_in1k_384.pth'
# The fine-tune starts from the whole 224 classifier (converted dat_pp_base_in1k_224.pth);
# training fails naming this file if it is absent.
pretrained_224 = 'checkpoints/dat_b_pp_in1k.pth'

model = dict(
    backbone=dict(arch='base++', drop_path_rate=0.6),
    head=dict(in_channels=1024),
    init_cfg=dict(type='Pretrained', checkpoint=pretrained_224))
# 24 per GPU x 8 GPUs, lr 2e-5 * 192 / 512 (in the schedule base).
train_dataloader = dict(batch_size=24)
auto_scale_lr = dict(base_batch_size=192)
