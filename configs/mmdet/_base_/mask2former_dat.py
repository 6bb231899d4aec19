# Mask2Former (COCO instance segmentation) with a DAT++ backbone: mmdet's
# mask2former_r50_8xb2-lsj-50e_coco.py with the ResNet-50 replaced, as mmdet's
# mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py replaces it with Swin-T: all four stages
# (strides 4..32) into the MSDeformAttn pixel decoder, which uses the last three and the
# stride-4 map for the mask features. Activation checkpointing on (with_cp=True), as in every
# published DAT++ detector (mmdet's Swin recipe has it off): the 1024x1024 LSJ crops have about
# the pixel count of the DAT++ detection recipes' 1333x800 images. Pixel decoder, 9-layer
# transformer decoder, 100 queries, losses, point sampling, the LSJ pipeline (random resize
# 0.1-2.0 of 1024x1024, 1024x1024 crop, flip; test 1333x800), AdamW (lr 1e-4, weight decay
# 0.05, grad-norm clip 0.01), 2 images x 8 GPUs and 368750 iterations (lr x0.1 at 327778 and
# 355092) are the recipe's; fp32.
_base_ = 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py'
custom_imports = dict(imports=['dat_mm', 'dat_mm.datasets.coco_checks'],
                      allow_failed_imports=False)
# checkpoints: safe loading, fit checks, atomic saves, RNG state (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='tiny++',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        with_cp=True),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]))

# mmdet's CocoDataset / CocoMetric that drop degenerate polygons on load, consistently
# (dat_mm/datasets/coco_checks.py)
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_evaluator = dict(type='CheckedCocoMetric')
test_evaluator = dict(type='CheckedCocoMetric')

# mmdet's Swin-T/S Mask2Former rule with DAT++'s names: the whole backbone at lr x0.1; no
# weight decay on the backbone's normalisation layers (all LayerNorms: backbone_norm_decay_mult,
# DATOptimWrapperConstructor in dat_mm/engine, where Swin's config lists each norm by name) and
# on its position tables (Swin: relative_position_bias_table / absolute_pos_embed; DAT++:
# rpe_table / relative_position_bias_table, the tables every published DAT++ recipe exempts),
# both at lr x0.1; the neighbourhood attention's `rpb` is decayed, as in those recipes. The
# recipe's own rules stay: no decay on query_embed / query_feat / level_embed and on the head's
# normalisation layers (norm_decay_mult=0).
optim_wrapper = dict(
    constructor='DATOptimWrapperConstructor',
    paramwise_cfg=dict(
        backbone_norm_decay_mult=0.0,
        custom_keys={
            # the recipe's key also states decay_mult=1.0, which would win over
            # backbone_norm_decay_mult for the backbone's LayerNorms
            'backbone': dict(_delete_=True, lr_mult=0.1),
            'rpe_table': dict(lr_mult=0.1, decay_mult=0.0),
            'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.0),
        }))
