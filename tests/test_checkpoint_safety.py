"""Checkpoint loading is safe and strict at every entry point (dat_mm.checkpoint,
SafeCheckpointHook): Runner checkpoints load under torch's weights_only unpickler, hostile
files (pickled code, TorchScript, forged getattr / HistoryBuffer state, legacy format) are
refused with no side effect, and unreadable or ill-fitting files stop with the file and the
problem named before any step runs."""
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Tuple
from unittest import mock

import mmengine
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import digit_version
from torch.utils.data import Dataset

import dat_mm  # noqa: F401  (registers SafeCheckpointHook)
from dat_mm.checkpoint import (CAN_EXTEND_ALLOW_LIST, PLAIN_TAG, CheckpointError,
                               UnsafeCheckpointError, from_plain, load_checkpoint, safe_load,
                               safe_loader, to_plain, use_safe_loader)


ROOT = Path(__file__).resolve().parents[1]


class ToyModel(BaseModel):
    """A backbone and a head, with dropout so that runs draw random numbers."""

    def __init__(self, width=4, classes=1, p=0.0):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, width), nn.Dropout(p))
        self.head = nn.Linear(width, classes)

    def forward(self, inputs, targets, mode='tensor'):
        out = self.head(torch.relu(self.backbone(inputs)))[:, :1]
        if mode == 'loss':
            return dict(loss=((out - targets) ** 2).mean())
        if mode == 'predict':
            return [dict(pred=p, target=t) for p, t in zip(out, targets)]
        return out


class ToyData(Dataset):
    """8 samples; ``augment`` adds noise from numpy's global generator, as random
    transforms do in the main process when num_workers=0."""
    metainfo = dict(classes=('a', 'b'))

    def __init__(self, augment=False):
        self.augment = augment

    def __len__(self):
        return 8

    def __getitem__(self, i):
        x = torch.tensor([i / 8, 1.0 - i / 8, 0.5])
        if self.augment:
            x = x + torch.from_numpy(np.random.normal(0, 0.1, 3).astype(np.float32))
        return dict(inputs=x, targets=x[:1] * 2 - 0.3)


class MSE(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(float((s['pred'] - s['target']).pow(2).sum()) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mse=sum(results) / len(results))


class Record(Hook):
    """Records the train iterations and test batches that ran, and the training losses."""

    def __init__(self):
        self.iters, self.tested, self.losses = [], [], {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iters.append(runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[runner.iter] = float(outputs['loss'])

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self.tested.append(batch_idx)


def make_runner(work_dir, max_iters=4, seed=0, model=None, by_epoch=False, augment=False,
                shuffle=False, interval=2, max_keep_ckpts=-1, **kwargs):
    loader = dict(dataset=ToyData(augment), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=shuffle),
                  collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=True, max_epochs=max_iters, val_interval=1000) if by_epoch \
        else dict(by_epoch=False, max_iters=max_iters, val_interval=1000)
    return Runner(
        model=model or ToyModel(), work_dir=str(work_dir),
        experiment_name=f'ck_{uuid.uuid4().hex}', train_dataloader=loader,
        test_dataloader=dict(loader, dataset=ToyData()), test_cfg=dict(),
        test_evaluator=[MSE()],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
                         dict(type='MultiStepLR', milestones=[3], by_epoch=False, begin=2)],
        train_cfg=train_cfg,
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=interval,
                                           by_epoch=by_epoch, max_keep_ckpts=max_keep_ckpts),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=seed), **kwargs)


@pytest.fixture(autouse=True)
def _restore_mmengine_loader():
    """The safe loader, once installed by a hook, stays for the process; tests start from
    mmengine's own."""
    saved = CheckpointLoader._schemes['']
    yield
    CheckpointLoader._schemes[''] = saved


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


def test_import_changes_no_loader():
    # `import dat_mm` registers modules only; the loader is installed where it is used (in a
    # new process: tests that ran tools/train.py in this one have installed it)
    subprocess.run([sys.executable, '-c', (
        'import mmengine.runner.checkpoint as m, dat_mm, dat_mm.checkpoint; '
        "assert m.CheckpointLoader._schemes[''] is m.load_from_local")], check=True)
    import mmengine.runner.checkpoint as mmckpt
    CheckpointLoader.register_scheme(prefixes='', loader=mmckpt.load_from_local, force=True)
    previous = use_safe_loader()
    assert previous is mmckpt.load_from_local
    assert use_safe_loader() is CheckpointLoader._schemes['']  # idempotent
    with safe_loader():
        pass
    assert CheckpointLoader._schemes[''] is not mmckpt.load_from_local


