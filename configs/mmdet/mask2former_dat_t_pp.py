# Mask2Former + DAT-T++, LSJ 50 epochs (368750 iterations), COCO instance segmentation.
# No published DAT++ result: the authors list "DINO / Mask2Former for system level DET/SEG" as
# an open item (LeapLabTHU/DAT README, TODO) and released no Mask2Former model, so this config
# has no weights and no expected number.
# Reference: the same mmdet recipe with Swin-T (ImageNet-1k, 224),
# mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco: 47.7 box AP / 44.7 mask AP on COCO val2017
# (mmdet 3.3 configs/mask2former/metafile.yml).
# Recipe (inherited, ./_base_/mask2former_dat.py): mmdet's mask2former_r50_8xb2-lsj-50e_coco.py:
# AdamW lr 1e-4, weight decay 0.05, grad-norm clip 0.01, 2 images x 8 GPUs, lr x0.1 at
# iterations 327778 and 355092, large-scale jitter (resize 0.1-2.0 of 1024x1024, 1024x1024
# crop, flip), test at 1333x800; fp32.
# Backbone: all four stages into the pixel decoder; lr x0.1 and no weight decay on its LayerNorms
# and position tables (mmdet's Swin rule, DAT++'s names); activation checkpointing; drop_path
# 0.3, the value of mmdet's Swin-T recipe and of the authors' DAT-T++ Mask R-CNN 3x (36 epochs;
# the longest published schedule for COCO instance segmentation).
_base_ = './_base_/mask2former_dat.py'

# ImageNet-1k DAT-T++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_tiny_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_t_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='tiny++', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]))
