"""Small versions of the real configs for tests on generated data.

Each function loads a recipe config with ``Config.fromfile`` and changes it as data: the
datasets and pipelines are the quickstart configs' (configs/quickstart, written for the
generated data), on the test's data root and scaled to the test's image size; the schedule is
a few iterations; the model, heads, losses and optimiser stay the recipe's, with the generated
data's classes and smaller per-image sample counts. The functions return a ``Config``;
``cfg.dump(path)`` writes it as a self-contained config file for tools/train.py and
tools/test.py.
"""
import copy
import functools
from pathlib import Path

from mmengine.config import Config, ConfigDict

from dat_mm.datasets.imagenet_shapes import DEFAULT_CLASSES

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = {'det': 'configs/quickstart/cascade_dat_s_pp_synthetic.py',
              'seg': 'configs/quickstart/upernet_dat_t_pp_synthetic.py'}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def load(config):
    """A config of this repository (path relative to its root), dumped without reformatting
    (yapf takes ~0.5 s per config and adds nothing for a test)."""
    return Config.fromfile(str(ROOT / config), format_python_code=False)


@functools.lru_cache(maxsize=None)
def _quickstart(task):
    return load(QUICKSTART[task])


def _scaled(size, factor):
    return tuple(round(s * factor) for s in size)


def _test_scale(cfg):
    """The scale of the Resize in the test loader's pipeline (None without one)."""
    for transform in cfg.test_dataloader.dataset.pipeline:
        if transform.type == 'Resize' and isinstance(transform.get('scale'), (tuple, list)):
            return tuple(transform.scale)
    return None


def _rescale_tta(cfg, recipe_scale):
    """The recipe's tta_pipeline around the new test scale: each TestTimeAug Resize scale
    multiplied, axis by axis, by (new test scale) / ``recipe_scale``, so that the scales keep
    their ratios to the test scale."""
    new_scale = _test_scale(cfg)
    if cfg.get('tta_pipeline') is None or None in (recipe_scale, new_scale):
        return
    for transform in cfg.tta_pipeline:
        if transform.type != 'TestTimeAug':
            continue
        for option in (t for options in transform.transforms for t in options):
            if option.type == 'Resize' and 'scale' in option:
                option.scale = tuple(round(s * n / r) for s, n, r in
                                     zip(option.scale, new_scale, recipe_scale))


def quickstart_data(cfg, task, data_root, size=None):
    """Replace the data loaders of ``cfg`` with the quickstart's, reading ``data_root``; with
    ``size``, every scale and crop size of their pipelines is scaled so that the quickstart's
    image size becomes ``size`` x ``size``. The scales of the recipe's ``tta_pipeline``
    follow its test scale (see ``_rescale_tta``). The evaluators keep the recipe's metric and
    read the annotations under ``data_root``. Returns the scale factor."""
    quick = _quickstart(task)
    base = quick.img_scale if task == 'det' else quick.crop_size
    factor = 1.0 if size is None else size / base[0]
    recipe_scale = _test_scale(cfg)
    for key in LOADERS:
        cfg[key] = loader = copy.deepcopy(quick[key])
        loader.dataset.data_root = data_root
        _scale_pipeline(loader.dataset.pipeline, factor)
    cfg.data_root = data_root
    _rescale_tta(cfg, recipe_scale)
    if task == 'det':
        for key in ('val_evaluator', 'test_evaluator'):
            cfg[key].ann_file = data_root + cfg.val_dataloader.dataset.ann_file
    return factor


def _scale_pipeline(pipeline, factor):
    """Every scale and crop size of ``pipeline`` multiplied by ``factor``, in place."""
    for transform in pipeline:
        for name in ('scale', 'crop_size'):
            if name in transform:
                transform[name] = _scaled(transform[name], factor)


def _small_det(cfg, data_root, size, masks):
    """``cfg`` (a detection recipe) on the quickstart's loaders of the generated COCO-format
    set at ``data_root`` (``size`` x ``size`` images), with or without mask annotations, test
    batches of one image and no pretrained backbone. Returns ``cfg``."""
    quickstart_data(cfg, 'det', f'{data_root}/', size)
    for key in LOADERS:
        for transform in cfg[key].dataset.pipeline:
            if transform.type == 'LoadAnnotations':
                transform.with_mask = masks
    cfg.val_dataloader.batch_size = cfg.test_dataloader.batch_size = 1
    cfg.model.backbone.init_cfg = None
    return cfg


