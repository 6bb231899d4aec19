"""tools/test.py --tta: the configs' test-time augmentation.

ADE20K: the authors' mmseg-0.x --aug-test (the published "MS" mIoU): every image resized with
its aspect ratio kept to the scales (int(2048 r), int(512 r)), r = 0.5 ... 1.75, each also
flipped, softmax probabilities averaged. The sizes are checked against that rule written out
here; end to end on generated data, tools/test.py --tta runs the 12 views of each image
through the model, merges them by averaging the softmax, and its unflipped r = 1 view is the
single-scale test. RetinaNet: mmdet's 3 scales + flip; the instance-segmentation configs and a
config without a TTA are refused with errors that name them.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from dat_mm.apis import build_model_from_config, use_tta
from dat_mm.datasets import generate_ade20k_shapes, generate_coco_shapes

from small_configs import det_config, load, seg_config

ROOT = Path(__file__).resolve().parents[1]
RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
# One config per base that defines a TTA (tests/test_recipe_table.py states the TTA of every
# recipe config in the table it checks)
SEG_CONFIGS = ('configs/mmseg/upernet_dat_t_pp.py', 'configs/mmseg/fpn_dat_b_pp.py',
               'configs/mmseg/mask2former_dat_t_pp.py')
DET_CONFIGS = ('configs/mmdet/retinanet_dat_s_pp.py', 'configs/mmdet/mask_rcnn_dat_t_pp_1x.py',
               'configs/mmdet/cascade_dat_b_pp.py')
CLS_CONFIGS = ('configs/mmpretrain/dat_t_pp_in1k.py', 'configs/mmpretrain/dat_b_pp_in1k_384.py',
               'configs/mmpretrain/dat_b_in1k_384.py')


def keep_ratio_size(h, w, scale):
    """(height, width) of an h x w image resized with its aspect ratio kept to ``scale``
    (mmcv's rule, in mmcv 1.x as in the authors' mmseg 0.x): factor
    min(long / max(h, w), short / min(h, w)) for the long and short edge of ``scale``, each
    side rounded as int(side * factor + 0.5)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def aug_test_size(h, w, ratio, img_scale=(2048, 512)):
    """The size of an h x w image in the authors' aug-test at ``ratio``: mmseg 0.x's
    MultiScaleFlipAug asks Resize(keep_ratio=True) for the scale (int(W r), int(H r)) of
    ``img_scale`` (W, H)."""
    return keep_ratio_size(h, w, (int(img_scale[0] * ratio), int(img_scale[1] * ratio)))


