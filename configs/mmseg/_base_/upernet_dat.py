# UperNet with a DAT++ backbone, as in the authors' upernet_dat.py (DAT-Segmentation):
# mmseg's UperNet (PPM scales 1,2,3,6, 512 channels; FCN auxiliary head on stage 2, loss 0.4)
# with the backbone replaced and activation checkpointing on.
_base_ = ['mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)

data_preprocessor = dict(size=(512, 512))  # 512x512 crops
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DAT',
        arch='tiny++',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        with_cp=True),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))
