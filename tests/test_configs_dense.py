"""Every config under configs/ loads and builds its model offline; the detection and
segmentation configs state the published DAT++ recipes (the authors' DAT-Detection /
DAT-Segmentation configs, docs/recipes.md); the paramwise rules select exactly the parameters
the authors excluded from weight decay; a published RetinaNet checkpoint loads strictly; the
UperNet schedule is mmcv's; tools/train.py adapts GPU recipes to CPU as documented.
"""
import importlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

from dat_mm import DAT

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts and '__pycache__' not in p.parts)
DIMS = {'tiny++': [64, 128, 256, 512], 'small++': [96, 192, 384, 768],
        'base++': [128, 256, 512, 1024]}


def _id(path):
    return str(path.relative_to(ROOT / 'configs'))


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def build_model(cfg):
    scope = cfg.default_scope
    init_default_scope(scope)
    return importlib.import_module(f'{scope}.registry').MODELS.build(cfg.model)


def test_the_dense_configs_exist():
    names = {_id(p) for p in CONFIGS}
    expected = {f'mmdet/{n}.py' for n in (
        'mask_rcnn_dat_t_pp', 'mask_rcnn_dat_t_pp_1x', 'mask_rcnn_dat_s_pp',
        'mask_rcnn_dat_s_pp_1x', 'cascade_dat_t_pp', 'cascade_dat_t_pp_1x', 'cascade_dat_s_pp',
        'cascade_dat_b_pp', 'retinanet_dat_t_pp', 'retinanet_dat_t_pp_1x', 'retinanet_dat_s_pp',
        'retinanet_dat_s_pp_1x')}
    expected |= {f'mmseg/{k}_dat_{s}_pp.py' for k in ('upernet', 'fpn') for s in 'tsb'}
    expected |= {'quickstart/cascade_dat_s_pp_synthetic.py',
                 'quickstart/upernet_dat_t_pp_synthetic.py'}
    expected |= set(HEADS)  # the heads without a published DAT++ model
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize('path', CONFIGS, ids=_id)
def test_config_loads_and_builds_offline(path):
    cfg = Config.fromfile(str(path))
    assert cfg.default_scope in ('mmdet', 'mmseg', 'mmpretrain')
    # mmdet configs also register the checked COCO dataset / metric (tests/test_coco_checks.py);
    # mmseg's Mask2Former recipe imports mmdet's models (its pixel decoder, losses, assigner)
    imports = ['dat_mm'] + (['dat_mm.datasets.coco_checks'] if cfg.default_scope == 'mmdet'
                            else [])
    if cfg.default_scope == 'mmseg' and cfg.model.decode_head.type == 'Mask2FormerHead':
        imports.append('mmdet.models')
    assert cfg.custom_imports == dict(imports=imports, allow_failed_imports=False)
    remote = [s for s in _strings(cfg.to_dict()) if '://' in s]
    assert not remote, f'remote resources in an offline config: {remote}'
    model = build_model(cfg)
    assert isinstance(model.backbone, DAT)
    backbone = cfg.model.backbone
    if cfg.default_scope == 'mmpretrain':
        return
    # what reads the backbone's maps takes their channels: the neck (FPN, DINO's
    # ChannelMapper), else mmdet's Mask2Former pixel decoder (panoptic_head.in_channels) or the
    # segmentor's decode head; UperNet's auxiliary FCN head reads stage 2
    outs = model.backbone.out_channels
    reader = next(cfg.model[k] for k in ('neck', 'panoptic_head', 'decode_head')
                  if k in cfg.model)
    assert list(reader.in_channels) == outs
    upernet = cfg.model.get('decode_head', {}).get('type') == 'UPerHead'
    assert ('auxiliary_head' in cfg.model) == upernet
    if upernet:
        assert cfg.model.auxiliary_head.in_channels == DIMS[backbone.arch][2]
    assert list(outs) == [DIMS[backbone.arch][i] for i in backbone.out_indices]
    init = backbone.get('init_cfg')
    if path.parent.name != 'quickstart':
        # pretrained weights named through a path variable the user sets
        assert init == dict(type='Pretrained', checkpoint=cfg.pretrained)
        assert cfg.pretrained.startswith('checkpoints/dat_') and cfg.pretrained.endswith('.pth')


def test_missing_pretrained_weights_are_an_error(tmp_path):
    """Configs name a default weights path; without the file nothing trains silently from
    random weights: the error names the path and the two ways out."""
    cfg = Config.fromfile(str(ROOT / 'configs/mmdet/retinanet_dat_t_pp_1x.py'))
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'absent.pth')
    model = build_model(cfg)
    with pytest.raises(FileNotFoundError) as err:
        model.init_weights()
    assert str(tmp_path / 'absent.pth') in str(err.value)
    assert 'dat_official_to_mm.py' in str(err.value)
    assert 'model.backbone.init_cfg=None' in str(err.value)
    cfg.model.backbone.init_cfg = dict(type='Pretrained')
    with pytest.raises(ValueError, match='names no checkpoint'):
        build_model(cfg).init_weights()


