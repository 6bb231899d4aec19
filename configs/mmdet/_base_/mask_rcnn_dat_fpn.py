# Mask R-CNN with a DAT++ backbone, as in the authors' mask_rcnn_dat_fpn.py (DAT-Detection):
# mmdet's Mask R-CNN R50-FPN with the backbone replaced, activation checkpointing on, and an
# FPN whose extra level P6 is a stride-2 conv on C5 (add_extra_convs='on_input').
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/default_runtime.py']
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
        out_indices=(0, 1, 2, 3),
        with_cp=True),
    neck=dict(in_channels=[64, 128, 256, 512], add_extra_convs='on_input'))
