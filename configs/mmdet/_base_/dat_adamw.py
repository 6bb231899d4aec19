# The DAT++ detection optimiser: AdamW, betas (0.9, 0.999), weight decay 0.05, no decay on
# normalisation layers (every LayerNorm of the backbone, the heads' BN), the deformable
# attention's rpe_table, the neighbourhood attention's rpb and v1's relative_position_bias_table.
# lr is the authors' value at their total batch of 64 (2 images x 32 GPUs; B++: 1 x 64);
# pass --auto-scale-lr to tools/train.py to scale it linearly to another total batch.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'rpe_table': dict(decay_mult=0.0),
            'rpb': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=64)
