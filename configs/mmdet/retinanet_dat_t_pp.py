# RetinaNet + DAT-T++ FPN, 3x (36 epochs), multi-scale + crop augmentation.
# Reproduces the authors' configs/dat/rtn_tiny_3x_4n_dp02_lr2.py (LeapLabTHU/DAT-Detection):
# 49.2 box AP on COCO val2017.
# Recipe: AdamW lr 2e-4 at a total batch of 64 (2 images x 32 GPUs), drop_path 0.2,
# fp16 mixed precision, activation checkpointing.
# Deviations from it: none. Its Fp16OptimizerHook (dynamic loss scale) is MMEngine's
# AmpOptimWrapper; its runner, auto_resume and the mmdet 2 pipeline names map to their
# MMEngine / mmdet 3 equivalents (docs/recipes.md).
# Test: single-scale, as published; --tta adds mmdet's RetinaNet multi-scale + flip test,
# which has no published counterpart (./_base_/coco_detection_ms_crop.py).
_base_ = ['./_base_/retinanet_dat_fpn.py', './_base_/coco_detection_ms_crop.py',
          './_base_/schedule_3x.py']

# ImageNet-1k DAT-T++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_tiny_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_t_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='tiny++', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic', optimizer=dict(lr=2e-4))
