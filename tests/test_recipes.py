"""End to end on generated data, from the real configs with a small override:
tools/train.py (a real MMEngine Runner) trains a few iterations and saves a checkpoint,
tools/test.py evaluates it with the config's metric (CocoMetric box + mask AP, IoUMetric,
Accuracy), and tools/train.py --resume continues from the saved iteration.
And a short run on the generated shapes learns: the loss falls and box AP rises clearly
above the untrained model's.
"""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from dat_mm.checkpoint import safe_load
from dat_mm.datasets import (generate_ade20k_shapes, generate_coco_shapes,
                             generate_imagenet_shapes)

from published_layout import published_state
from small_configs import cls_config, det_config, load, quickstart_data, seg_config
from tool_runs import logged_metrics, run_test_tool, train_tool

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STARTS = []


@HOOKS.register_module(force=True)
class RecordTrainStartHook(Hook):
    """Records (epoch, iter) when training starts, i.e. after a resume has loaded."""

    def before_train(self, runner):
        TRAIN_STARTS.append((runner.epoch, runner.iter))


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    generate_coco_shapes(str(root / 'coco'), num_train=4, num_val=2, image_size=(96, 96))
    generate_ade20k_shapes(str(root / 'ade'), num_train=4, num_val=2, image_size=(96, 96))
    generate_imagenet_shapes(str(root / 'imagenet'), num_train_per_class=1,
                             num_val_per_class=1, image_size=48)
    return root


