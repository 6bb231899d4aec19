# 1x: 12 epochs, lr x0.1 after epochs 8 and 11, 500-iteration linear warm-up from 0.001x.
_base_ = './dat_adamw.py'
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