# ---- the published recipes ------------------------------------------------------------------
# file: (detector, arch, schedule, drop_path, lr, fp16, images per GPU)
DET = {
    'mask_rcnn_dat_t_pp.py': ('MaskRCNN', 'tiny++', '3x', 0.3, 4e-4, True, 2),
    'mask_rcnn_dat_t_pp_1x.py': ('MaskRCNN', 'tiny++', '1x', 0.0, 4e-4, True, 2),
    'mask_rcnn_dat_s_pp.py': ('MaskRCNN', 'small++', '3x', 0.5, 4e-4, True, 2),
    'mask_rcnn_dat_s_pp_1x.py': ('MaskRCNN', 'small++', '1x', 0.1, 4e-4, True, 2),
    'cascade_dat_t_pp.py': ('CascadeRCNN', 'tiny++', '3x', 0.1, 4e-4, True, 2),
    'cascade_dat_t_pp_1x.py': ('CascadeRCNN', 'tiny++', '1x', 0.0, 4e-4, True, 2),
    'cascade_dat_s_pp.py': ('CascadeRCNN', 'small++', '3x', 0.5, 4e-4, False, 2),
    'cascade_dat_b_pp.py': ('CascadeRCNN', 'base++', '3x', 0.8, 4e-4, False, 1),
    'retinanet_dat_t_pp.py': ('RetinaNet', 'tiny++', '3x', 0.2, 2e-4, True, 2),
    'retinanet_dat_t_pp_1x.py': ('RetinaNet', 'tiny++', '1x', 0.0, 2e-4, True, 2),
    'retinanet_dat_s_pp.py': ('RetinaNet', 'small++', '3x', 0.5, 2e-4, True, 2),
    'retinanet_dat_s_pp_1x.py': ('RetinaNet', 'small++', '1x', 0.1, 2e-4, True, 2),
}
MS_SCALES = [(s, 1333) for s in range(480, 801, 32)]


