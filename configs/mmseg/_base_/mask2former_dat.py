# Mask2Former (ADE20K semantic segmentation, 512x512) with a DAT++ backbone: mmseg's
# mask2former_r50_8xb2-160k_ade20k-512x512.py with the ResNet-50 replaced, as mmseg's
# mask2former_swin-t_8xb2-160k_ade20k-512x512.py replaces it with Swin-T: all four stages
# (strides 4..32) into the MSDeformAttn pixel decoder (mmdet's, hence the recipe's
# 'mmdet.models' import, kept here). Activation checkpointing on (with_cp=True), as in the
# authors' UperNet recipes on the same 512x512 crops (mmseg's Swin recipe has it off).
# Pixel decoder, 9-layer transformer decoder, 100 queries, losses, point sampling, the data
# pipeline (shorter side 256-1024 at most 2048, 512x512 crop with cat_max_ratio 0.75, flip,
# photometric distortion; test at 2048x512), AdamW (lr 1e-4, weight decay 0.05, grad-norm clip
# 0.01), poly (power 0.9) over 160k iterations and 2 images x 8 GPUs are the recipe's; fp32.
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['dat_mm', 'mmdet.models'], allow_failed_imports=False)
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
    decode_head=dict(in_channels=[64, 128, 256, 512]))

# tools/test.py --tta: the multi-scale + flip test of every ADE20K config here (the authors'
# mmseg-0.x --aug-test, ./ade20k_aug_test.py, which cannot be a second base of this config: it
# shares mmseg's ADE20K dataset base with the recipe). tests/test_configs_dense.py checks that
# the two pipelines are equal.
img_scale = (2048, 512)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(img_scale[0] * r), int(img_scale[1] * r)),
                  keep_ratio=True) for r in img_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]

# mmseg's Swin-T/S Mask2Former rule with DAT++'s names: the whole backbone at lr x0.1; no
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
