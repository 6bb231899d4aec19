# Cascade Mask R-CNN + DAT-S++ FPN, 3x (36 epochs), multi-scale + crop augmentation.
# Reproduces the authors' configs/dat/cmrcn_small_3x_4n_dp05_lr4.py (LeapLabTHU/DAT-Detection):
# 54.2 box AP / 46.9 mask AP on COCO val2017.
# Recipe: AdamW lr 4e-4 at a total batch of 64 (2 images x 32 GPUs), drop_path 0.5,
# fp32, activation checkpointing.
# Deviations from it: none (its plain OptimizerHook: fp32, OptimWrapper); its runner,
# auto_resume and the mmdet 2 pipeline names map to their MMEngine / mmdet 3
# equivalents (docs/recipes.md).
# Test: single-scale, as published; no --tta (mmdet 3.3's DetTTAModel cannot merge masks:
# ./_base_/coco_instance_ms_crop.py).
_base_ = ['./_base_/cascade_mask_rcnn_dat_fpn.py', './_base_/coco_instance_ms_crop.py',
          './_base_/schedule_3x.py']

# ImageNet-1k DAT-S++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_small_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_s_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='small++', drop_path_rate=0.5,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
