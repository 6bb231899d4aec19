"""The authors' published checkpoints load wherever a checkpoint goes: SafeCheckpointHook
recognises an ImageNet file (``model``) or an mmdet 2 / mmseg 0.x file (``state_dict`` with the
backbone in their layout) and converts it on the fly, for evaluation (``tools/test.py``,
``load_from`` + test) and fine-tuning (``load_from`` while training); resuming from one is an
error that says why. (tests/test_recipes.py checks the same through tools/test.py on every
recipe family: identical predictions from both layouts.)"""
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import dat_mm  # noqa: F401  (SafeCheckpointHook)
from dat_mm import DAT
from dat_mm.checkpoint import CheckpointError

from published_layout import published_state

ARCH = dict(version=2, stages=[
    dict(dim=8, depth=1, num_heads=1, blocks='N', groups=1, stride=8, offset_kernel=9),
    dict(dim=16, depth=1, num_heads=1, blocks='N', groups=1, stride=4, offset_kernel=7),
    dict(dim=16, depth=2, num_heads=2, blocks='ND', groups=1, stride=2, offset_kernel=5),
    dict(dim=16, depth=1, num_heads=2, blocks='D', groups=1, stride=1, offset_kernel=3)])


class Head(nn.Module):

    def __init__(self, classes):
        super().__init__()
        self.fc = nn.Linear(16, classes)


class Classifier(BaseModel):
    """``backbone`` + ``head.fc``: the key layout of the mmpretrain classifier configs."""

    def __init__(self, classes=5):
        super().__init__()
        self.backbone = DAT(ARCH, out_indices=(3, ))
        self.head = Head(classes)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.head.fc(self.backbone(inputs)[-1].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(out, targets))
        if mode == 'predict':
            return [dict(logits=o) for o in out]
        return out


class Dense(BaseModel):
    """``backbone`` (4 outputs, det/seg norms) + ``neck``: an mmdet 2 / mmseg 0.x layout."""

    def __init__(self):
        super().__init__()
        self.backbone = DAT(ARCH)
        self.neck = nn.Conv2d(16, 4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.neck(self.backbone(inputs)[-1]).mean((1, 2, 3))
        if mode == 'loss':
            return dict(loss=(out - targets.float()).pow(2).mean())
        if mode == 'predict':
            return [dict(logits=o) for o in out]
        return out


class Images(Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, 64, 64, generator=g), targets=i % 5)


PREDICTIONS = []


def make_runner(work_dir, model, **kwargs):
    from mmengine.evaluator import BaseMetric

    class Keep(BaseMetric):

        def process(self, data_batch, data_samples):
            PREDICTIONS.extend(s['logits'].clone() for s in data_samples)

        def compute_metrics(self, results):
            return dict(n=len(results))

    loader = dict(dataset=Images(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    return Runner(model=model, work_dir=str(work_dir), experiment_name=uuid.uuid4().hex,
                  train_dataloader=loader, test_dataloader=loader, test_cfg=dict(),
                  test_evaluator=[Keep()], optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
                  train_cfg=dict(by_epoch=False, max_iters=1),
                  default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=10,
                                                     by_epoch=False)), **kwargs)


def _predict(tmp_path, model_cls, ckpt):
    PREDICTIONS.clear()
    runner = make_runner(tmp_path / uuid.uuid4().hex, model_cls(), load_from=str(ckpt))
    runner.test()
    return torch.stack(PREDICTIONS), runner.model.state_dict()


@pytest.mark.parametrize('kind', ['imagenet', 'dense'])
def test_published_file_evaluates_like_the_converted_one(kind, tmp_path):
    torch.manual_seed(1)
    model = Classifier() if kind == 'imagenet' else Dense()
    ours = {'state_dict': model.state_dict(), 'meta': {}}
    backbone = {k[len('backbone.'):]: v for k, v in model.state_dict().items()
                if k.startswith('backbone.')}
    if kind == 'imagenet':
        published = {'model': published_state(backbone, 2, head=model.head.fc), 'epoch': 300}
    else:
        pub = {'backbone.' + k: v for k, v in published_state(backbone, 2, dense=True).items()}
        pub.update({'neck.' + k: v for k, v in model.neck.state_dict().items()})
        published = {'state_dict': pub, 'meta': {'epoch': 36}}
    torch.save(ours, tmp_path / 'ours.pth')
    torch.save(published, tmp_path / 'published.pth')
    cls = type(model)
    expected, state = _predict(tmp_path, cls, tmp_path / 'ours.pth')
    got, state_pub = _predict(tmp_path, cls, tmp_path / 'published.pth')
    assert torch.equal(expected, got)
    assert state.keys() == state_pub.keys()
    assert all(torch.equal(state[k], state_pub[k]) for k in state)
    # the predictions depend on the weights: a fresh model predicts otherwise
    torch.save({'state_dict': cls().state_dict()}, tmp_path / 'other.pth')
    assert not torch.equal(_predict(tmp_path, cls, tmp_path / 'other.pth')[0], expected)


def test_finetune_from_published_classifier_and_no_resume(tmp_path):
    torch.manual_seed(2)
    source = Classifier()
    backbone = {k[len('backbone.'):]: v for k, v in source.state_dict().items()
                if k.startswith('backbone.')}
    torch.save({'model': published_state(backbone, 2, head=source.head.fc)},
               tmp_path / 'pub.pth')
    # fine-tune to another number of classes: the backbone loads, the head is skipped
    runner = make_runner(tmp_path / 'ft', Classifier(classes=3),
                         load_from=str(tmp_path / 'pub.pth'))
    runner.train()  # one step at lr 0
    loaded = runner.model.state_dict()
    assert all(torch.equal(loaded['backbone.' + k], v) for k, v in backbone.items())
    # a published file holds no training state
    runner = make_runner(tmp_path / 'res', Classifier(), load_from=str(tmp_path / 'pub.pth'),
                         resume=True)
    with pytest.raises(CheckpointError, match="published checkpoints, not a Runner checkpoint"):
        runner.train()


def test_published_backbone_keys_load_through_any_loader(tmp_path):
    # without SafeCheckpointHook: a plain load_state_dict and mmengine's own load_checkpoint
    from mmengine.runner.checkpoint import load_checkpoint
    torch.manual_seed(3)
    source = Dense()
    backbone = dict(source.backbone.state_dict())
    pub = {'backbone.' + k: v for k, v in published_state(backbone, 2, dense=True).items()}
    pub.update({'neck.' + k: v for k, v in source.neck.state_dict().items()})
    target = Dense()
    target.load_state_dict(pub, strict=True)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
    torch.save({'state_dict': pub}, tmp_path / 'pub.pth')
    other = Dense()
    load_checkpoint(other, str(tmp_path / 'pub.pth'), strict=True)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in source.state_dict().items())
    # a key with no place in dat_mm is still reported
    pub['backbone.stages.0.bogus.weight'] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r'Unexpected key.*backbone\.stages\.0\.bogus'):
        Dense().load_state_dict(pub, strict=True)