@pytest.mark.parametrize('name', sorted(DET))
def test_detection_recipe_is_the_published_one(name):
    detector, arch, sched, drop_path, lr, fp16, per_gpu = DET[name]
    cfg = Config.fromfile(str(ROOT / 'configs' / 'mmdet' / name))
    assert cfg.model.type == detector
    bb = cfg.model.backbone
    assert (bb.type, bb.arch, bb.drop_path_rate, bb.with_cp) == ('DAT', arch, drop_path, True)
    # optimiser: AdamW, wd 0.05, no decay on norm layers and the authors' table custom_keys
    # (their 'norm' key selects only norm layers), which do not list the neighbourhood
    # attention's `rpb` (decayed in every published recipe)
    ow = cfg.optim_wrapper
    assert ow.type == ('AmpOptimWrapper' if fp16 else 'OptimWrapper')
    assert ow.get('loss_scale') == ('dynamic' if fp16 else None)
    assert ow.optimizer == dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05)
    assert ow.get('constructor', 'DefaultOptimWrapperConstructor') == \
        'DefaultOptimWrapperConstructor'
    assert ow.paramwise_cfg == dict(norm_decay_mult=0.0, custom_keys={
        key: dict(decay_mult=0.0) for key in ('rpe_table', 'relative_position_bias_table')})
    # total batch 64 (2 x 32 GPUs; B++ 1 x 64) recorded for --auto-scale-lr
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=64)
    assert cfg.train_dataloader.batch_size == per_gpu
    # 1x / 3x with a 500-iteration linear warm-up
    epochs, steps = (12, [8, 11]) if sched == '1x' else (36, [27, 33])
    assert cfg.train_cfg.max_epochs == epochs
    warmup, step = cfg.param_scheduler
    assert (warmup.type, warmup.by_epoch, warmup.begin, warmup.end,
            warmup.start_factor) == ('LinearLR', False, 0, 500, 0.001)
    assert (step.type, step.milestones, step.gamma, step.end) == ('MultiStepLR', steps, 0.1,
                                                                   epochs)
    # the DETR-style multi-scale + crop augmentation the authors used
    pipe = cfg.train_dataloader.dataset.pipeline
    choice = next(t for t in pipe if t.type == 'RandomChoice')
    single, crop = choice.transforms
    assert single == [dict(type='RandomChoiceResize', scales=MS_SCALES, keep_ratio=True)]
    assert [t.type for t in crop] == ['RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']
    assert crop[0].scales == [(400, 1333), (500, 1333), (600, 1333)]
    assert (crop[1].crop_type, crop[1].crop_size) == ('absolute_range', (384, 600))
    assert crop[2].scales == MS_SCALES
    masks = detector != 'RetinaNet'
    load = next(t for t in pipe if t.type == 'LoadAnnotations')
    assert load.get('with_mask', False) == masks
    assert cfg.val_evaluator.metric == (['bbox', 'segm'] if masks else 'bbox')
    # the authors' necks / heads
    neck = cfg.model.neck
    if detector == 'MaskRCNN':
        assert neck.add_extra_convs == 'on_input' and neck.num_outs == 5
    if detector == 'CascadeRCNN':
        assert not neck.get('add_extra_convs')
        heads = cfg.model.roi_head.bbox_head
        assert [h.type for h in heads] == ['ConvFCBBoxHead'] * 3
        assert all(h.num_shared_convs == 4 and h.num_shared_fcs == 1 and h.reg_decoded_bbox
                   and h.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
                   and h.norm_cfg.type == 'SyncBN' for h in heads)
        assert [h.bbox_coder.target_stds for h in heads] == [
            [0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
    if detector == 'RetinaNet':
        # C3..C5 into FPN, P6/P7 from C5: the published RetinaNet neck. The authors' backbone
        # has out_indices=(1, 2, 3) (no stage-0 output norm); here it returns exactly those
        # stages, so every parameter is used
        assert bb.out_indices == (1, 2, 3)
        assert list(neck.in_channels) == DIMS[arch][1:]
        assert (neck.start_level, neck.add_extra_convs, neck.num_outs) == (0, 'on_input', 5)
        assert not cfg.get('find_unused_parameters', False)


# file: (decode head, arch, drop_path, fp16). UperNet T++ / S++ used the Fp16OptimizerHook,
# B++ fp32 (upn_base_160k_dp07_lr6.py: fp16=None, plain OptimizerHook); Semantic FPN fp32.
SEG = {
    'upernet_dat_t_pp.py': ('UPerHead', 'tiny++', 0.3, True),
    'upernet_dat_s_pp.py': ('UPerHead', 'small++', 0.5, True),
    'upernet_dat_b_pp.py': ('UPerHead', 'base++', 0.7, False),
    'fpn_dat_t_pp.py': ('FPNHead', 'tiny++', 0.4, False),
    'fpn_dat_s_pp.py': ('FPNHead', 'small++', 0.4, False),
    'fpn_dat_b_pp.py': ('FPNHead', 'base++', 0.7, False),
}


@pytest.mark.parametrize('name', sorted(SEG))
def test_segmentation_recipe_is_the_published_one(name):
    head, arch, drop_path, fp16 = SEG[name]
    cfg = Config.fromfile(str(ROOT / 'configs' / 'mmseg' / name))
    bb = cfg.model.backbone
    upernet = head == 'UPerHead'
    assert (bb.type, bb.arch, bb.drop_path_rate, bb.with_cp) == ('DAT', arch, drop_path, upernet)
    assert cfg.model.decode_head.type == head and cfg.model.decode_head.num_classes == 150
    assert cfg.model.pretrained is None
    # ADE20K, 512x512 crops, reduce_zero_label
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    assert cfg.model.data_preprocessor.size == (512, 512)
    crop = next(t for t in cfg.train_pipeline if t.type == 'RandomCrop')
    assert crop.crop_size == (512, 512)
    assert next(t for t in cfg.train_pipeline
                if t.type == 'LoadAnnotations').reduce_zero_label is True
    assert (cfg.val_evaluator.type, cfg.val_evaluator.iou_metrics) == ('IoUMetric', ['mIoU'])
    ow = cfg.optim_wrapper
    assert ow.type == ('AmpOptimWrapper' if fp16 else 'OptimWrapper')
    assert ow.get('loss_scale') == ('dynamic' if fp16 else None)
    if upernet:
        # AdamW 6e-5, wd 0.01, poly(1.0) over all 160k iterations times a 1500-iteration
        # linear warm-up (mmcv's warm-up on the regular schedule), 2 x 8 GPUs
        assert ow.optimizer == dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                                    weight_decay=0.01)
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end,
                warmup.by_epoch) == ('LinearLR', 1e-6, 0, 1500, False)
        assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end, poly.by_epoch) == (
            'PolyLR', 1.0, 0.0, 0, 160000, False)
        assert cfg.train_cfg.max_iters == 160000
        assert (cfg.train_dataloader.batch_size, cfg.auto_scale_lr.base_batch_size) == (2, 16)
        assert cfg.model.auxiliary_head.type == 'FCNHead'
    else:
        # the "80k" Semantic FPN schedule as published: 40k iterations at 4 x 8 GPUs
        assert ow.optimizer == dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                                    weight_decay=1e-4)
        (poly,) = cfg.param_scheduler
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9, 0.0, 40000)
        assert cfg.train_cfg.max_iters == 40000
        assert (cfg.train_dataloader.batch_size, cfg.auto_scale_lr.base_batch_size) == (4, 32)
    assert cfg.auto_scale_lr.enable is False
    # the authors' segmentation rule: their 'norm' key (every backbone LayerNorm) as
    # backbone_norm_decay_mult, the table keys (their 'absolute_pos_embed' matches nothing in
    # DAT); no norm_decay_mult (the heads' BN), and no `rpb`: it is decayed as published
    assert ow.constructor == 'DATOptimWrapperConstructor'
    assert ow.paramwise_cfg == dict(backbone_norm_decay_mult=0.0, custom_keys={
        key: dict(decay_mult=0.0) for key in ('rpe_table', 'relative_position_bias_table')})


