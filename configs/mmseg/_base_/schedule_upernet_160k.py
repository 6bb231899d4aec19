# UperNet 160k as published: AdamW lr 6e-5, weight decay 0.01, linear warm-up over 1500
# iterations from 1e-6x, then poly (power 1.0) to 0; 2 images x 8 GPUs = 16 per iteration;
# fp16 mixed precision (the authors' Fp16OptimizerHook).
_base_ = ['mmseg::_base_/schedules/schedule_160k.py', './dat_adamw_paramwise.py']
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg={{_base_.paramwise_cfg}})
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# checkpoints: safe loading, fit checks, atomic saves, RNG state (docs/reliability.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
