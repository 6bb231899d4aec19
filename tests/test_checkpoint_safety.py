"""Runner checkpoints load again under torch >= 2.6 (weights_only default) through
dat_mm.checkpoint, for runner.load_checkpoint, load_from + test and resume, while a checkpoint
carrying an arbitrary pickled object is refused without running it."""
import io
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import dat_mm  # noqa: F401  (registers the safe local checkpoint loader)
from dat_mm.checkpoint import RestrictedUnpickler, UnsafeCheckpointError, safe_load


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, inputs, targets, mode='tensor'):
        out = self.lin(inputs)
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        if mode == 'predict':
            return [dict(pred=p, target=t) for p, t in zip(out, targets)]
        return out


class ToyData(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)])

    def __len__(self):
        return 8

    def __getitem__(self, i):
        x = torch.tensor([i / 8, 1.0 - i / 8, 0.5])
        return dict(inputs=x, targets=x[:1] * 2 - 0.3)


class MSE(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(float((s['pred'] - s['target']).pow(2).sum()) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mse=sum(results) / len(results))


class RecordIters(Hook):
    """Records the iterations the train loop runs (runner.iter before each)."""

    def __init__(self):
        self.iters = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iters.append(runner.iter)


def make_runner(work_dir, max_iters=4, seed=0, **kwargs):
    loader = dict(dataset=ToyData(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    return Runner(
        model=ToyModel(), work_dir=str(work_dir), experiment_name=f'ck_{uuid.uuid4().hex}',
        train_dataloader=loader, test_dataloader=loader, test_cfg=dict(),
        test_evaluator=[MSE()],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
                         dict(type='MultiStepLR', milestones=[3], by_epoch=False, begin=2)],
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=seed), **kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A real Runner trained for 4 iterations; checkpoints at iterations 2 and 4."""
    work_dir = tmp_path_factory.mktemp('trained')
    runner = make_runner(work_dir)
    runner.train()
    weights = {k: v.clone() for k, v in runner.model.state_dict().items()}
    return work_dir, weights


def _same_weights(model, weights):
    state = model.state_dict()
    assert state.keys() == weights.keys()
    return all(torch.equal(state[k], weights[k]) for k in weights)


def test_plain_torch_load_refuses_runner_checkpoint(trained):
    # The premise: torch's weights-only default cannot load what mmengine's Runner saves.
    work_dir, _ = trained
    with pytest.raises(pickle.UnpicklingError):
        torch.load(work_dir / 'iter_4.pth')


def test_safe_load_restores_message_hub(trained):
    work_dir, _ = trained
    ckpt = safe_load(str(work_dir / 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    assert ckpt['meta']['dataset_meta'] == ToyData.metainfo
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert isinstance(loss.data[0], np.ndarray) and len(loss.data[0]) == 4
    assert loss.statistics('mean') == pytest.approx(float(loss.data[0].mean()))
    assert HistoryBuffer._statistics_methods['min'] is HistoryBuffer.min


def test_runner_load_checkpoint(trained):
    work_dir, weights = trained
    runner = make_runner(work_dir / 'other', seed=123)
    assert not _same_weights(runner.model, weights)
    ckpt = runner.load_checkpoint(str(work_dir / 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    assert _same_weights(runner.model, weights)


def test_load_from_then_test(trained):
    # What tools/test.py does: cfg.load_from = checkpoint; runner.test().
    work_dir, weights = trained
    runner = make_runner(work_dir / 'test', seed=7, load_from=str(work_dir / 'iter_4.pth'))
    metrics = runner.test()
    assert _same_weights(runner.model, weights)
    lin = nn.Linear(3, 1)
    lin.load_state_dict({k[len('lin.'):]: v for k, v in weights.items()})
    data = ToyData()
    with torch.no_grad():
        expected = np.mean([float((lin(d['inputs']) - d['targets']).pow(2).sum())
                            for d in (data[i] for i in range(len(data)))])
    assert metrics['mse'] == pytest.approx(expected, rel=1e-5)


def test_resume_continues_from_saved_iteration(trained, tmp_path):
    work_dir, _ = trained
    # copy the run so that resume=True (which finds work_dir/last_checkpoint) sees iter_4
    for name in ('iter_2.pth', 'iter_4.pth'):
        (tmp_path / name).write_bytes((work_dir / name).read_bytes())
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    record = RecordIters()
    runner = make_runner(tmp_path, max_iters=6, seed=99, resume=True, custom_hooks=[record])
    runner.train()
    assert record.iters == [4, 5]
    assert runner.iter == 6
    hub = runner.message_hub.get_scalar('train/loss')
    assert len(hub.data[0]) == 6  # the 4 resumed losses + 2 new ones


def test_resume_restores_optimizer_and_schedulers(trained):
    work_dir, _ = trained
    ckpt = safe_load(str(work_dir / 'iter_2.pth'))
    runner = make_runner(work_dir / 'resume2', seed=5, resume=True,
                         load_from=str(work_dir / 'iter_2.pth'))
    runner.load_or_resume()
    assert runner.iter == 2
    saved = ckpt['optimizer']['state']
    now = runner.optim_wrapper.state_dict()['state']
    assert saved.keys() == now.keys()
    for k in saved:
        torch.testing.assert_close(now[k]['momentum_buffer'], saved[k]['momentum_buffer'])
    assert runner.param_schedulers[1].milestones == ckpt['param_schedulers'][1]['milestones']
    assert runner.param_schedulers[0].last_step == ckpt['param_schedulers'][0]['last_step']


# ---------------------------------------------------------------------------------------
# Refusals


class _RunsShell:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class Custom:
    """An ordinary, harmless class: still not on the allow-list."""

    def __init__(self):
        self.x = 1


class _Getattr:

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return (getattr, (self.target, self.name))


def _poisoned(trained, tmp_path, payload):
    work_dir, _ = trained
    ckpt = safe_load(str(work_dir / 'iter_4.pth'))
    ckpt['meta']['extra'] = payload
    path = tmp_path / 'poisoned.pth'
    torch.save(ckpt, path)
    return path


def test_refuses_os_system_payload(trained, tmp_path):
    marker = tmp_path / 'pwned'
    path = _poisoned(trained, tmp_path, _RunsShell(marker))
    runner = make_runner(tmp_path / 'victim')
    with pytest.raises(UnsafeCheckpointError) as err:
        runner.load_checkpoint(str(path))
    assert "'posix.system'" in str(err.value) or "'os.system'" in str(err.value)
    assert str(path) in str(err.value)
    assert not marker.exists()
    # resume and load_from go through the same loader
    runner = make_runner(tmp_path / 'victim2', resume=True, load_from=str(path))
    with pytest.raises(UnsafeCheckpointError):
        runner.load_or_resume()
    assert not marker.exists()


def test_refuses_custom_class(trained, tmp_path):
    path = _poisoned(trained, tmp_path, Custom())
    with pytest.raises(UnsafeCheckpointError, match=r"test_checkpoint_safety\.Custom'"):
        make_runner(tmp_path / 'victim').load_checkpoint(str(path))


@pytest.mark.parametrize('target, name', [
    (HistoryBuffer, 'update'),           # allowed target, name not in the list
    (HistoryBuffer, '__init__'),
    (torch.Tensor, 'add_'),              # allowed global, but not a getattr target
])
def test_getattr_is_not_blanket_allowed(trained, tmp_path, target, name):
    path = _poisoned(trained, tmp_path, _Getattr(target, name))
    with pytest.raises(UnsafeCheckpointError, match='refusing getattr'):
        safe_load(str(path))


def test_numpy1_global_names_accepted():
    # Checkpoints written with numpy 1.x name numpy.core.multiarray.*; map them, no import.
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = pickle.dumps((arr, np.float64(2.5)), protocol=2)
    old = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert old != data
    got_arr, got_scalar = RestrictedUnpickler(io.BytesIO(old)).load()
    np.testing.assert_array_equal(got_arr, arr)
    assert got_scalar == 2.5 and isinstance(got_scalar, np.float64)
    # and the same bytes with an unknown numpy function are refused
    bad = data.replace(b'numpy._core.multiarray\n_reconstruct', b'numpy._core.multiarray\nfromfile')
    assert bad != data
    with pytest.raises(UnsafeCheckpointError, match="'numpy._core.multiarray.fromfile'"):
        RestrictedUnpickler(io.BytesIO(bad)).load()


def test_legacy_serialization_format(trained, tmp_path):
    # torch's pre-1.6 (non-zip) format goes through pickle_module.load for its header too.
    work_dir, weights = trained
    ckpt = safe_load(str(work_dir / 'iter_4.pth'))
    path = tmp_path / 'legacy.pth'
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    again = safe_load(str(path))
    assert all(torch.equal(again['state_dict'][k], v) for k, v in weights.items())
    assert isinstance(again['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    ckpt['meta']['extra'] = Custom()
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match='Custom'):
        safe_load(str(path))
