# DINO-4scale + DAT-T++, 12 epochs, COCO detection. No published DAT++ result: the authors list
# "DINO / Mask2Former for system level DET/SEG" as an open item (LeapLabTHU/DAT README, TODO)
# and released no DINO model, so this config has no weights and no expected number.
# Reference: mmdet 3.3 has no Swin-T/S DINO. Its configs/dino/metafile.yml gives for this recipe
# with ResNet-50 (dino-4scale_r50_8xb2-12e_coco) 49.0 box AP, and for Swin-L (ImageNet-22k,
# 384, 5 scales; dino-5scale_swin-l_8xb2-12e_coco) 57.2 box AP, on COCO val2017.
# Recipe (inherited, ./_base_/dino_4scale_dat.py): mmdet's dino-4scale_r50_8xb2-12e_coco.py:
# AdamW lr 1e-4, weight decay 1e-4, grad-norm clip 0.1, 2 images x 8 GPUs, lr x0.1 after
# epoch 11, the DETR multi-scale + crop augmentation, test at 1333x800; fp32.
# Backbone: C3..C5 into the ChannelMapper; backbone lr x0.1 (the recipe's); no weight decay on its
# LayerNorms and position tables (the DAT++ rule); activation checkpointing; drop_path 0.0, the
# authors' value for DAT-T++ in every 12-epoch (1x) recipe (Mask R-CNN, Cascade, RetinaNet).
_base_ = './_base_/dino_4scale_dat.py'

# ImageNet-1k DAT-T++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_tiny_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_t_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='tiny++', drop_path_rate=0.0,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]))
