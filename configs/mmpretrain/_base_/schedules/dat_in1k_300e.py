# The authors' ImageNet-1k recipe (LeapLabTHU/DAT config.py, optimizer.py, lr_scheduler.py):
# AdamW (betas 0.9/0.999, eps 1e-8), weight decay 0.05, 300 epochs, 20 linear warm-up epochs
# from lr/1000, cosine to lr/100, both updated every iteration, grad-norm clip 5.0.
# The base lr follows their linear rule lr = 5e-4 * total_batch / 512 (their `standard_bs`);
# each config sets lr for its published total batch and records that batch in auto_scale_lr.
# The authors trained with AMP (`--amp`): add `--amp` to mmpretrain's tools/train.py.
_base_ = 'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py'

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    # The authors exempt every 1-D parameter (norms, biases) and the parameters whose names
    # contain `relative_position_bias_table` or `rpe_table` from weight decay. Note that the
    # NA bias `rpb` (3-D, not in their keyword list) IS decayed in the published recipe; add
    # '.rpb': dict(decay_mult=0.0) to custom_keys to exempt it too.
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

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    # timm's cosine spans all 300 epochs (warm-up included) and starts at cos(pi*20/300)
    # ~ 0.989 of the lr; mmengine's starts at the lr after warm-up: a negligible difference.
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
# Published total batch: 128 per GPU x 8 GPUs (the authors' `train.sh 8`); lr above is for it.
auto_scale_lr = dict(base_batch_size=1024)
