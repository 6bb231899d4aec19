# The authors' ImageNet-1k recipe (LeapLabTHU/DAT config.py, main.py, optimizer.py,
# lr_scheduler.py, train.sh): AdamW (betas 0.9/0.999, eps 1e-8), weight decay 0.05, 300 epochs,
# grad-norm clip 5.0, mixed precision (train.sh always passes --amp), and timm's cosine
# schedule with warm-up, updated every iteration: a linear ramp from WARMUP_LR 5e-7 to the lr
# over 20 epochs, then lr_min + (lr - lr_min)(1 + cos(pi t / 300 epochs)) / 2 with MIN_LR 5e-6
# and t counted from the start of training (warm-up included). All three values are scaled by
# the same linear rule lr = value * total_batch / 512 (their `standard_bs`), so the warm-up
# start and the minimum are the ratios 5e-7 / 5e-4 and 5e-6 / 5e-4 of the lr; each config sets
# the lr for its published total batch and records that batch in auto_scale_lr.
_base_ = 'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py'

optim_wrapper = dict(
    # AMP as published; tools/train.py falls back to fp32 (logged) on a machine without a GPU
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    # The authors' set_weight_decay: no decay on every 1-D parameter, every `.bias`, and the
    # parameters whose names contain `relative_position_bias_table` or `rpe_table`. In DAT every
    # 1-D parameter is a norm weight/bias or a bias; flat_decay_mult covers any other.
    # The NA bias `rpb` (3-D, not in their keyword list) IS decayed, as published.
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            '_delete_': True,  # the Swin base's absolute_pos_embed key: no such parameter
            '.relative_position_bias_table': dict(decay_mult=0.0),
            '.rpe_table': dict(decay_mult=0.0),
        }),
    clip_grad=dict(max_norm=5.0),
)

# The two schedulers overlap and their factors multiply: after the warm-up this is timm's
# cosine over all 300 epochs (it starts at (1 + cos(pi 20/300)) / 2 ~ 0.989 of the lr, as
# theirs); during the warm-up the ramp is scaled by that cosine (at most ~1% below theirs).
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-7 / 5e-4, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=5e-6 / 5e-4, by_epoch=True, begin=0, end=300,
         convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
# Published total batch: 128 per GPU x 8 GPUs (the authors' `train.sh 8`); lr above is for it.
auto_scale_lr = dict(base_batch_size=1024)