def test_runner_checkpoints_load_with_plain_weights_only_torch_load(trained, tmp_path):
    """SafeCheckpointHook saves the Runner state in the plain form: torch's weights-only
    unpickler reads it with no global allowed (what tools outside dat_mm and torch < 2.5 do);
    the same state saved as mmengine does it is refused."""
    work_dir, weights = trained
    plain = torch.load(work_dir / 'iter_4.pth', weights_only=True)
    loss = plain['message_hub']['log_scalars']['train/loss']
    assert loss[PLAIN_TAG] == 'HistoryBuffer'
    assert all(torch.equal(plain['state_dict'][k], v) for k, v in weights.items())
    torch.save(safe_load(str(work_dir / 'iter_4.pth')), tmp_path / 'pickled.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'pickled.pth', weights_only=True)


@pytest.mark.parametrize('node, reason', [
    ({PLAIN_TAG: 'ndarray', 'dtype': '|O', 'shape': [1], 'data': torch.zeros(8, dtype=torch.uint8)},
     'numeric dtypes only'),
    ({PLAIN_TAG: 'ndarray', 'dtype': '<f8', 'shape': [3], 'data': torch.zeros(8, dtype=torch.uint8)},
     '8 bytes'),
    ({PLAIN_TAG: 'HistoryBuffer', 'max_length': 2, 'log': to_plain(np.zeros(3)),
      'count': to_plain(np.ones(3))}, "malformed plain 'HistoryBuffer'"),
    ({PLAIN_TAG: 'HistoryBuffer', 'max_length': 5, 'log': to_plain(np.zeros(3)),
      'count': to_plain(np.ones(2))}, "malformed plain 'HistoryBuffer'"),
    ({PLAIN_TAG: 'Counter', 'items': [[1, 2, 3]]}, "malformed plain 'Counter'"),
    ({PLAIN_TAG: 'getattr', 'x': 1}, "malformed plain 'getattr'"),
])
def test_forged_plain_entries_are_refused(node, reason, tmp_path):
    path = tmp_path / 'forged.pth'
    torch.save({'state_dict': {}, 'message_hub': {'x': node}}, path)
    with pytest.raises(UnsafeCheckpointError, match=reason) as err:
        safe_load(str(path))
    assert str(path) in str(err.value) and "message_hub.x" in str(err.value)


def test_plain_form_round_trips_every_runner_type():
    import collections
    state = collections.OrderedDict(
        rng=(np.random.get_state(), (3, tuple(range(5)), None), torch.arange(3)),
        buffer=HistoryBuffer([1.5, 2.5], [1, 2], 10), milestones=collections.Counter({3: 1}),
        eta=np.float64(0.25), steps=np.int64(7), flags=np.array([True, False]),
        u32=np.arange(4, dtype=np.uint32).reshape(2, 2))
    back = from_plain(to_plain(state))
    assert type(back) is collections.OrderedDict and list(back) == list(state)
    assert back['rng'][0][0] == 'MT19937' and back['rng'][0][1].dtype == np.uint32
    assert np.array_equal(back['rng'][0][1], state['rng'][0][1])
    assert back['rng'][1] == state['rng'][1] and torch.equal(back['rng'][2], state['rng'][2])
    assert type(back['buffer']) is HistoryBuffer and back['buffer'].max_length == 10
    assert np.array_equal(back['buffer'].data[0], [1.5, 2.5])
    assert back['milestones'] == state['milestones']
    assert type(back['milestones']) is collections.Counter
    assert type(back['eta']) is np.float64 and back['eta'] == 0.25
    assert type(back['steps']) is np.int64 and back['steps'] == 7
    assert back['u32'].dtype == np.uint32 and np.array_equal(back['u32'], state['u32'])
    assert back['flags'].dtype == bool


def test_safe_load_restores_message_hub(trained):
    work_dir, _ = trained
    ckpt = safe_load(str(work_dir / 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    assert ckpt['meta']['dataset_meta'] == ToyData.metainfo
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(loss) is HistoryBuffer
    assert isinstance(loss.data[0], np.ndarray) and len(loss.data[0]) == 4
    assert loss.statistics('mean') == pytest.approx(float(loss.data[0].mean()))
    assert 'statistics_methods' not in vars(loss)
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean
    assert [len(s['python'][1]) for s in ckpt['rng_state']] == [625]


def test_runner_load_checkpoint(trained):
    work_dir, weights = trained
    runner = make_runner(work_dir / 'other', seed=123)
    assert not _same_weights(runner.model, weights)
    use_safe_loader()  # the documented call for scripts that load through mmengine
    ckpt = runner.load_checkpoint(str(work_dir / 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    assert _same_weights(runner.model, weights)


def test_load_from_then_test(trained):
    # What tools/test.py does: cfg.load_from = checkpoint; runner.test().
    work_dir, weights = trained
    runner = make_runner(work_dir / 'test', seed=7, load_from=str(work_dir / 'iter_4.pth'))
    metrics = runner.test()
    assert _same_weights(runner.model, weights)
    model = ToyModel()
    model.load_state_dict(weights)
    data = ToyData()
    with torch.no_grad():
        expected = np.mean([float((model(d['inputs'][None], None) - d['targets']).pow(2).sum())
                            for d in (data[i] for i in range(len(data)))])
    assert metrics['mse'] == pytest.approx(expected, rel=1e-5)


def test_resume_restores_optimizer_and_schedulers(trained):
    work_dir, _ = trained
    ckpt = safe_load(str(work_dir / 'iter_2.pth'))
    runner = make_runner(work_dir / 'resume2', seed=5, resume=True,
                         load_from=str(work_dir / 'iter_2.pth'))
    runner.call_hook('before_run')
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
# The hostile corpus: each file, if it were loaded unsafely, would create `marker`.


class _Reduce:

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class _FileWriter(nn.Module):
    """TorchScript module whose __setstate__ (run by torch.jit.load) overwrites a file."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        data = torch.tensor([112, 119, 110, 101, 100], dtype=torch.uint8)
        written = torch.from_file(self.path, True, 5, dtype=torch.uint8)
        written.copy_(data)
        # used afterwards, so that TorchScript does not drop the write as dead code
        self.training = bool(written.sum() > 0) and state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_torch_that_cannot_extend_its_allow_list_says_so(trained, tmp_path, monkeypatch):
    """torch < 2.5 has no ``safe_globals``: dat_mm's Runner checkpoints (plain form) and model
    weights load with its own allow-list; a checkpoint with pickled Runner state (saved
    without SafeCheckpointHook) is refused with the torch version and what would read it."""
    import dat_mm.checkpoint as ckpt_mod
    monkeypatch.setattr(ckpt_mod, 'CAN_EXTEND_ALLOW_LIST', False)
    ckpt = safe_load(str(trained[0] / 'iter_4.pth'))
    assert type(ckpt['message_hub']['log_scalars']['train/loss']) is HistoryBuffer
    pickled = tmp_path / 'pickled.pth'
    torch.save(ckpt, pickled)
    with pytest.raises(UnsafeCheckpointError, match=r'pickled\.pth: refused: .*torch .*>= 2\.5'):
        safe_load(str(pickled))


def test_publish_model_writes_weights_plain_torch_load_reads(trained, hostile_files, tmp_path):
    tool = ROOT / 'tools' / 'model_converters' / 'publish_model.py'
    out = tmp_path / 'weights.pth'
    # dat_mm from this checkout, installed or not (the compatibility environment has not)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p])}
    proc = subprocess.run([sys.executable, str(tool), str(trained[0] / 'iter_4.pth'), str(out)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    loaded = torch.load(out, weights_only=True)  # torch's default allow-list, nothing added
    assert all(torch.equal(loaded['state_dict'][k], v) for k, v in trained[1].items())
    assert loaded['meta']['iter'] == 4 and len(loaded['meta']['source_sha256']) == 64
    _, files = hostile_files
    for kind in ('os_system', 'torchscript'):
        proc = subprocess.run([sys.executable, str(tool), str(files[kind]),
                               str(tmp_path / f'{kind}.pth')],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 1 and str(files[kind]) in proc.stderr and 'refused' in proc.stderr
        assert not (tmp_path / f'{kind}.pth').exists()


def _runner_ckpt(trained):
    return safe_load(str(trained[0] / 'iter_4.pth'))


def _hostile(kind, trained, path, marker):
    """Writes the hostile file of ``kind`` to ``path``: loaded unsafely, it would create
    ``marker`` or overwrite ``<marker>.victim`` (created here holding ``00000``)."""
    ckpt = _runner_ckpt(trained)
    victim = marker.with_suffix('.victim')
    victim.write_bytes(b'00000')
    if kind == 'torchscript':
        torch.jit.save(torch.jit.script(_FileWriter(str(victim))), str(path))
        return
    if kind == 'os_system':
        ckpt['meta']['x'] = _Reduce(os.system, f'touch {marker}')
    elif kind == 'eval':
        ckpt['meta']['x'] = _Reduce(eval, f'open({str(marker)!r}, "w").close()')
    elif kind == 'subprocess':
        ckpt['meta']['x'] = _Reduce(subprocess.call, ['touch', str(marker)])
    elif kind == 'getattr_update':
        ckpt['meta']['x'] = _Reduce(getattr, HistoryBuffer, 'update')
    elif kind == 'getattr_tensor':
        ckpt['meta']['x'] = _Reduce(getattr, torch.Tensor, 'add_')
    elif kind == 'history_buffer_mean_is_max':
        # mmengine's __setstate__ would merge this into the class-wide table
        def forged(self):
            return dict(vars(self), statistics_methods={'mean': HistoryBuffer.max})

        with mock.patch.object(HistoryBuffer, '__getstate__', forged):
            torch.save(ckpt, str(path))
        return
    elif kind == 'history_buffer_extra_field':
        buf = ckpt['message_hub']['log_scalars']['train/loss']
        buf.__dict__['_log_history'] = np.array(['x'], dtype=object)
        buf.__dict__['_count_history'] = np.array([1])
    elif kind == 'legacy_os_system':
        ckpt['meta']['x'] = _Reduce(os.system, f'touch {marker}')
        torch.save(ckpt, str(path), _use_new_zipfile_serialization=False)
        return
    torch.save(ckpt, str(path))


HOSTILE = ['os_system', 'eval', 'subprocess', 'torchscript', 'getattr_update',
           'getattr_tensor', 'history_buffer_mean_is_max', 'history_buffer_extra_field',
           'legacy_os_system']


def test_torchscript_payload_is_real(tmp_path, trained):
    # Without dat_mm the corpus's TorchScript file does write its file when loaded.
    marker = tmp_path / 'written'
    _hostile('torchscript', trained, tmp_path / 'ts.pth', marker)
    assert marker.with_suffix('.victim').read_bytes() == b'00000'
    torch.jit.load(str(tmp_path / 'ts.pth'))
    assert marker.with_suffix('.victim').read_bytes() == b'pwned'


@pytest.fixture(scope='module')
def hostile_files(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp('hostile')
    files = {}
    for kind in HOSTILE:
        files[kind] = root / f'{kind}.pth'
        _hostile(kind, trained, files[kind], root / f'{kind}.marker')
    return root, files


def _entry_points(tmp_path):
    """Every way a checkpoint path reaches a loader, as callables of the path."""
    from dat_mm.models import DAT
    spec = importlib.util.spec_from_file_location(
        'dat_mm_visualize_tool', ROOT / 'tools' / 'visualize_deformable.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def runner_test(path):
        make_runner(tmp_path / 'test', load_from=str(path)).test()

    def runner_load(path):
        use_safe_loader()
        make_runner(tmp_path / 'load').load_checkpoint(str(path))

    def resume_path(path):
        make_runner(tmp_path / 'resume', resume=True, load_from=str(path)).train()

    def auto_resume(path):
        work = tmp_path / f'auto_{uuid.uuid4().hex}'
        work.mkdir()
        shutil.copy(path, work / 'iter_6.pth')
        (work / 'last_checkpoint').write_text(str(work / 'iter_6.pth'))
        make_runner(work, resume=True, max_iters=8).train()

    def init_cfg(path):
        backbone = DAT(arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        backbone.init_weights()

    def visualize(path):
        tool.load_weights(DAT(arch=TINY_ARCH), str(path))

    return dict(safe_load=safe_load, load_checkpoint=load_checkpoint, runner_test=runner_test,
                runner_load=runner_load, resume_path=resume_path, auto_resume=auto_resume,
                init_cfg=init_cfg, visualize=visualize)


TINY_ARCH = dict(version=2, stages=[
    dict(dim=8, depth=1, num_heads=1, blocks='N', groups=1, stride=8, offset_kernel=9),
    dict(dim=16, depth=1, num_heads=1, blocks='N', groups=1, stride=4, offset_kernel=7),
    dict(dim=16, depth=1, num_heads=2, blocks='D', groups=1, stride=2, offset_kernel=5),
    dict(dim=16, depth=1, num_heads=2, blocks='D', groups=1, stride=1, offset_kernel=3)])


@pytest.mark.parametrize('kind', HOSTILE)
def test_hostile_checkpoint_refused_everywhere(kind, hostile_files, tmp_path):
    root, files = hostile_files
    marker = root / f'{kind}.marker'
    for name, load in _entry_points(tmp_path).items():
        with pytest.raises(UnsafeCheckpointError) as err:
            load(files[kind])
        named = 'iter_6.pth' if name == 'auto_resume' else str(files[kind])  # its copy
        assert f'{named}: refused' in str(err.value), (name, str(err.value))
        assert 'refused' in str(err.value), (name, str(err.value))
        assert not marker.exists(), name
        assert marker.with_suffix('.victim').read_bytes() == b'00000', name
    # no class-wide damage either
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean
    buf = HistoryBuffer([1.0, 3.0], [1, 1])
    assert buf.mean() == 2.0 and buf.statistics('mean') == 2.0


def test_refusals_say_what(hostile_files):
    _, files = hostile_files
    reasons = {
        'os_system': 'GLOBAL posix.system', 'eval': 'GLOBAL eval', 'subprocess': 'call was not an allowed global',
        'torchscript': 'TorchScript', 'getattr_update': "getattr(HistoryBuffer, 'update')",
        'getattr_tensor': "'add_'", 'history_buffer_mean_is_max': 'statistics methods',
        'history_buffer_extra_field': '1-D numeric', 'legacy_os_system': 'GLOBAL posix.system'}
    if not CAN_EXTEND_ALLOW_LIST:
        # torch < 2.5 refuses every global dat_mm would allow (with a guard) itself, by name
        reasons.update(os_system='posix.system', eval='eval', subprocess='subprocess.',
                       getattr_update='getattr', getattr_tensor='getattr',
                       history_buffer_mean_is_max='HistoryBuffer',
                       history_buffer_extra_field='HistoryBuffer',
                       legacy_os_system='posix.system')
    for kind, fragment in reasons.items():
        with pytest.raises(UnsafeCheckpointError, match=fragment.replace('(', r'\(')
                           .replace(')', r'\)')):
            safe_load(str(files[kind]))


def test_legacy_format_loads(trained, tmp_path):
    work_dir, weights = trained
    ckpt = _runner_ckpt(trained)
    path = tmp_path / 'legacy.pth'
    torch.save(to_plain(ckpt), path, _use_new_zipfile_serialization=False)
    again = safe_load(str(path))
    assert all(torch.equal(again['state_dict'][k], v) for k, v in weights.items())
    assert type(again['message_hub']['log_scalars']['train/loss']) is HistoryBuffer


@pytest.mark.skipif(not CAN_EXTEND_ALLOW_LIST, reason='pickled numpy objects need torch >= 2.5 '
                    '(an allow-list extended for one load)')
def test_numpy1_names_accepted(tmp_path):
    # Checkpoints written with numpy 1.x name numpy.core.multiarray.*
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / 'np1.pth'
    torch.save({'a': arr, 's': np.float64(2.5)}, path)
    import zipfile
    with zipfile.ZipFile(path) as zf:
        items = {n: zf.read(n) for n in zf.namelist()}
    pkl = next(n for n in items if n.endswith('data.pkl'))
    assert b'numpy._core.multiarray' in items[pkl]
    items[pkl] = items[pkl].replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as zf:
        for n, data in items.items():
            zf.writestr(n, data)
    got = safe_load(str(path))
    np.testing.assert_array_equal(got['a'], arr)
    assert got['s'] == 2.5 and isinstance(got['s'], np.float64)


# ---------------------------------------------------------------------------------------
# Unreadable and ill-fitting files


def _broken(kind, trained, path):
    good = (trained[0] / 'iter_4.pth').read_bytes()
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'random':
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == 'truncated':
        path.write_bytes(good[:len(good) // 2])
    elif kind == 'truncated_legacy':
        torch.save(to_plain(_runner_ckpt(trained)), path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:-200])
    return path


@pytest.mark.parametrize('kind, message', [
    ('empty', 'is empty'), ('random', 'not a PyTorch checkpoint'),
    ('truncated', 'incomplete or damaged'), ('truncated_legacy', 'incomplete or damaged')])
def test_unreadable_files_named(kind, message, trained, tmp_path):
    path = _broken(kind, trained, tmp_path / f'{kind}.pth')
    with pytest.raises(CheckpointError, match=message) as err:
        safe_load(str(path))
    assert str(path) in str(err.value)
    record = Record()
    runner = make_runner(tmp_path / 'w', load_from=str(path), custom_hooks=[record])
    with pytest.raises(CheckpointError, match=message):
        runner.test()
    assert record.tested == []


def test_missing_file_named(tmp_path):
    missing = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_load(str(missing))


@pytest.mark.parametrize('mode', ['test', 'resume', 'finetune'])
def test_wrong_architecture_stops_before_running(mode, trained, tmp_path):
    # a checkpoint of a wider backbone: every backbone weight has the wrong shape
    other = make_runner(tmp_path / 'other', model=ToyModel(width=6))
    torch.save({'state_dict': other.model.state_dict(), 'meta': {'iter': 2, 'epoch': 0}},
               tmp_path / 'wide.pth')
    record = Record()
    kwargs = dict(load_from=str(tmp_path / 'wide.pth'), custom_hooks=[record])
    runner = make_runner(tmp_path / mode, resume=mode == 'resume', **kwargs)
    with pytest.raises(CheckpointError) as err:
        runner.test() if mode == 'test' else runner.train()
    text = str(err.value)
    assert str(tmp_path / 'wide.pth') in text
    assert 'shape mismatches (3)' in text or 'shape mismatches (2)' in text, text
    assert 'backbone.0.weight: checkpoint (6, 3) vs model (4, 3)' in text
    assert record.iters == [] and record.tested == []


def test_finetune_accepts_another_head_but_not_another_backbone(trained, tmp_path):
    work_dir, weights = trained
    # another number of classes: the head is reported and skipped, the backbone loads
    runner = make_runner(tmp_path / 'ft', model=ToyModel(classes=2), max_iters=3,
                         load_from=str(work_dir / 'iter_4.pth'))
    runner.train()
    assert runner.iter == 3
    # the same checkpoint is an error for evaluation (the head does not fit)
    runner = make_runner(tmp_path / 'ev', model=ToyModel(classes=2),
                         load_from=str(work_dir / 'iter_4.pth'))
    with pytest.raises(CheckpointError, match=r'head\.weight: checkpoint \(1, 4\)'):
        runner.test()


def test_checkpoint_with_no_model_weights(trained, tmp_path):
    torch.save({'state_dict': {'foo.weight': torch.zeros(2)}}, tmp_path / 'x.pth')
    runner = make_runner(tmp_path / 'w', load_from=str(tmp_path / 'x.pth'))
    with pytest.raises(CheckpointError, match='has none of the 4 weights of ToyModel'):
        runner.test()
    # a backbone-only file given as load_from: say where it belongs
    backbone = {k[len('backbone.'):]: v for k, v in trained[1].items()
                if k.startswith('backbone.')}
    torch.save(backbone, tmp_path / 'bb.pth')
    runner = make_runner(tmp_path / 'w2', load_from=str(tmp_path / 'bb.pth'), max_iters=3)
    with pytest.raises(CheckpointError, match="model.backbone.init_cfg=dict.type='Pretrained'"):
        runner.train()


# ---------------------------------------------------------------------------------------
# Saving and resuming


def test_saves_keep_one_complete_checkpoint(tmp_path):
    runner = make_runner(tmp_path, max_iters=6, interval=1, max_keep_ckpts=1)
    runner.train()
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.endswith('.pth')] == ['iter_6.pth'], names
    assert not [n for n in names if n.endswith('.tmp')]
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_6.pth')


def test_auto_resume_skips_truncated_latest(trained, tmp_path, caplog):
    work_dir, _ = trained
    shutil.copy(work_dir / 'iter_2.pth', tmp_path / 'iter_2.pth')
    data = (work_dir / 'iter_4.pth').read_bytes()
    (tmp_path / 'iter_4.pth').write_bytes(data[:len(data) // 3])
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    (tmp_path / '.iter_6.pth.tmp').write_bytes(b'half a save')
    (tmp_path / '.notes.tmp').write_text('a file of the user')  # not the hook's: kept
    record = Record()
    runner = make_runner(tmp_path, max_iters=5, resume=True, custom_hooks=[record])
    runner.train()
    assert record.iters == [2, 3, 4]
    assert not (tmp_path / '.iter_6.pth.tmp').exists()
    assert (tmp_path / '.notes.tmp').read_text() == 'a file of the user'
    log = (tmp_path / runner.timestamp / f'{runner.timestamp}.log').read_text()
    assert f'skipping {tmp_path / "iter_4.pth"}: ' in log and 'incomplete or damaged' in log


def test_auto_resume_without_checkpoint_says_so(tmp_path):
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))  # deleted file
    record = Record()
    runner = make_runner(tmp_path, max_iters=3, resume=True, custom_hooks=[record])
    runner.train()
    assert record.iters == [0, 1, 2]
    log = (tmp_path / runner.timestamp / f'{runner.timestamp}.log').read_text()
    assert 'no complete checkpoint in' in log and 'starts from the beginning' in log


def test_explicit_resume_from_truncated_file_is_an_error(trained, tmp_path):
    data = (trained[0] / 'iter_4.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:1000])
    record = Record()
    runner = make_runner(tmp_path / 'w', resume=True, load_from=str(tmp_path / 'cut.pth'),
                         custom_hooks=[record])
    with pytest.raises(CheckpointError, match='cut.pth: incomplete or damaged'):
        runner.train()
    assert record.iters == []


@pytest.mark.parametrize('by_epoch', [
    pytest.param(False, marks=pytest.mark.skipif(
        digit_version(mmengine.__version__) < digit_version('0.10.7'),
        reason='an iter-based run resumed with mmengine 0.10.0 draws other batches than the '
               'uninterrupted one (with pickled checkpoints too); exact iter-based resume is '
               'tested with mmengine 0.10.7')),
    True], ids=['iter_based', 'epoch_based'])
def test_resume_continues_the_uninterrupted_run_exactly(by_epoch, tmp_path):
    # Dropout in the model, noise in the data (main-process numpy) and a shuffled sampler:
    # every random source of a training step.
    common = dict(by_epoch=by_epoch, augment=True, shuffle=True, interval=2, seed=3)
    length = 6
    full = Record()
    make_runner(tmp_path / 'full', model=ToyModel(p=0.5), max_iters=length,
                custom_hooks=[full], **common).train()
    mid = 'epoch_2.pth' if by_epoch else 'iter_2.pth'
    assert len(full.losses) == (length * 4 if by_epoch else length)

    def resumed(ckpt):
        record = Record()
        make_runner(tmp_path / f'r_{uuid.uuid4().hex}', model=ToyModel(p=0.5),
                    max_iters=length, custom_hooks=[record], resume=True,
                    load_from=str(ckpt), **common).train()
        return record

    record = resumed(tmp_path / 'full' / mid)
    start = min(record.losses)
    assert start == (8 if by_epoch else 2)
    assert record.losses == {i: v for i, v in full.losses.items() if i >= start}
    # the same checkpoint without its RNG state does not continue the run: the test can fail
    ckpt = safe_load(str(tmp_path / 'full' / mid))
    del ckpt['rng_state']
    torch.save(to_plain(ckpt), tmp_path / 'no_rng.pth')
    record = resumed(tmp_path / 'no_rng.pth')
    assert record.losses != {i: v for i, v in full.losses.items() if i >= start}