# ---- heads without a published DAT++ model ---------------------------------------------------
# file: (arch, drop_path, library, the library config whose recipe it follows: mmdet's / mmseg's
# Swin-T / Swin-S config for the head, or for DINO, which mmdet has with ResNet-50 and Swin-L
# only, the R50 4-scale one of the same schedule)
HEADS = {
    'mmdet/dino_4scale_dat_t_pp_12e.py': ('tiny++', 0.0, 'mmdet',
                                          'dino/dino-4scale_r50_8xb2-12e_coco.py'),
    'mmdet/dino_4scale_dat_t_pp_24e.py': ('tiny++', 0.1, 'mmdet',
                                          'dino/dino-4scale_r50_8xb2-24e_coco.py'),
    'mmdet/dino_4scale_dat_s_pp_12e.py': ('small++', 0.1, 'mmdet',
                                          'dino/dino-4scale_r50_8xb2-12e_coco.py'),
    'mmdet/dino_4scale_dat_s_pp_24e.py': ('small++', 0.3, 'mmdet',
                                          'dino/dino-4scale_r50_8xb2-24e_coco.py'),
    'mmdet/mask2former_dat_t_pp.py': (
        'tiny++', 0.3, 'mmdet', 'mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py'),
    'mmdet/mask2former_dat_s_pp.py': (
        'small++', 0.5, 'mmdet', 'mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py'),
    'mmseg/mask2former_dat_t_pp.py': (
        'tiny++', 0.3, 'mmseg', 'mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py'),
    'mmseg/mask2former_dat_s_pp.py': (
        'small++', 0.5, 'mmseg', 'mask2former/mask2former_swin-s_8xb2-160k_ade20k-512x512.py'),
}


def _library_config(library, name):
    """A config the installed mmdet / mmseg carries (its ``.mim/configs``)."""
    package = importlib.import_module(library)
    return Config.fromfile(str(Path(package.__file__).parent / '.mim' / 'configs' / name))