def _test_tool():
    spec = importlib.util.spec_from_file_location('dat_mm_test_tool', ROOT / 'tools' / 'test.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tta(cfg):
    """The option lists of the config's TestTimeAug (after LoadImageFromFile)."""
    load_image, aug = cfg.tta_pipeline
    assert load_image.type == 'LoadImageFromFile' and aug.type == 'TestTimeAug'
    return aug.transforms


# -- the configs --------------------------------------------------------------------------------
def test_seg_configs_carry_the_authors_aug_test():
    pipelines = []
    for config in SEG_CONFIGS:
        cfg = load(config)
        # from mmseg::_base_/default_runtime.py (mmengine adds its _scope_)
        assert cfg.tta_model == dict(type='SegTTAModel', _scope_='mmseg'), config
        resizes, flips, annotations, pack = _tta(cfg)
        assert [(t.type, tuple(t.scale), t.keep_ratio) for t in resizes] == [
            ('Resize', (int(2048 * r), int(512 * r)), True) for r in RATIOS], config
        assert sorted((t.type, t.prob, t.direction) for t in flips) == [
            ('RandomFlip', 0., 'horizontal'), ('RandomFlip', 1., 'horizontal')]
        assert [t.type for t in annotations + pack] == ['LoadAnnotations', 'PackSegInputs']
        pipelines.append(cfg.tta_pipeline)
    assert all(p == pipelines[0] for p in pipelines)
    # the quickstart: the same ratios around its own test scale
    quick = load('configs/quickstart/upernet_dat_t_pp_synthetic.py')
    assert [tuple(t.scale) for t in _tta(quick)[0]] == [
        (int(256 * r), int(128 * r)) for r in RATIOS]


# odd shapes included: one row/column, the rounding of .5, portrait and landscape
SHAPES = [(512, 683), (375, 500), (640, 480), (2, 3000), (3000, 7), (333, 777)]


def test_seg_tta_sizes_follow_the_authors_rule():
    from mmengine.registry import init_default_scope
    from mmseg.registry import TRANSFORMS
    init_default_scope('mmseg')
    resizes, flips = _tta(load(SEG_CONFIGS[0]))[:2]
    aug = TRANSFORMS.build(dict(type='TestTimeAug', transforms=[resizes, flips]))
    rng = np.random.default_rng(0)
    for h, w in SHAPES:
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        out = aug(dict(img=img, img_shape=(h, w), ori_shape=(h, w)))
        views = [(tuple(i.shape[:2]), bool(f)) for i, f in zip(out['img'], out['flip'])]
        expected = [(aug_test_size(h, w, r), f) for r in RATIOS for f in (False, True)]
        assert views == expected, (h, w)
        for k in range(0, 12, 2):  # the flipped view is the mirror image of the other
            np.testing.assert_array_equal(out['img'][k + 1], out['img'][k][:, ::-1])
    # a few values of the rule itself, worked out by hand
    assert aug_test_size(512, 683, 0.5) == (256, 342)    # 341.5 + 0.5 rounds up
    assert aug_test_size(375, 500, 1.0) == (512, 683)
    assert aug_test_size(640, 480, 1.75) == (1195, 896)
    assert aug_test_size(2, 3000, 0.5) == (1, 1024)      # the long edge bounds it


def test_det_and_cls_configs():
    for config in DET_CONFIGS:
        cfg = load(config)
        if cfg.model.get('roi_head', {}).get('mask_head') is not None:
            assert cfg.get('tta_model') is None and cfg.get('tta_pipeline') is None, config
            with pytest.raises(ValueError, match=r'(mask_rcnn|cascade)\w*\.py: --tta is not '
                                                 r'available .*DetTTAModel merges boxes only'):
                use_tta(cfg, 'mmdet')
            continue
        assert cfg.tta_model == dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)), config
        resizes, flips, annotations, pack = _tta(cfg)
        assert [(tuple(t.scale), t.keep_ratio) for t in resizes] == [
            ((1333, 800), True), ((666, 400), True), ((2000, 1200), True)]
        assert sorted(t.prob for t in flips) == [0., 1.]
        assert {'flip', 'flip_direction'} <= set(pack[0].meta_keys)
    for config in CLS_CONFIGS:
        cfg = load(config)
        assert cfg.tta_model == dict(type='AverageClsScoreTTA'), config
        test_pipeline = cfg.test_dataloader.dataset.pipeline
        *head, aug = cfg.tta_pipeline
        assert head == test_pipeline[:-1], config
        flips, pack = aug.transforms
        assert sorted(t.prob for t in flips) == [0., 1.] and pack == test_pipeline[-1:]


# -- errors -------------------------------------------------------------------------------------
def test_tta_refused_for_instance_segmentation_and_configs_without_it(tmp_path):
    tool = _test_tool()
    config = 'configs/mmdet/mask_rcnn_dat_t_pp_1x.py'
    with pytest.raises(ValueError, match=r"mask_rcnn_dat_t_pp_1x\.py: --tta is not available "
                                         r"for MaskRCNN.*DetTTAModel merges boxes only"):
        tool.main([str(ROOT / config), str(tmp_path / 'none.pth'), '--tta'])
    cfg = load('configs/mmseg/fpn_dat_t_pp.py')
    cfg.pop('tta_pipeline')
    path = tmp_path / 'no_tta.py'
    cfg.dump(path)
    with pytest.raises(ValueError, match=r'no_tta\.py defines no tta_pipeline'):
        tool.main([str(path), str(tmp_path / 'none.pth'), '--tta'])


def test_tta_refused_for_query_based_detectors():
    """Mask2Former predicts masks from a ``panoptic_head`` (no ``mask_head`` key): refused for
    the masks, like Mask R-CNN; DINO has no TTA settings: refused for those."""
    for size in ('t', 's'):
        cfg = load(f'configs/mmdet/mask2former_dat_{size}_pp.py')
        with pytest.raises(ValueError, match=r'mask2former_dat_\w+\.py: --tta is not available '
                                             r'for Mask2Former: it predicts masks'):
            use_tta(cfg, 'mmdet')
        cfg = load(f'configs/mmdet/dino_4scale_dat_{size}_pp_12e.py')
        with pytest.raises(ValueError, match=r'dino_4scale_\w+\.py defines no tta_model and no '
                                             r'tta_pipeline'):
            use_tta(cfg, 'mmdet')


def test_checkpoint_fit_check_sees_through_the_tta_wrapper():
    """SafeCheckpointHook checks the file against the model inside the TTA wrapper (whose own
    keys carry a ``module.`` prefix), still refusing one that does not fit."""
    from types import SimpleNamespace

    from mmengine.model import BaseModel, BaseTTAModel

    from dat_mm.checkpoint import CheckpointError
    from dat_mm.engine import SafeCheckpointHook

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(2, 3)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return self.backbone(inputs)

    class Merge(BaseTTAModel):
        def merge_preds(self, data_samples_list):
            return data_samples_list

    runner = SimpleNamespace(model=Merge(module=Net()))
    hook = SafeCheckpointHook(interval=1)
    state = Net().state_dict()
    hook.after_load_checkpoint(runner, {'state_dict': dict(state)})
    wrong = dict(state, **{'backbone.weight': torch.zeros(4, 2)})
    with pytest.raises(CheckpointError, match=r'does not fit Net: .*backbone\.weight'):
        hook.after_load_checkpoint(runner, {'state_dict': wrong})


