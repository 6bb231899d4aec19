"""Child process of test_checkpoint_kill.py: trains a toy model whose checkpoints take a
while to write (a 2048x2048 layer with SGD momentum: 32 MiB each) and saves after every
iteration with max_keep_ckpts=1, auto-resuming from its work directory. Prints ``SAVE <iter>``
when a save starts and appends ``<iter> <loss>`` to ``losses.txt`` after each iteration.

    python kill_resume_child.py WORK_DIR MAX_ITERS
"""
import sys
import time
import uuid

import numpy as np
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import dat_mm  # noqa: F401  (SafeCheckpointHook)

WIDTH = 2048


class Model(BaseModel):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, WIDTH), nn.Dropout(0.5),
                                      nn.Linear(WIDTH, WIDTH))
        self.head = nn.Linear(WIDTH, 1)

    def forward(self, inputs, targets, mode='tensor'):
        out = self.head(torch.relu(self.backbone(inputs)))
        return dict(loss=((out - targets) ** 2).mean())


class Data(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        x = torch.tensor([i / 8, 1.0 - i / 8, 0.5])
        x = x + torch.from_numpy(np.random.normal(0, 0.1, 3).astype(np.float32))
        return dict(inputs=x, targets=x[:1] * 2 - 0.3)


class Report(Hook):

    def __init__(self, work_dir):
        self.losses = open(f'{work_dir}/losses.txt', 'a')

    def before_save_checkpoint(self, runner, checkpoint):
        print(f'SAVE {runner.iter}', flush=True)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.write(f'{runner.iter} {float(outputs["loss"])!r}\n')
        self.losses.flush()
        # at least 0.5 s of training after the third save, however fast the machine: the
        # parent's kill (up to 0.25 s after a save starts) always lands in a running process
        time.sleep(0.1)


def main(work_dir, max_iters):
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the model is built before the Runner seeds anything
    runner = Runner(
        model=Model(), work_dir=work_dir, experiment_name=f'kill_{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=Data(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=1,
                                           by_epoch=False, max_keep_ckpts=1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[Report(work_dir)], randomness=dict(seed=1), resume=True)
    runner.train()
    print('DONE', flush=True)


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]))