def _plain(node):
    """Dicts, lists and values of a config, without the ``_scope_`` marks that inheriting a
    ``mmdet::`` / ``mmseg::`` base adds."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(_plain(v) for v in node)
    return node


def _recipe_part(cfg):
    """The config without what a DAT++ config replaces in a library recipe: the backbone and
    the channels read from it, the weights path and the Swin configs' helper variables, the
    imports, the parameter-wise optimiser rules, the checkpoint hook's type, the dataset and
    metric types and the test-time augmentation (each checked on its own)."""
    d = _plain(cfg.to_dict())
    for key in ('pretrained', 'depths', 'backbone_norm_multi', 'backbone_embed_multi',
                'embed_multi', 'custom_keys', 'custom_imports', 'img_scale', 'tta_pipeline'):
        d.pop(key, None)
    model = d['model']
    del model['backbone']
    del next(model[k] for k in ('neck', 'panoptic_head', 'decode_head') if k in model)[
        'in_channels']
    del d['optim_wrapper']['paramwise_cfg']
    d['optim_wrapper'].pop('constructor', None)
    del d['default_hooks']['checkpoint']['type']
    for key in LOADERS:
        del d[key]['dataset']['type']
    for key in ('val_evaluator', 'test_evaluator'):
        del d[key]['type']
    return d


LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


@pytest.mark.parametrize('name', sorted(HEADS))
def test_head_config_is_the_library_recipe_with_a_dat_backbone(name):
    """Everything but the backbone is the library's recipe for the head (model, data, schedule,
    optimiser, hooks); the backbone and the rules that concern it are stated here."""
    arch, drop_path, library, recipe = HEADS[name]
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    ref = _library_config(library, recipe)
    assert _recipe_part(cfg) == _recipe_part(ref)

    bb = cfg.model.backbone
    dino = cfg.model.type == 'DINO'
    # DINO-4scale: C3..C5 (the stages the R50 4-scale model uses), the 4th level from the
    # ChannelMapper; Mask2Former: all four stages into the pixel decoder
    out_indices = (1, 2, 3) if dino else (0, 1, 2, 3)
    assert (bb.type, bb.arch, bb.drop_path_rate, bb.with_cp, bb.out_indices) == (
        'DAT', arch, drop_path, True, out_indices)
    assert bb.init_cfg == dict(type='Pretrained', checkpoint=cfg.pretrained)
    assert cfg.pretrained == f'checkpoints/dat_{arch[0]}_pp_in1k_backbone.pth'
    if dino:
        levels = cfg.model.get('num_feature_levels', 4)  # DeformableDETR's default
        assert levels == cfg.model.neck.num_outs == len(out_indices) + 1 == 4
        assert cfg.model.encoder.layer_cfg.self_attn_cfg.num_levels == levels
        assert cfg.model.decoder.layer_cfg.cross_attn_cfg.num_levels == levels

    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    if cfg.default_scope == 'mmdet':
        assert all(cfg[k].dataset.type == 'CheckedCocoDataset' for k in LOADERS)
        assert cfg.val_evaluator.type == cfg.test_evaluator.type == 'CheckedCocoMetric'
    else:
        assert all(cfg[k].dataset.type == ref[k].dataset.type == 'ADE20KDataset'
                   for k in LOADERS)
        assert cfg.val_evaluator.type == cfg.test_evaluator.type == 'IoUMetric'
        # --tta: the multi-scale + flip test of every ADE20K config here
        aug_test = Config.fromfile(str(ROOT / 'configs/mmseg/_base_/ade20k_aug_test.py'))
        assert _plain(cfg.tta_pipeline) == _plain(aug_test.tta_pipeline)
        assert cfg.tta_model.type == 'SegTTAModel'

    # the recipe's rules for the head; its backbone lr (x0.1) for the whole backbone, whose
    # LayerNorms and position tables get no weight decay (`rpb` is decayed)
    ow, ref_pw = cfg.optim_wrapper, ref.optim_wrapper.paramwise_cfg
    assert ow.constructor == 'DATOptimWrapperConstructor'
    assert ref_pw.custom_keys['backbone']['lr_mult'] == 0.1
    head_keys = {k: v for k, v in _plain(ref_pw.custom_keys).items()
                 if not k.startswith('backbone')
                 and k not in ('absolute_pos_embed', 'relative_position_bias_table')}
    assert set(head_keys) == (set() if dino else {'query_embed', 'query_feat', 'level_embed'})
    table = dict(lr_mult=0.1, decay_mult=0.0)
    assert _plain(ow.paramwise_cfg) == dict(
        {'norm_decay_mult': ref_pw.norm_decay_mult} if 'norm_decay_mult' in ref_pw else {},
        backbone_norm_decay_mult=0.0,
        custom_keys=dict(head_keys, backbone=dict(lr_mult=0.1), rpe_table=table,
                         relative_position_bias_table=table))


@pytest.mark.parametrize('name', ['mmdet/dino_4scale_dat_t_pp_12e.py',
                                  'mmdet/mask2former_dat_t_pp.py',
                                  'mmseg/mask2former_dat_t_pp.py'])
def test_head_config_optimiser_groups(name):
    """The parameter groups the configs build: the backbone at lr x0.1, without weight decay on
    its LayerNorms, `rpe_table` and `relative_position_bias_table` (its `rpb` decayed); the
    head as its recipe: Mask2Former without decay on its norm layers and on query_embed /
    query_feat / level_embed, DINO with decay on everything."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg)
    assert cfg.optim_wrapper.type == 'OptimWrapper'  # fp32, as the recipes
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    group_of = {id(g['params'][0]): g for g in optim.optimizer.param_groups}
    lr, wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    mask2former = 'mask2former' in name
    modules = dict(model.named_modules())
    counts = dict(backbone_exempt=0, head_exempt=0, rpb=0)
    for pname, p in model.named_parameters():
        norm = isinstance(modules[pname.rpartition('.')[0]], NORM_LAYERS)
        if pname.startswith('backbone.'):
            expected_lr = 0.1 * lr
            exempt = norm or pname.endswith(('.rpe_table', '.relative_position_bias_table'))
            counts['backbone_exempt'] += exempt
            counts['rpb'] += pname.endswith('.rpb')
        else:
            expected_lr = lr
            exempt = mask2former and (norm or any(
                key in pname for key in ('query_embed', 'query_feat', 'level_embed')))
            counts['head_exempt'] += exempt
        group = group_of[id(p)]
        assert group['lr'] == pytest.approx(expected_lr), pname
        assert group['weight_decay'] == (0.0 if exempt else pytest.approx(wd)), pname
    assert len(group_of) == len(list(model.parameters()))
    assert counts['backbone_exempt'] > 0 and counts['rpb'] > 0
    assert (counts['head_exempt'] > 0) == mask2former


# ---- weight decay rules -----------------------------------------------------------------
# The authors' det/seg configs: AdamW with paramwise_cfg custom_keys (mmcv 1.x, matched as
# substrings of the full parameter name) and, for detection, norm_decay_mult=0.
AUTHORS_KEYS = ('absolute_pos_embed', 'relative_position_bias_table', 'rpe_table', 'norm')
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
               nn.GroupNorm, nn.LayerNorm)


