# Cascade Mask R-CNN + DAT-T++ FPN, 1x (12 epochs), multi-scale + crop augmentation.
# Reproduces the authors' configs/dat/cmrcn_tiny_1x_4n_dp00_lr4.py (LeapLabTHU/DAT-Detection):
# 52.2 box AP / 45.0 mask AP on COCO val2017.
# Recipe: AdamW lr 4e-4 at a total batch of 64 (2 images x 32 GPUs), drop_path 0.0,
# fp16 mixed precision, activation checkpointing.
# Deviations from it: none. Its Fp16OptimizerHook (dynamic loss scale) is MMEngine's
# AmpOptimWrapper; its runner, auto_resume and the mmdet 2 pipeline names map to their
# MMEngine / mmdet 3 equivalents (docs/recipes.md).
# Test: single-scale, as published; no --tta (mmdet 3.3's DetTTAModel cannot merge masks:
# ./_base_/coco_instance_ms_crop.py).
_base_ = ['./_base_/cascade_mask_rcnn_dat_fpn.py', './_base_/coco_instance_ms_crop.py',
          './_base_/schedule_1x.py']

# ImageNet-1k DAT-T++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_tiny_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_t_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='tiny++', drop_path_rate=0.0,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