# name: (config, dataset, override kind, checkpoint after the first run, metric keys)
CASES = {
    'mask_rcnn': ('configs/mmdet/mask_rcnn_dat_t_pp_1x.py', 'coco', 'mask_rcnn',
                  'epoch_1.pth', ('coco/bbox_mAP', 'coco/segm_mAP')),
    'cascade_mask_rcnn': ('configs/mmdet/cascade_dat_t_pp_1x.py', 'coco', 'cascade',
                          'epoch_1.pth', ('coco/bbox_mAP', 'coco/segm_mAP')),
    'retinanet': ('configs/mmdet/retinanet_dat_t_pp_1x.py', 'coco', 'retinanet',
                  'epoch_1.pth', ('coco/bbox_mAP', )),
    'upernet': ('configs/mmseg/upernet_dat_t_pp.py', 'ade', 'seg', 'iter_2.pth', ('mIoU', )),
    'semantic_fpn': ('configs/mmseg/fpn_dat_t_pp.py', 'ade', 'seg', 'iter_2.pth', ('mIoU', )),
    'classifier': ('configs/mmpretrain/dat_t_pp_in1k.py', 'imagenet', 'cls', 'epoch_1.pth',
                   ('accuracy/top1', )),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_train_test_resume(name, data, tmp_path):
    config, dataset, kind, ckpt_name, keys = CASES[name]
    if not (ROOT / config).exists():
        pytest.skip(f'{config} does not exist yet')
    data_root = data / dataset
    if kind == 'seg':
        cfg, by_epoch = seg_config(config, data_root), False
    elif kind == 'cls':
        cfg, by_epoch = cls_config(config, data_root), True
    else:
        cfg, by_epoch = det_config(config, data_root, kind), True
    override = tmp_path / f'{name}_small.py'
    cfg.dump(override)
    work = tmp_path / 'work'
    tool = train_tool()

    # 1. train a few iterations with the real Runner, save a checkpoint
    runner = tool.main([str(override), '--work-dir', str(work)])
    assert runner.iter == 2
    ckpt = work / ckpt_name
    assert ckpt.is_file()
    saved = safe_load(str(ckpt), map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert any(k.startswith('backbone.stages.') for k in saved['state_dict'])

    # 2. tools/test.py evaluates the checkpoint with the config's metric
    out = tmp_path / ('preds' if kind == 'seg' else 'preds.pkl')
    show = tmp_path / 'show'
    log = run_test_tool(override, ckpt, '--work-dir', tmp_path / 'test', '--out', out,
                        '--show-dir', show)
    metrics = logged_metrics(log)
    for key in keys:
        assert key in metrics, (key, metrics)
        assert -1.0 <= metrics[key] <= 100.0
    assert out.exists()
    if kind == 'seg':
        assert len(list(out.glob('*.png'))) == 2
    # --show-dir: the scope's visualization hook drew every test image
    drawn = [p for p in show.rglob('*') if p.suffix in ('.png', '.jpg')]
    n_test = 4 if kind == 'cls' else 2          # images in the generated val split
    assert len(drawn) == n_test, sorted(str(p) for p in show.rglob('*'))

    # 2b. the same weights in the authors' published layout (mmdet 2 / mmseg 0.x state_dict,
    # ImageNet model) give exactly the same predictions: converted on the fly on load
    published = _published_copy(ckpt, kind, tmp_path / 'published.pth')
    out_pub = tmp_path / ('preds_pub' if kind == 'seg' else 'preds_pub.pkl')
    log = run_test_tool(override, published, '--work-dir', tmp_path / 'test_pub',
                        '--out', out_pub)
    assert "published layout, converted on the fly" in log
    _assert_same_predictions(out, out_pub, kind)

    # 3. --resume continues from the saved iteration
    resume_cfg = tmp_path / f'{name}_resume.py'
    length = 'max_epochs=2' if by_epoch else 'max_iters=4'
    resume_cfg.write_text(f"_base_ = '{override}'\n"
                          f"custom_hooks = [dict(type='RecordTrainStartHook')]\n"
                          f"train_cfg = dict({length})\n")
    TRAIN_STARTS.clear()
    runner = tool.main([str(resume_cfg), '--work-dir', str(work), '--resume', str(ckpt)])
    assert TRAIN_STARTS == [(1, 2) if by_epoch else (0, 2)]
    assert runner.iter == 4
    final = work / ('epoch_2.pth' if by_epoch else 'iter_4.pth')
    assert safe_load(str(final), map_location='cpu')['meta']['iter'] == 4


def _published_copy(ckpt, kind, dst):
    """The trained checkpoint's weights in the authors' published layout."""
    state = safe_load(str(ckpt), map_location='cpu')['state_dict']
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    if kind == 'cls':
        head = torch.nn.Linear(*state['head.fc.weight'].shape[::-1])
        head.load_state_dict({'weight': state['head.fc.weight'], 'bias': state['head.fc.bias']})
        torch.save({'model': published_state(backbone, 2, head=head), 'epoch': 1}, dst)
    else:
        pub = {'backbone.' + k: v for k, v in published_state(backbone, 2, dense=True).items()}
        pub.update((k, v) for k, v in state.items() if not k.startswith('backbone.'))
        torch.save({'state_dict': pub, 'meta': {'epoch': 1}}, dst)
    return dst


def _assert_same_predictions(out, out_pub, kind):
    if kind == 'seg':
        names = sorted(p.name for p in out.glob('*.png'))
        assert names and names == sorted(p.name for p in out_pub.glob('*.png'))
        for name in names:
            assert (out / name).read_bytes() == (out_pub / name).read_bytes(), name
        return
    with open(out, 'rb') as f1, open(out_pub, 'rb') as f2:  # our own dumps, plain pickles
        first, second = pickle.load(f1), pickle.load(f2)
    assert len(first) == len(second) > 0

    def same(a, b):
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        if isinstance(a, np.ndarray):
            return np.array_equal(a, b)
        return a == b

    assert same(first, second)


# ---- a short run learns ------------------------------------------------------------------
LEARN_ITERS = 48   # 2 epochs of 48 images, batch 2


@pytest.fixture(scope='module')
def learn_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('learn')
    generate_coco_shapes(str(root / 'coco'), num_train=48, num_val=8, image_size=(128, 128),
                         seed=0)
    return root / 'coco'


def test_short_run_learns_on_generated_shapes(learn_data, tmp_path):
    """The quickstart recipe (Cascade Mask R-CNN) with DAT-T++ and 2 of its 3 epochs, for CI
    time: the loss falls and box AP rises clearly above the untrained model's."""
    cfg = load('configs/quickstart/cascade_dat_s_pp_synthetic.py')
    quickstart_data(cfg, 'det', f'{learn_data}/')
    cfg.model.backbone.arch = 'tiny++'
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    override = tmp_path / 'learn.py'
    cfg.dump(override)
    tool = train_tool()
    work = tmp_path / 'work'
    # untrained: the same initialisation, evaluated before any update
    runner = tool.main([str(override), '--work-dir', str(work / 'untrained'),
                        '--cfg-options', 'train_cfg.max_epochs=0'])
    untrained = runner.test()
    runner = tool.main([str(override), '--work-dir', str(work / 'trained'), '--no-validate',
                        '--cfg-options', 'train_cfg.max_epochs=2'])
    assert runner.iter == LEARN_ITERS
    trained = runner.test()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    first, last = losses[:8].mean(), losses[-8:].mean()
    record = dict(untrained_bbox_mAP=untrained['coco/bbox_mAP'],
                  trained_bbox_mAP=trained['coco/bbox_mAP'],
                  untrained_segm_mAP=untrained['coco/segm_mAP'],
                  trained_segm_mAP=trained['coco/segm_mAP'],
                  loss_first8=float(first), loss_last8=float(last))
    (tmp_path / 'learning.json').write_text(json.dumps(record, indent=1))
    print('learning run:', record)
    assert last < 0.75 * first, record
    assert trained['coco/bbox_mAP'] >= untrained['coco/bbox_mAP'] + 0.05, record
