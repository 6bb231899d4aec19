# Mask2Former + DAT-T++, ADE20K 512x512, 160k iterations.
# No published DAT++ result: the authors list "DINO / Mask2Former for system level DET/SEG" as
# an open item (LeapLabTHU/DAT README, TODO) and released no Mask2Former model, so this config
# has no weights and no expected number.
# Reference: the same mmseg recipe with Swin-T (ImageNet-1k, 224),
# mask2former_swin-t_8xb2-160k_ade20k-512x512: 48.66 mIoU on ADE20K val
# (mmseg 1.2 configs/mask2former/metafile.yaml; single-scale).
# Recipe (inherited, ./_base_/mask2former_dat.py): mmseg's
# mask2former_r50_8xb2-160k_ade20k-512x512.py: AdamW lr 1e-4, weight decay 0.05, grad-norm clip
# 0.01, poly (power 0.9) to 0 over 160k iterations, 2 images x 8 GPUs, mmseg's Mask2Former
# ADE20K augmentation; test at 2048x512, --tta the multi-scale + flip test of the other ADE20K
# configs.
# Backbone: all four stages into the pixel decoder; lr x0.1 and no weight decay on its LayerNorms
# and position tables (mmseg's Swin rule, DAT++'s names); activation checkpointing; drop_path
# 0.3, the authors' DAT-T++ value for ADE20K 160k (UperNet) and mmseg's Swin-T value.
_base_ = './_base_/mask2former_dat.py'

# ImageNet-1k DAT-T++ weights: tools/model_converters/dat_official_to_mm.py --backbone-only
# (or the published dat_pp_tiny_in1k_224.pth itself). A missing file is an error
# (model.backbone.init_cfg=None trains from scratch on purpose).
pretrained = 'checkpoints/dat_t_pp_in1k_backbone.pth'

model = dict(
    backbone=dict(arch='tiny++', drop_path_rate=0.3,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]))
