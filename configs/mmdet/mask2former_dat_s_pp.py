# Mask2Former + DAT-S++, LSJ 50 epochs (368750 iterations), COCO instance segmentation.
# No published DAT++ result: the authors list "DINO / Mask2Former for system level DET/SEG" as
# an open item (LeapLabTHU/DAT README, TODO) and released no Mask2Former model, so this config
# has no weights and no expected number.
# Reference: the same mmdet recipe with Swin-S (ImageNet-1k, 224),
# mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco: 49.3 box AP / 46.1 mask AP on COCO val2017
# (mmdet 3.3 configs/mask2former/metafile.yml).
# Recipe (inherited, ./_base_/mask2former_dat.py): mmdet's mask2former_r50_8xb2-lsj-50e_coco.py:
# AdamW lr 1e-4, weight decay 0.05, grad-norm clip 0.01, 2 images x 8 GPUs, lr x0.1 at
# iterations 327778 and 355092, large-scale jitter (resize 0.1-2.0 of 1024x1024, 1024x1024
# crop, flip), test at 1333x800; fp32.
# Backbone: all four stages into the pixel decoder; lr x0.1 and no weight decay on its LayerNorms
# and position tables (mmdet's Swin rule, DAT++'s names); activation checkpointing; drop_path
# 0.5, the authors' DAT-S++ value for 36 epochs (Mask R-CNN, Cascade and RetinaNet 3x: the
# longest published schedule). mmdet's Swin-S recipe keeps Swin-T's 0.3; DAT++ raised the rate
# from T++ to S++ in every published 3x recipe.
_base_ = './_base_/mask2former_dat.py'

# ImageNet-1k DAT-S++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_small_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_s_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='small++', drop_path_rate=0.5,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
