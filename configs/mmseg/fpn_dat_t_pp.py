# Semantic FPN + DAT-T++, ADE20K 512x512, the "80k" schedule (40k iterations at
# batch 32, as published).
# Reproduces the authors' configs/dat/fpn_tiny_80k_dp04_lr2.py (LeapLabTHU/DAT-Segmentation):
# 48.4 mIoU single-scale / 48.8 multi-scale on ADE20K val.
# Recipe: AdamW lr 2e-4 wd 1e-4, poly(0.9), 4 images x 8 GPUs, fp32, drop_path 0.4.
# Deviations from it: none in training. Test: tools/test.py CONFIG CHECKPOINT gives the
# single-scale mIoU; with --tta, the multi-scale one: their --aug-test, 6 scales (0.5-1.75
# of 2048x512) + flip, softmax averaged (./_base_/ade20k_aug_test.py).
_base_ = ['./_base_/fpn_dat.py', './_base_/ade20k_aug_test.py',
          './_base_/schedule_fpn_80k.py']

# ImageNet-1k DAT-T++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_tiny_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_t_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='tiny++', drop_path_rate=0.4,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
train_dataloader = dict(batch_size=4)
