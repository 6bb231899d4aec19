"""The task libraries' own tools (their ``tools/`` scripts, which their wheels carry in
``<library>/.mim/tools``) run with dat_mm's configs: each tool that docs/tools.md lists as
working is run here, as a user would, on generated data with a small version of a recipe and
a checkpoint trained for a few iterations by tools/train.py (which also writes the JSON log
analyze_logs reads)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dat_mm.datasets import (generate_ade20k_shapes, generate_coco_shapes,
                             generate_imagenet_shapes)
from small_configs import cls_config, det_config, seg_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module', autouse=True)
def _mmengine_loader_restored():
    """tools/train.py installs dat_mm's loader for the process; give mmengine's back after."""
    from mmengine.runner.checkpoint import CheckpointLoader
    previous = CheckpointLoader._schemes['']
    yield
    CheckpointLoader.register_scheme(prefixes='', loader=previous, force=True)


def _library_tool(lib: str, rel: str) -> Path:
    spec = importlib.util.find_spec(lib)
    return Path(spec.origin).parent / '.mim' / 'tools' / rel


def run_tool(lib, rel, *args, cwd):
    """``python <lib>/.mim/tools/<rel> args`` in ``cwd``; returns its output."""
    proc = subprocess.run([sys.executable, str(_library_tool(lib, rel)), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert proc.returncode == 0, f'{lib} {rel}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def _train(cfg, work: Path):
    """tools/train.py on the small config: (config path, checkpoint, JSON scalar log)."""
    spec = importlib.util.spec_from_file_location('dat_mm_train_tool', ROOT / 'tools' / 'train.py')
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    work.mkdir()
    config = work / 'small.py'
    cfg.dump(config)
    train.main([str(config), '--work-dir', str(work)])
    ckpt = (work / 'last_checkpoint').read_text().strip()
    (log,) = work.glob('*/vis_data/scalars.json')
    return config, Path(ckpt), log


@pytest.fixture(scope='module')
def det(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('det_tools')
    generate_coco_shapes(str(tmp / 'coco'), num_train=2, num_val=2, image_size=(64, 80))
    cfg = det_config('configs/mmdet/mask_rcnn_dat_t_pp_1x.py', tmp / 'coco', 'mask_rcnn',
                     size=64)
    return (tmp,) + _train(cfg, tmp / 'work')


@pytest.fixture(scope='module')
def seg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('seg_tools')
    generate_ade20k_shapes(str(tmp / 'ade'), num_train=2, num_val=2, image_size=(64, 80))
    cfg = seg_config('configs/mmseg/upernet_dat_t_pp.py', tmp / 'ade', size=64)
    return (tmp,) + _train(cfg, tmp / 'work')


@pytest.fixture(scope='module')
def cls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('cls_tools')
    generate_imagenet_shapes(str(tmp / 'imagenet'), num_train_per_class=1,
                             num_val_per_class=1, image_size=48)
    cfg = cls_config('configs/mmpretrain/dat_t_pp_in1k.py', tmp / 'imagenet', size=48)
    return (tmp,) + _train(cfg, tmp / 'work')


def _pngs(directory: Path):
    return sorted(directory.rglob('*.png')) + sorted(directory.rglob('*.jpg'))


# -- mmdet -------------------------------------------------------------------------------------
def test_mmdet_test_and_confusion_matrix(det):
    tmp, config, ckpt, _ = det
    out = run_tool('mmdet', 'test.py', config, ckpt, '--work-dir', tmp / 'mmdet_test',
                   '--out', tmp / 'results.pkl', cwd=tmp)
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    run_tool('mmdet', 'analysis_tools/confusion_matrix.py', config, tmp / 'results.pkl',
             tmp / 'cm', '--score-thr', '0', cwd=tmp)
    assert (tmp / 'cm' / 'confusion_matrix.png').is_file()


def test_mmdet_browse_dataset(det):
    tmp, config, _, _ = det
    run_tool('mmdet', 'analysis_tools/browse_dataset.py', config, '--not-show',
             '--output-dir', tmp / 'browse', cwd=tmp)
    assert len(_pngs(tmp / 'browse')) == 2


def test_mmdet_analyze_logs(det):
    tmp, _, _, log = det
    out = run_tool('mmdet', 'analysis_tools/analyze_logs.py', 'cal_train_time', log, cwd=tmp)
    assert 'average iter time' in out
    run_tool('mmdet', 'analysis_tools/analyze_logs.py', 'plot_curve', log, '--keys', 'loss',
             '--out', tmp / 'loss.png', cwd=tmp)
    assert (tmp / 'loss.png').is_file()


def _published(ckpt: Path) -> Path:
    """tools/model_converters/publish_model.py: the weights of a Runner checkpoint alone, in a
    file that plain torch.load (weights_only) reads."""
    import torch
    out = ckpt.with_name(ckpt.stem + '_weights.pth')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'model_converters' /
                                               'publish_model.py'), str(ckpt), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert set(torch.load(out, weights_only=True)) == {'state_dict', 'meta'}
    return out


def test_plain_mmengine_loading_reads_dat_mm_checkpoints(det):
    """Outside a Runner, scripts load with mmengine's load_checkpoint (plain torch.load,
    weights_only by default): a Runner checkpoint of dat_mm's and its published weights both
    load into the config's model, strictly."""
    from mmengine.config import Config
    from mmengine.runner.checkpoint import load_from_local  # mmengine's own: plain torch.load

    from dat_mm.apis import build_model_from_config
    _, config, ckpt, _ = det
    model = build_model_from_config(Config.fromfile(str(config)))
    for weights in (ckpt, _published(ckpt)):
        model.load_state_dict(load_from_local(str(weights), 'cpu')['state_dict'], strict=True)


