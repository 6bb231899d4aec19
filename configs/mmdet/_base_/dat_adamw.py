# The DAT++ detection optimiser, as in every published DAT-Detection config: AdamW, betas
# (0.9, 0.999), weight decay 0.05, and no decay on exactly what the authors' paramwise_cfg
# exempts: every normalisation layer (norm_decay_mult=0: the backbone's LayerNorms, the heads'
# BN) and the position tables. Their custom_keys were 'norm', 'rpe_table',
# 'relative_position_bias_table' and 'absolute_pos_embed': 'norm' names only LayerNorm
# parameters (in their model and here), which norm_decay_mult already covers, and DAT has no
# 'absolute_pos_embed', so the two table keys remain.
# The neighbourhood attention's `rpb` is in none of them, so it is decayed, as published.
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
            'relative_position_bias_table': dict(decay_mult=0.0),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=64)
