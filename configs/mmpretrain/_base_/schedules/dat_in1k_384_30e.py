# The authors' 384 fine-tune (configs/dat_base_384.yaml): 30 epochs, no warm-up, weight decay
# 1e-8, cosine from lr to lr/100, lr 2e-5 at their 24 images per GPU x 8 GPUs (192), scaled by
# their linear rule 2e-5 * 192 / 512.
_base_ = './dat_in1k_300e.py'

optim_wrapper = dict(optimizer=dict(lr=2e-5 * 192 / 512, weight_decay=1e-8))

param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=0, end=30,
         convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
auto_scale_lr = dict(base_batch_size=192)