def test_mmdet_benchmark_data_pipeline(det):
    """--task dataloader / dataset (the inference task moves the model to CUDA: GPU only)."""
    tmp, config, _, _ = det
    for task in ('dataloader', 'dataset'):
        out = run_tool('mmdet', 'analysis_tools/benchmark.py', config, '--task', task,
                       '--max-iter', 2, '--num-warmup', 0, '--log-interval', 1, cwd=tmp)
        assert 'fps' in out.lower(), task


# -- mmseg -------------------------------------------------------------------------------------
def test_mmseg_test(seg):
    tmp, config, ckpt, _ = seg
    out = run_tool('mmseg', 'test.py', config, ckpt, '--work-dir', tmp / 'mmseg_test',
                   '--out', tmp / 'preds', cwd=tmp)
    assert 'mIoU' in out
    assert len(_pngs(tmp / 'preds')) == 2


def test_mmseg_analyze_logs(seg):
    tmp, _, _, log = seg
    run_tool('mmseg', 'analysis_tools/analyze_logs.py', log, '--keys', 'loss',
             '--out', tmp / 'loss.png', cwd=tmp)
    assert (tmp / 'loss.png').is_file()


def test_mmseg_benchmark(seg):
    tmp, config, ckpt, _ = seg
    for weights in (ckpt, _published(ckpt)):  # a Runner checkpoint of dat_mm's, weights
        out = run_tool('mmseg', 'analysis_tools/benchmark.py', config, weights,
                       '--log-interval', 1, '--work-dir', tmp / 'bench', cwd=tmp)
        assert 'fps' in out.lower()


# -- mmpretrain --------------------------------------------------------------------------------
def test_mmpretrain_test_and_confusion_matrix(cls):
    tmp, config, ckpt, _ = cls
    out = run_tool('mmpretrain', 'test.py', config, ckpt, '--work-dir', tmp / 'test',
                   '--out', tmp / 'results.pkl', cwd=tmp)
    assert 'accuracy/top1' in out
    run_tool('mmpretrain', 'analysis_tools/confusion_matrix.py', config, tmp / 'results.pkl',
             '--out', tmp / 'cm.pkl', cwd=tmp)
    assert (tmp / 'cm.pkl').is_file()


def test_mmpretrain_browse_dataset(cls):
    tmp, config, _, _ = cls
    run_tool('mmpretrain', 'visualization/browse_dataset.py', config, '--not-show',
             '--output-dir', tmp / 'browse', '--phase', 'val', '--mode', 'original', cwd=tmp)
    assert len(_pngs(tmp / 'browse')) >= 2


def test_mmpretrain_analyze_logs(cls):
    tmp, _, _, log = cls
    out = run_tool('mmpretrain', 'analysis_tools/analyze_logs.py', 'cal_train_time', log,
                   cwd=tmp)
    assert 'average iter time' in out
    assert json.loads(log.read_text().splitlines()[0])
