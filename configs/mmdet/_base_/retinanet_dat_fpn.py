# RetinaNet with a DAT++ backbone, as in the authors' retinanet_dat_fpn.py (DAT-Detection):
# mmdet's RetinaNet R50-FPN with the backbone replaced and activation checkpointing on; the FPN
# takes C3..C5 and builds P6/P7 from C5 (add_extra_convs='on_input').
# The authors' backbone is built with out_indices=(1, 2, 3): only stages 1-3 get an output
# norm, so their RetinaNet checkpoints have no `backbone.norms.0` (their backbone still returns
# the un-normalised stride-4 map, which their FPN skips with start_level=1). Here the backbone
# returns stages 1-3 only and the FPN starts at its first input (start_level=0): the same
# computation, the same parameter names (FPN lateral/output convs 0-2, extra convs on the
# 512/768-channel C5), so the published checkpoints load strictly, and no parameter is unused.
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
        out_indices=(1, 2, 3),
        with_cp=True),
    neck=dict(in_channels=[128, 256, 512], start_level=0, add_extra_convs='on_input'))
