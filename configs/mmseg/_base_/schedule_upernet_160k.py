# UperNet 160k as published (the authors' upn_*_160k_dp*_lr6.py): AdamW lr 6e-5, weight decay
# 0.01, poly (power 1.0) from the base lr to 0 over all 160k iterations, multiplied during the
# first 1500 iterations by a linear warm-up factor rising from 1e-6 (mmcv's warm-up on top of
# the regular schedule: the two schedulers overlap and their factors multiply); 2 images x
# 8 GPUs = 16 per iteration. Precision differs per model, so each config sets its optimiser
# wrapper: fp32 (OptimWrapper, here) for B++, fp16 (AmpOptimWrapper) for T++ and S++.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py', './dat_adamw_paramwise.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    constructor={{_base_.optim_constructor}},
    paramwise_cfg={{_base_.paramwise_cfg}})
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=160000, by_epoch=False),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# checkpoints: safe loading, fit checks, atomic saves, RNG state (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
