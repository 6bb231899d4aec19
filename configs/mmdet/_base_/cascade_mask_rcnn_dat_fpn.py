# Cascade Mask R-CNN with a DAT++ backbone, as in the authors' cascade_mask_rcnn_dat_fpn.py
# (DAT-Detection): mmdet's Cascade Mask R-CNN R50-FPN with the backbone replaced, activation
# checkpointing on, and the three box heads as 4conv1fc heads with SyncBN, decoded-box GIoU
# loss (weight 10) -- the Swin/ConvNeXt 3x cascade heads.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
          'mmdet::_base_/default_runtime.py']
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
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                            target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067])
    ]))
