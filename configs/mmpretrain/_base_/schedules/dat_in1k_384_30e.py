# The authors' 384 fine-tune (configs/dat_base_384.yaml): 30 epochs, no warm-up, weight decay
# 1e-8, timm's cosine from the lr to MIN_LR 2e-7 (= lr / 100) over the 30 epochs, lr 2e-5 at
# their 24 images per GPU x 8 GPUs (192), scaled by their linear rule 2e-5 * 192 / 512. AMP,
# clipping and the weight-decay exemptions as in the 300-epoch schedule.
_base_ = './dat_in1k_300e.py'

optim_wrapper = dict(optimizer=dict(lr=2e-5 * 192 / 512, weight_decay=1e-8))

param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min_ratio=2e-7 / 2e-5, by_epoch=True, begin=0, end=30,
         convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
auto_scale_lr = dict(base_batch_size=192)