def _few_iterations(cfg, length, checkpoint_interval):
    cfg.merge_from_dict({
        f'train_cfg.{length[0]}': length[1], 'train_cfg.val_interval': 100,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': checkpoint_interval})
    # the recipe's top-level pipeline variables, which its loaders were written with
    cfg.train_pipeline = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    cfg.test_pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)


def det_config(config, data_root, kind, size=96):
    """A detection recipe (``kind``: 'cascade', 'mask_rcnn' or 'retinanet') on a generated
    COCO-format set at ``data_root``: one epoch of 2-image batches, ``size`` x ``size``
    images."""
    cfg = _small_det(load(config), data_root, size, masks=kind != 'retinanet')
    quick = _quickstart('det')
    model = cfg.model
    num_classes = len(quick.metainfo.classes)
    if kind == 'retinanet':
        model.bbox_head.num_classes = num_classes
        # score_thr 0: an untrained RetinaNet scores ~0.01 (focal-loss prior) and would
        # otherwise have no detections for CocoMetric to evaluate
        model.test_cfg.update(score_thr=0.0, max_per_img=10)
    else:
        heads = model.roi_head.bbox_head
        for head in heads if isinstance(heads, list) else [heads]:
            head.num_classes = num_classes
        model.roi_head.mask_head.num_classes = num_classes
        # At most 3 shapes per generated image: the quickstart's proposal counts, and fewer
        # detections (10, the recipe's 100) keep the bbox and mask heads' test-time cost small
        model.test_cfg.rpn = copy.deepcopy(quick.model.test_cfg.rpn)
        model.test_cfg.rcnn.max_per_img = 10
    if kind == 'cascade':
        for stage in model.train_cfg.rcnn:
            stage.sampler.num = 16  # RoIs per image and stage (512 in the recipe)
    _few_iterations(cfg, ('max_epochs', 1), checkpoint_interval=1)
    return cfg


def dino_config(config, data_root, size=96):
    """A DINO recipe on a generated COCO-format set at ``data_root``: one epoch of 2-image
    batches, ``size`` x ``size`` images (boxes only)."""
    cfg = _small_det(load(config), data_root, size, masks=False)
    model = cfg.model
    model.bbox_head.num_classes = len(_quickstart('det').metainfo.classes)
    # Two-stage DINO picks its queries as the top-k of the encoder's tokens; a 96x96 image has
    # 12^2 + 6^2 + 3^2 + 2^2 = 193 of them at strides 8-64, fewer than the recipe's 900 queries
    model.num_queries = 100
    _few_iterations(cfg, ('max_epochs', 1), checkpoint_interval=1)
    return cfg


def mask2former_config(config, data_root, size=96):
    """A Mask2Former recipe on generated data at ``data_root``: 2 iterations of 2-image batches.
    mmdet (COCO instance segmentation): the recipe's large-scale-jitter pipeline with its
    1024x1024 scale, crop and batch padding scaled to ``size`` x ``size`` (test: the
    quickstart's); mmseg (ADE20K): as ``seg_config``, ``size`` x ``size`` crops.
    The point-sampled mask losses use the recipe's number of points per mask scaled with the
    image area (12544 at 1024x1024 / 512x512)."""
    cfg = load(config)
    if cfg.default_scope == 'mmseg':
        cfg = _small_seg(cfg, data_root, size)
        head = cfg.model.decode_head
        recipe_size = cfg.crop_size[0]
        head.train_cfg.num_points = round(head.train_cfg.num_points * (size / recipe_size) ** 2)
        return cfg
    recipe_train = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    recipe_size = cfg.image_size[0]
    _small_det(cfg, data_root, size, masks=True)
    _scale_pipeline(recipe_train, size / recipe_size)
    cfg.train_dataloader.dataset.pipeline = recipe_train
    for augment in cfg.model.data_preprocessor.batch_augments:
        augment.size = (size, size)

    model = cfg.model
    num_classes = len(_quickstart('det').metainfo.classes)
    model.panoptic_head.update(num_things_classes=num_classes, num_stuff_classes=0)
    model.panoptic_head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    model.panoptic_fusion_head.update(num_things_classes=num_classes, num_stuff_classes=0)
    model.train_cfg.num_points = round(model.train_cfg.num_points * (size / recipe_size) ** 2)
    _few_iterations(cfg, ('max_iters', 2), checkpoint_interval=2)
    cfg.randomness = dict(seed=0)  # the same jitter on every run
    return cfg


def seg_config(config, data_root, size=96):
    """A segmentation recipe on a generated ADE20K-format set at ``data_root``: 2 iterations
    of 2-image batches, ``size`` x ``size`` crops."""
    return _small_seg(load(config), data_root, size)


def _small_seg(cfg, data_root, size):
    factor = quickstart_data(cfg, 'seg', str(data_root), size)
    cfg.model.data_preprocessor.size = _scaled(_quickstart('seg').crop_size, factor)
    cfg.model.backbone.init_cfg = None
    cfg.train_dataloader.batch_size = 2
    _few_iterations(cfg, ('max_iters', 2), checkpoint_interval=2)
    return cfg


def cls_config(config, data_root, size=48):
    """An ImageNet recipe on a generated ImageFolder-style set at ``data_root``
    (dat_mm.datasets.generate_imagenet_shapes, default classes): one epoch of 2-image batches,
    ``size`` x ``size`` images."""
    cfg = load(config)
    classes = list(DEFAULT_CLASSES)
    cfg.data_preprocessor.num_classes = len(classes)
    cfg.model.backbone.init_cfg = None
    cfg.model.head.num_classes = len(classes)
    pipelines = dict(
        train=[dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=size),
               dict(type='RandomFlip', prob=0.5, direction='horizontal'),
               dict(type='PackInputs')],
        val=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(size, size)),
             dict(type='PackInputs')])
    for split, key in (('train', 'train_dataloader'), ('val', 'val_dataloader'),
                       ('val', 'test_dataloader')):
        loader = cfg[key]
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = ConfigDict(type='CustomDataset', data_root=str(data_root),
                                    ann_file=f'meta/{split}.txt', data_prefix=split,
                                    classes=classes, pipeline=pipelines[split])
        loader.sampler.update(type='DefaultSampler', shuffle=split == 'train')
    cfg.val_evaluator = cfg.test_evaluator = ConfigDict(type='Accuracy', topk=(1, ))
    _few_iterations(cfg, ('max_epochs', 1), checkpoint_interval=1)
    return cfg