def _decays(cfg):
    from mmengine.optim import build_optim_wrapper
    model = build_model(cfg)
    ow_cfg = cfg.optim_wrapper.copy()
    ow_cfg.type = 'OptimWrapper'            # AmpOptimWrapper needs a GPU
    ow_cfg.pop('loss_scale', None)
    optim = build_optim_wrapper(model, ow_cfg)
    decay_of = {}
    for group in optim.optimizer.param_groups:
        for p in group['params']:
            decay_of[id(p)] = group['weight_decay']
    return model, decay_of


def _published_name(name, version):
    """A det/seg model's parameter name as in the authors' mmdet 2 / mmseg 0.x model."""
    from published_layout import _published_key
    if name.startswith('backbone.'):
        return 'backbone.' + _published_key(name[len('backbone.'):], version, dense=True)
    return name  # necks and heads keep their names (dat_mm.converters.DENSE_HEAD_PREFIXES)


@pytest.mark.parametrize('config,arch', [('mmdet/mask_rcnn_dat_t_pp_1x.py', 'tiny++'),
                                         ('mmdet/cascade_dat_t_pp_1x.py', 'tiny++'),
                                         ('mmdet/retinanet_dat_t_pp_1x.py', 'tiny++'),
                                         ('mmseg/upernet_dat_t_pp.py', 'tiny++'),
                                         ('mmseg/fpn_dat_t_pp.py', 'tiny++'),
                                         ('mmseg/upernet_dat_t_pp.py', 'tiny')])
def test_weight_decay_follows_the_authors_dense_rule(config, arch):
    """Exactly the parameters the authors' optimiser constructor exempted get no weight decay:
    their custom_keys applied to the published parameter names, plus (detection) every norm
    layer; everything else, the neighbourhood attention's `rpb` included, is decayed."""
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    cfg.model.backbone.arch = arch
    cfg.model.backbone.init_cfg = None
    dims = [96, 192, 384, 768] if arch == 'tiny' else DIMS[arch]
    dims = [dims[i] for i in cfg.model.backbone.out_indices]
    if 'neck' in cfg.model:
        cfg.model.neck.in_channels = dims
    else:
        cfg.model.decode_head.in_channels = dims
        cfg.model.auxiliary_head.in_channels = dims[2]
    model, decay_of = _decays(cfg)
    wd = cfg.optim_wrapper.optimizer.weight_decay
    version = 1 if arch == 'tiny' else 2
    detection = cfg.default_scope == 'mmdet'
    modules = dict(model.named_modules())
    checked = set()
    for name, p in model.named_parameters():
        published = _published_name(name, version)
        in_norm_layer = isinstance(modules[name.rsplit('.', 1)[0]], NORM_LAYERS)
        exempt = (any(key in published for key in AUTHORS_KEYS)
                  or (detection and in_norm_layer))
        assert decay_of[id(p)] == (0.0 if exempt else pytest.approx(wd)), (name, published)
        checked.add(id(p))
    assert checked == set(decay_of)
    names = [n for n, _ in model.named_parameters()]
    if version == 2:
        rpb = [p for n, p in model.named_parameters() if n.endswith('.rpb')]
        assert rpb and all(decay_of[id(p)] == pytest.approx(wd) for p in rpb)
        assert any(n.endswith('.rpe_table') for n in names)
    else:
        assert any(n.endswith('.relative_position_bias_table') for n in names)
    # the heads' BN: no decay in detection (norm_decay_mult=0), decayed in segmentation
    # (the authors' 'norm' key does not match ConvModule's 'bn')
    head_bn = [p for n, m in model.named_modules() if not n.startswith('backbone')
               and isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()]
    if 'cascade' in config or cfg.default_scope == 'mmseg':
        assert head_bn
    assert all(decay_of[id(p)] == (0.0 if detection else pytest.approx(wd)) for p in head_bn)


def test_dense_decay_keys_match_only_what_they_name():
    """mmengine matches custom_keys as substrings of the parameter name: in DAT++ and v1, the
    table keys match only those tables; 'norm' (the authors' key) only LayerNorm parameters;
    and the backbone's normalisation layers (backbone_norm_decay_mult) are all LayerNorms."""
    for arch in ('tiny++', 'tiny'):
        model = DAT(arch=arch, out_indices=(0, 1, 2, 3))
        modules = dict(model.named_modules())
        for name, _ in model.named_parameters():
            leaf = name.rsplit('.', 1)[-1]
            for key in ('rpe_table', 'relative_position_bias_table'):
                assert (key in name) == (leaf == key), name
            if 'norm' in name:
                assert isinstance(modules[name.rsplit('.', 1)[0]], nn.LayerNorm), name
        norms = [m for m in model.modules() if isinstance(m, NORM_LAYERS)]
        assert norms and all(isinstance(m, nn.LayerNorm) for m in norms)


class _Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 1), nn.LayerNorm(4), nn.BatchNorm2d(4))
        self.backbone.register_parameter('rpe_table', nn.Parameter(torch.zeros(3)))
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.LayerNorm(4))


