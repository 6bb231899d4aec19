# Semantic FPN with a DAT++ backbone, as in the authors' fpn_dat.py (DAT-Segmentation):
# mmseg's Semantic FPN (FPN neck, 4 levels, 256 channels; FPNHead with 128 channels) with the
# backbone replaced; no activation checkpointing (as published).
_base_ = ['mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)

data_preprocessor = dict(size=(512, 512))  # 512x512 crops
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='tiny++',
        drop_path_rate=0.4,
        out_indices=(0, 1, 2, 3),
        with_cp=False),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))