# -- end to end ---------------------------------------------------------------------------------
def _checkpoint(cfg, path):
    """The weights of the model as built (no training): enough for shapes and equalities."""
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)


def test_seg_tta_end_to_end(tmp_path, monkeypatch):
    from mmseg.models import SegTTAModel
    from mmseg.models.segmentors import EncoderDecoder
    h, w = 72, 96                    # not square: the keep-ratio rule decides the sizes
    generate_ade20k_shapes(str(tmp_path / 'ade'), num_train=1, num_val=1, image_size=(h, w))
    cfg = seg_config('configs/mmseg/upernet_dat_t_pp.py', tmp_path / 'ade', size=96)
    test_scale = next(tuple(t.scale) for t in cfg.test_dataloader.dataset.pipeline
                      if t.type == 'Resize')
    config, ckpt = tmp_path / 'small.py', tmp_path / 'weights.pth'
    cfg.dump(config)
    _checkpoint(cfg, ckpt)

    views, merged = [], []
    predict, merge = EncoderDecoder.predict, SegTTAModel.merge_preds

    def record_predict(self, inputs, data_samples=None):
        out = predict(self, inputs, data_samples)
        views.extend((tuple(s.img_shape), bool(s.get('flip', False)), s.seg_logits.data.clone())
                     for s in out)
        return out

    def record_merge(self, data_samples_list):
        out = merge(self, data_samples_list)
        merged.extend(s.pred_sem_seg.data.clone() for s in out)
        return out

    monkeypatch.setattr(EncoderDecoder, 'predict', record_predict)
    monkeypatch.setattr(SegTTAModel, 'merge_preds', record_merge)
    tool = _test_tool()
    metrics = tool.main([str(config), str(ckpt), '--tta', '--work-dir', str(tmp_path / 'tta')])
    assert 'mIoU' in metrics and 0 <= metrics['mIoU'] <= 100

    # 12 views: the aug-test sizes (around this config's test scale) x (as is, flipped)
    expected = [(aug_test_size(h, w, r, test_scale), f) for r in RATIOS for f in (False, True)]
    assert [v[:2] for v in views] == expected
    assert len(merged) == 1
    # merged: the argmax of the mean softmax of the views (each at the image size, unflipped)
    probs = torch.stack([v[2].softmax(dim=0) for v in views]).mean(dim=0)
    assert merged[0].shape == (1, h, w)
    torch.testing.assert_close(merged[0][0], probs.argmax(dim=0))

    # without --tta: one view, the test scale, which is the TTA's unflipped r = 1 view
    tta_views = list(views)
    views.clear()
    tool.main([str(config), str(ckpt), '--work-dir', str(tmp_path / 'single')])
    assert [v[:2] for v in views] == [(keep_ratio_size(h, w, test_scale), False)]
    torch.testing.assert_close(views[0][2], tta_views[4][2])


def test_det_tta_end_to_end(tmp_path, monkeypatch):
    from mmdet.models import DetTTAModel
    generate_coco_shapes(str(tmp_path / 'coco'), num_train=1, num_val=1, image_size=(64, 80))
    cfg = det_config('configs/mmdet/retinanet_dat_t_pp_1x.py', tmp_path / 'coco', 'retinanet',
                     size=64)
    config, ckpt = tmp_path / 'small.py', tmp_path / 'weights.pth'
    cfg.dump(config)
    _checkpoint(cfg, ckpt)
    seen = []
    merge = DetTTAModel.merge_preds

    def record_merge(self, data_samples_list):
        seen.extend([(tuple(s.img_shape), bool(s.flip)) for s in samples]
                    for samples in data_samples_list)
        return merge(self, data_samples_list)

    monkeypatch.setattr(DetTTAModel, 'merge_preds', record_merge)
    metrics = _test_tool().main([str(config), str(ckpt), '--tta',
                                 '--work-dir', str(tmp_path / 'work')])
    assert 'coco/bbox_mAP' in metrics
    # 1333x800, 666x400, 2000x1200 around the test scale 64x64 (keep ratio), x flip
    sizes = [keep_ratio_size(64, 80, s) for s in ((64, 64), (32, 32), (96, 96))]
    assert seen == [[(s, f) for s in sizes for f in (True, False)]]