def _weight_decays(paramwise_cfg, model=None, constructor='DATOptimWrapperConstructor'):
    from mmengine.optim import build_optim_wrapper
    model = model or _Detector()
    optim = build_optim_wrapper(model, dict(
        constructor=constructor, paramwise_cfg=paramwise_cfg,
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1)))
    decay = {id(p): g['weight_decay'] for g in optim.optimizer.param_groups for p in g['params']}
    return {name: decay[id(p)] for name, p in model.named_parameters()}


def test_backbone_norm_decay_mult():
    """DATOptimWrapperConstructor: backbone_norm_decay_mult scales the decay of the backbone's
    normalisation layers (by type, whatever their names) and of nothing else; custom_keys take
    precedence, as over mmengine's own rules; other norm layers keep norm_decay_mult."""
    wd = 0.1
    got = _weight_decays(dict(backbone_norm_decay_mult=0.5))
    assert got == pytest.approx({
        'backbone.0.weight': wd, 'backbone.0.bias': wd, 'backbone.rpe_table': wd,
        'backbone.1.weight': wd / 2, 'backbone.1.bias': wd / 2,
        'backbone.2.weight': wd / 2, 'backbone.2.bias': wd / 2,
        'head.0.weight': wd, 'head.0.bias': wd, 'head.1.weight': wd, 'head.1.bias': wd,
        'head.2.weight': wd, 'head.2.bias': wd})
    got = _weight_decays(dict(backbone_norm_decay_mult=0.0, norm_decay_mult=0.5, custom_keys={
        'rpe_table': dict(decay_mult=0.0), 'backbone.1.bias': dict(decay_mult=2.0)}))
    assert got['backbone.rpe_table'] == 0.0 and got['backbone.0.weight'] == pytest.approx(wd)
    assert got['backbone.1.weight'] == got['backbone.2.bias'] == 0.0
    assert got['backbone.1.bias'] == pytest.approx(2 * wd)
    assert got['head.1.weight'] == got['head.2.bias'] == pytest.approx(wd / 2)
    # without the option it is mmengine's constructor
    for cfg in (dict(norm_decay_mult=0.0), dict(bias_decay_mult=0.0)):
        model = _Detector()
        assert _weight_decays(cfg, model) == _weight_decays(
            cfg, model, constructor='DefaultOptimWrapperConstructor')
    with pytest.raises(ValueError, match='backbone'):
        _weight_decays(dict(backbone_norm_decay_mult=0.0), nn.Sequential(nn.LayerNorm(4)))


def test_backbone_norm_decay_mult_with_a_backbone_lr_key():
    """A custom key that sets no decay_mult ('backbone': lr x0.1, as the DINO and Mask2Former
    recipes) keeps its lr, and the backbone's norm layers still get backbone_norm_decay_mult;
    a longer key that states a decay_mult decides for the parameters it matches."""
    from mmengine.optim import build_optim_wrapper
    model = _Detector()
    optim = build_optim_wrapper(model, dict(
        constructor='DATOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1),
        paramwise_cfg=dict(backbone_norm_decay_mult=0.0, norm_decay_mult=0.5, custom_keys={
            'backbone': dict(lr_mult=0.1), 'backbone.2.bias': dict(lr_mult=0.1, decay_mult=3.0),
            'rpe_table': dict(lr_mult=0.1, decay_mult=0.0)})))
    got = {name: (round(g['lr'], 12), round(g['weight_decay'], 12))
           for name, p in model.named_parameters()
           for g in optim.optimizer.param_groups if g['params'][0] is p}
    assert got == ({
        'backbone.0.weight': (1e-4, 0.1), 'backbone.0.bias': (1e-4, 0.1),
        'backbone.1.weight': (1e-4, 0.0), 'backbone.1.bias': (1e-4, 0.0),
        'backbone.2.weight': (1e-4, 0.0), 'backbone.2.bias': (1e-4, 0.3),
        'backbone.rpe_table': (1e-4, 0.0),
        'head.0.weight': (1e-3, 0.1), 'head.0.bias': (1e-3, 0.1),
        'head.1.weight': (1e-3, 0.05), 'head.1.bias': (1e-3, 0.05),
        'head.2.weight': (1e-3, 0.05), 'head.2.bias': (1e-3, 0.05)})


