# Semantic FPN "80k" as published (the PVT recipe the authors followed): 80k iterations at
# batch 16 run as 40k iterations at batch 32 (4 images x 8 GPUs), AdamW lr 2e-4 (1e-4 x 2 for
# the doubled batch), weight decay 1e-4, poly (power 0.9) to 0, no warm-up, fp32.
# Checkpoints and validation every 4k iterations.
_base_ = ['mmseg::_base_/schedules/schedule_80k.py', './dat_adamw_paramwise.py']
max_iters = 40000
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    constructor={{_base_.optim_constructor}},
    paramwise_cfg={{_base_.paramwise_cfg}})
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=4000)
# checkpoints: safe loading, fit checks, atomic saves, RNG state (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=4000))
auto_scale_lr = dict(enable=False, base_batch_size=32)
