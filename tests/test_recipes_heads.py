"""End to end on generated data for the heads the authors released no DAT++ model for: DINO
(COCO detection), Mask2Former (COCO instance segmentation, ADE20K semantic segmentation). The
real config with a small override (tests/small_configs.py) trains 2 iterations with
tools/train.py (a real MMEngine Runner, forward and backward through the recipe's model on CPU)
and saves a checkpoint; tools/test.py evaluates it with the config's metric. The S++ and
24-epoch configs differ only in backbone size, drop_path and schedule; they are built in
tests/test_configs_dense.py.
"""
import pytest

from dat_mm.checkpoint import safe_load
from dat_mm.datasets import generate_ade20k_shapes, generate_coco_shapes

from small_configs import dino_config, mask2former_config
from tool_runs import logged_metrics, run_test_tool, train_tool

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    generate_coco_shapes(str(root / 'coco'), num_train=4, num_val=2, image_size=(96, 96))
    generate_ade20k_shapes(str(root / 'ade'), num_train=4, num_val=2, image_size=(96, 96))
    return root


# name: (config, dataset, small override, checkpoint after 2 iterations, metric keys)
CASES = {
    'dino': ('configs/mmdet/dino_4scale_dat_t_pp_12e.py', 'coco', dino_config, 'epoch_1.pth',
             ('coco/bbox_mAP', )),
    'mask2former_coco': ('configs/mmdet/mask2former_dat_t_pp.py', 'coco', mask2former_config,
                         'iter_2.pth', ('coco/bbox_mAP', 'coco/segm_mAP')),
    'mask2former_ade20k': ('configs/mmseg/mask2former_dat_t_pp.py', 'ade', mask2former_config,
                           'iter_2.pth', ('mIoU', )),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_train_then_test(name, data, tmp_path):
    config, dataset, small, ckpt_name, keys = CASES[name]
    cfg = small(config, data / dataset)
    override = tmp_path / f'{name}_small.py'
    cfg.dump(override)
    work = tmp_path / 'work'

    runner = train_tool().main([str(override), '--work-dir', str(work)])
    assert runner.iter == 2
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 2 and all(v == v and 0 < v < 1e4 for v in losses), losses
    ckpt = work / ckpt_name
    saved = safe_load(str(ckpt), map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert any(k.startswith('backbone.stages.') for k in saved['state_dict'])

    log = run_test_tool(override, ckpt, '--work-dir', tmp_path / 'test')
    metrics = logged_metrics(log)
    for key in keys:
        assert key in metrics, (key, metrics)
        assert -1.0 <= metrics[key] <= 100.0