# ---- the published RetinaNet checkpoints -------------------------------------------------
def test_published_retinanet_checkpoint_loads_strictly():
    """The authors' RetinaNet backbone has out_indices=(1, 2, 3): norms 1-3 only, no
    `backbone.norms.0`; their FPN takes four inputs from start_level=1. A state dict in that
    layout converts and fits the config's model exactly, and the config's FPN (three inputs,
    start_level=0) computes what theirs computes with the same weights."""
    from mmdet.registry import MODELS

    from dat_mm.converters import convert_published_checkpoint, state_dict_problems
    from published_layout import published_state
    cfg = Config.fromfile(str(ROOT / 'configs/mmdet/retinanet_dat_t_pp_1x.py'))
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg)
    own = model.state_dict()
    assert not any(k.startswith('backbone.norms.0.') for k in own)

    # their neck, as built from retinanet_dat_fpn.py + rtn_tiny_1x_4n_dp00_lr2.py
    theirs = MODELS.build(dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=256,
                               start_level=1, add_extra_convs='on_input', num_outs=5))
    torch.manual_seed(1)
    for p in theirs.parameters():
        p.data.normal_()
    backbone = {k[len('backbone.'):]: v for k, v in own.items() if k.startswith('backbone.')}
    published = {'backbone.' + k: v for k, v in published_state(backbone, 2, dense=True).items()}
    assert {k for k in published if '.norms.' in k} == {
        f'backbone.norms.{i}.norm.{w}' for i in (1, 2, 3) for w in ('weight', 'bias')}
    published.update(('neck.' + k, v) for k, v in theirs.state_dict().items())
    published.update((k, v) for k, v in own.items() if k.startswith('bbox_head.'))

    converted = convert_published_checkpoint({'state_dict': published})
    assert state_dict_problems(own, converted) == []
    model.load_state_dict(converted, strict=True)

    feats = [torch.randn(1, c, 64 // 2 ** i, 64 // 2 ** i)
             for i, c in enumerate([64, 128, 256, 512])]
    with torch.no_grad():
        expected = theirs(feats)
        got = model.neck(feats[1:])
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_retinanet_trains_every_parameter():
    """With the backbone returning stages 1-3 only, one training loss reaches every parameter,
    so DDP needs no find_unused_parameters."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    cfg = Config.fromfile(str(ROOT / 'configs/mmdet/retinanet_dat_t_pp_1x.py'))
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg).train()
    sample = DetDataSample(metainfo=dict(img_shape=(128, 160), pad_shape=(128, 160),
                                         batch_input_shape=(128, 160),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 10.0, 60.0, 70.0]]),
                                       labels=torch.tensor([3]))
    losses = model.loss(torch.randn(1, 3, 128, 160), [sample])
    sum(sum(v) if isinstance(v, list) else v for v in losses.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


# ---- schedules: mmcv's warm-up on the regular schedule ------------------------------------
def test_upernet_schedule_equals_mmcvs_poly_with_warmup():
    """The authors' lr_config (poly, power 1, min_lr 0, linear warm-up 1500 iterations from
    ratio 1e-6) in mmcv multiplies the poly lr by the warm-up factor; the config's overlapping
    LinearLR + PolyLR give the same lr from iteration 1500 on (to 1e-6, the rounding of the
    chained factors). During the warm-up mmengine's ramp is one step shorter (it reaches the
    full lr at iteration 1499): relative difference <= 1 / 1499."""
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = Config.fromfile(str(ROOT / 'configs/mmseg/upernet_dat_b_pp.py'))
    base = cfg.optim_wrapper.optimizer.lr
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                  for s in cfg.param_scheduler]
    for it in range(3001):
        expected = base * (1 - it / 160000)
        if it < 1500:
            expected *= 1 - (1 - it / 1500) * (1 - 1e-6)
        got = optimizer.param_groups[0]['lr']
        assert got == pytest.approx(expected, rel=1 / 1499 + 1e-9), it
        if it >= 1500:
            assert got == pytest.approx(expected, rel=1e-6), it
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()


# ---- tools/train.py (dat_mm.apis) on a machine without a GPU ---------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU adaptation')
def test_cpu_adaptation_of_gpu_recipes():
    from dat_mm import apis as tool
    cfg = Config.fromfile(str(ROOT / 'configs/mmseg/upernet_dat_t_pp.py'))
    tool.adapt_to_device(cfg, 'pytorch')
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert 'SyncBN' not in str(cfg.model) and cfg.model.decode_head.norm_cfg.type == 'BN'
    # single process: the Runner reverts SyncBN itself; nothing but the optimiser changes
    cfg = Config.fromfile(str(ROOT / 'configs/mmdet/cascade_dat_t_pp.py'))
    tool.adapt_to_device(cfg, 'none')
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'model_wrapper_cfg' not in cfg
    assert cfg.model.roi_head.bbox_head[0].norm_cfg.type == 'SyncBN'
    # an explicit --amp cannot be honoured: an error, not a silent fp32 run
    cfg = Config.fromfile(str(ROOT / 'configs/mmdet/cascade_dat_t_pp.py'))
    with pytest.raises(RuntimeError, match='--amp needs a GPU'):
        tool.adapt_to_device(cfg, 'none', amp_requested=True)


def test_scope_comes_from_the_config(tmp_path):
    from dat_mm import apis as tool
    assert tool.config_scope(Config.fromfile(str(ROOT / 'configs/mmseg/fpn_dat_t_pp.py'))) \
        == 'mmseg'
    bad = tmp_path / 'noscope.py'
    bad.write_text('model = dict(type="X")\n')
    with pytest.raises(ValueError, match='default_scope'):
        tool.config_scope(Config.fromfile(str(bad)))
