# UperNet + DAT-S++, ADE20K 512x512, 160k iterations.
# Reproduces the authors' configs/dat/upn_small_160k_dp05_lr6.py (LeapLabTHU/DAT-Segmentation):
# 50.5 mIoU single-scale / 51.2 multi-scale on ADE20K val.
# Recipe: AdamW lr 6e-5 wd 0.01, 1500-iter warm-up on poly(1.0), 2 images x 8 GPUs, drop_path 0.5,
# activation checkpointing, fp16 (its Fp16OptimizerHook with dynamic loss scale = AmpOptimWrapper).
# Deviations from it: none in training. Test: tools/test.py CONFIG CHECKPOINT gives the
# single-scale mIoU; with --tta, the multi-scale one: their --aug-test, 6 scales (0.5-1.75
# of 2048x512) + flip, softmax averaged (./_base_/ade20k_aug_test.py).
_base_ = ['./_base_/upernet_dat.py', './_base_/ade20k_aug_test.py',
          './_base_/schedule_upernet_160k.py']

# ImageNet-1k DAT-S++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_small_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_s_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='small++', drop_path_rate=0.5,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
