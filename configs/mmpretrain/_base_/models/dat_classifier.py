# The published DAT / DAT++ ImageNet classifier as an mmpretrain ImageClassifier:
# DAT backbone -> LayerNorm on the last stage (the backbone's out norm, = published `cls_norm`)
# -> global average pooling -> Linear(C3, 1000) (= published `cls_head`).
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)
# checkpoints: safe loading, fit checks, atomic saves, RNG state (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
# mmpretrain's default visualizer, restated: inherited across packages it carries a `_scope_`
# key, which mmpretrain's tools/visualization/browse_dataset.py passes on as an argument
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='DAT',
        arch='tiny++',  # set by each config
        drop_path_rate=None,  # None: the preset's published ImageNet-1k value
        out_indices=(3, ),
        out_norm=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,  # C3 of the arch, set by each config
        # The authors keep PyTorch's default init for every conv / linear (docs/model.md);
        # no mmpretrain re-initialisation of the head either.
        init_cfg=None,
        # timm's Mixup(label_smoothing=0.1) + SoftTargetCrossEntropy in the authors' code:
        # smoothing the mixed label is the same as mixing smoothed labels.
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    # mixup 0.8 / cutmix 1.0, one of the two per batch with probability 0.5 each
    # (timm: prob 1.0, switch_prob 0.5, mode 'batch').
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)

# tools/test.py --tta: the scores of the test image and its horizontal flip averaged
# (mmpretrain's AverageClsScoreTTA; tta_pipeline in the dataset bases). The published top-1 is
# single-crop, without it.
tta_model = dict(type='AverageClsScoreTTA')
