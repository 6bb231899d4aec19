# DINO-4scale with a DAT++ backbone: mmdet's dino-4scale_r50_8xb2-12e_coco.py with the ResNet-50
# replaced, the same kind of change as mmdet's dino-5scale_swin-l_8xb2-12e_coco.py makes for
# Swin-L, at 4 scales: the backbone returns C3..C5 (strides 8/16/32, out_indices=(1, 2, 3): the
# stages the R50 4-scale model uses) and the ChannelMapper adds the fourth level (a stride-2 conv
# on C5), as in the R50 recipe; num_feature_levels stays 4. (The Swin-L model is 5-scale: all
# four stages plus one extra level.) Activation checkpointing on (with_cp=True), as in every
# published DAT++ detector and in mmdet's Swin-L DINO. Queries, encoder / decoder, denoising,
# losses, matching, data pipeline, AdamW (lr 1e-4, weight decay 1e-4, grad-norm clip 0.1),
# 2 images x 8 GPUs and the 12-epoch schedule are the recipe's.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['dat_mm', 'dat_mm.datasets.coco_checks'],
                      allow_failed_imports=False)
# checkpoints: safe loading, fit checks, atomic saves, RNG state (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='tiny++',
        drop_path_rate=0.0,
        out_indices=(1, 2, 3),
        with_cp=True),
    neck=dict(in_channels=[128, 256, 512]))

# mmdet's CocoDataset / CocoMetric that drop degenerate polygons on load, consistently
# (dat_mm/datasets/coco_checks.py)
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_evaluator = dict(type='CheckedCocoMetric')
test_evaluator = dict(type='CheckedCocoMetric')

# The recipe's backbone learning rate (x0.1, its 'backbone' key) and, for the backbone, the
# weight-decay exemptions of every published DAT++ recipe: its LayerNorms and the position
# tables `rpe_table` / `relative_position_bias_table` (x0.1 lr as the rest of the backbone); the
# neighbourhood attention's `rpb` is decayed, as in those recipes. The neck and the transformer
# keep the recipe's decay. backbone_norm_decay_mult: DATOptimWrapperConstructor (dat_mm/engine).
optim_wrapper = dict(
    constructor='DATOptimWrapperConstructor',
    paramwise_cfg=dict(
        backbone_norm_decay_mult=0.0,
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'rpe_table': dict(lr_mult=0.1, decay_mult=0.0),
            'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.0),
        }))
