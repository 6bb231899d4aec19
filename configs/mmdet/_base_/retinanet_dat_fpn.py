# RetinaNet with a DAT++ backbone, as in the authors' retinanet_dat_fpn.py (DAT-Detection):
# mmdet's RetinaNet R50-FPN with the backbone replaced and activation checkpointing on. The
# FPN starts at C3 and builds P6/P7 from C5 (start_level=1, add_extra_convs='on_input').
# The backbone returns all four stages like the published model (so its checkpoints, with
# the stride-4 output norm, load strictly); that output is unused, so distributed training
# needs find_unused_parameters.
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/default_runtime.py']
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
    neck=dict(in_channels=[64, 128, 256, 512], start_level=1, add_extra_convs='on_input'))
find_unused_parameters = True
