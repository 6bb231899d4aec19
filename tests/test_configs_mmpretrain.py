"""configs/mmpretrain: every config loads offline, builds the published classifier (the
published parameter counts, README's model table), runs, and states the authors' ImageNet
recipe (LeapLabTHU/DAT configs and trainer, docs/recipes.md): schedule, weight-decay rule,
AMP and drop_last."""
import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

ROOT = Path(__file__).resolve().parents[1]
CFG_DIR = ROOT / 'configs' / 'mmpretrain'

# config -> (arch, params with cls head (spec), drop_path, input side)
CONFIGS = {
    'dat_t_pp_in1k.py': ('tiny++', 23_962_876, 0.2, 224),
    'dat_s_pp_in1k.py': ('small++', 53_127_366, 0.4, 224),
    'dat_b_pp_in1k.py': ('base++', 93_690_640, 0.7, 224),
    'dat_b_pp_in1k_384.py': ('base++', 93_690_640, 0.6, 384),
    'dat_t_in1k.py': ('tiny', 28_319_138, 0.2, 224),
    'dat_s_in1k.py': ('small', 49_700_402, 0.3, 224),
    'dat_b_in1k.py': ('base', 87_881_632, 0.5, 224),
    'dat_b_in1k_384.py': ('base-384', 88_178_272, 0.5, 384),
}
# The authors' yaml (+ config.py defaults): per-GPU batch, BASE_LR, WARMUP_LR, MIN_LR (all
# three before their linear scaling value * total_batch / 512), warm-up epochs, grad clip,
# epochs. v1: the configs of tag CVPR2022.
RECIPES = {
    'dat_t_pp_in1k.py': (128, 5e-4, 5e-7, 5e-6, 20, 5.0, 300),
    'dat_s_pp_in1k.py': (128, 5e-4, 5e-7, 5e-6, 20, 5.0, 300),
    'dat_b_pp_in1k.py': (64, 5e-4, 5e-7, 5e-6, 20, 5.0, 300),
    'dat_b_pp_in1k_384.py': (24, 2e-5, 2e-8, 2e-7, 0, 5.0, 30),
    'dat_t_in1k.py': (128, 5e-4, 5e-7, 5e-6, 20, 5.0, 300),
    'dat_s_in1k.py': (128, 5e-4, 5e-7, 5e-6, 20, 5.0, 300),
    'dat_b_in1k.py': (128, 4e-4, 5e-7, 5e-6, 50, 1.0, 300),
    'dat_b_in1k_384.py': (24, 2e-6, 5e-7, 1e-7, 0, 5.0, 30),
}

def load(name):
    return Config.fromfile(str(CFG_DIR / name))


def build(cfg):
    init_default_scope('mmpretrain')
    from mmpretrain.registry import MODELS
    return MODELS.build(cfg.model)


def test_every_config_is_listed():
    assert sorted(p.name for p in CFG_DIR.glob('dat_*.py')) == sorted(CONFIGS)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_builds_the_published_classifier(name):
    arch, params, drop_path, _ = CONFIGS[name]
    cfg = load(name)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(imports=['dat_mm'], allow_failed_imports=False)
    assert cfg.published_checkpoint.startswith('checkpoints/')
    model = build(cfg)
    assert type(model).__name__ == 'ImageClassifier'
    assert model.backbone.arch == __import__('dat_mm').resolve_arch(arch)
    assert model.backbone.drop_path_rate == drop_path
    assert model.backbone.out_indices == (3, )
    assert type(model.neck).__name__ == 'GlobalAveragePooling'
    assert model.head.fc.in_features == model.backbone.num_features[-1]
    assert model.head.fc.out_features == 1000
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_loads_offline(name):
    """No URL anywhere in the config tree: nothing downloads at build or init time."""
    text = load(name).pretty_text
    assert not re.search(r'(https?|torchvision|open-mmlab|mmcls)://', text), text


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_logits_shape_at_the_training_resolution_on_meta(name):
    """Shapes of every classifier at its resolution, without computing (meta device; on the
    reference attention, which any device runs)."""
    from dat_mm.analysis.flops import reference_attention
    side = CONFIGS[name][3]
    model = build(load(name)).eval().to('meta')
    with torch.no_grad(), reference_attention(model):
        out = model(torch.zeros(1, 3, side, side, device='meta'), mode='tensor')
    assert out.shape == (1, 1000)


@pytest.mark.parametrize('name', ['dat_t_pp_in1k.py'] + [
    pytest.param(n, marks=pytest.mark.slow) for n in sorted(CONFIGS) if n != 'dat_t_pp_in1k.py'])
def test_forward_gives_finite_logits(name):
    side = CONFIGS[name][3]
    model = build(load(name)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, side, side), mode='tensor')
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_schedule_is_the_authors(name):
    per_gpu, base_lr, warmup_lr, min_lr, warmup, clip, epochs = RECIPES[name]
    cfg = load(name)
    total = per_gpu * 8
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.auto_scale_lr.base_batch_size == total
    opt = cfg.optim_wrapper.optimizer
    assert opt.type == 'AdamW' and opt.betas == (0.9, 0.999) and opt.eps == 1e-8
    assert opt.lr == pytest.approx(base_lr * total / 512, rel=1e-12)
    assert opt.weight_decay == (1e-8 if epochs == 30 else 0.05)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=clip)
    assert cfg.train_cfg.max_epochs == epochs
    scheds = cfg.param_scheduler
    if warmup:
        assert scheds[0].type == 'LinearLR'
        assert (scheds[0].begin, scheds[0].end) == (0, warmup)
        # WARMUP_LR and the lr are scaled alike: the ramp starts at their ratio
        assert scheds[0].start_factor == pytest.approx(warmup_lr / base_lr, rel=1e-12)
    else:
        assert len(scheds) == 1
    cosine = scheds[-1]
    assert cosine.type == 'CosineAnnealingLR'
    # timm's cosine spans the whole run, warm-up included
    assert (cosine.begin, cosine.end) == (0, epochs)
    assert cosine.eta_min_ratio == pytest.approx(min_lr / base_lr, rel=1e-12)
    assert all(s.by_epoch and s.convert_to_iter_based for s in scheds)  # updated every iter


def _timm_lr(step, lr, warmup_lr, min_lr, warmup_steps, total_steps):
    """timm's CosineLRScheduler as the authors build it (t_initial = all steps, warmup_t,
    warmup_lr_init, lr_min, no warmup_prefix, t_in_epochs=False)."""
    if step < warmup_steps:
        return warmup_lr + step * (lr - warmup_lr) / warmup_steps
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / total_steps))


@pytest.mark.parametrize('name', sorted(RECIPES))
def test_lr_at_every_iteration_is_timms(name):
    """The config's schedulers, run with 20 iterations per epoch, against the authors' timm
    schedule: equal after the warm-up; during it the ramp is scaled by the cosine, so at most
    1 - (1 + cos(pi * warmup / epochs)) / 2 below theirs (1.1% for 20 of 300 epochs)."""
    from mmengine.registry import PARAM_SCHEDULERS
    per_gpu, base_lr, warmup_lr, min_lr, warmup, _, epochs = RECIPES[name]
    cfg = load(name)
    scale = per_gpu * 8 / 512
    lr, warmup_lr, min_lr = base_lr * scale, warmup_lr * scale, min_lr * scale
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(lr, rel=1e-12)
    iters = 20  # per epoch
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    init_default_scope('mmpretrain')
    schedulers = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=optimizer,
                                                                    epoch_length=iters))
                  for s in cfg.param_scheduler]
    warmup_gap = 1 - (1 + math.cos(math.pi * warmup / epochs)) / 2
    # mmengine's ramp reaches the lr one step earlier than timm's
    step_gap = 1 / (warmup * iters - 1) if warmup else 0
    for step in range(epochs * iters):
        got = optimizer.param_groups[0]['lr']
        expected = _timm_lr(step, lr, warmup_lr, min_lr, warmup * iters, epochs * iters)
        if step < warmup * iters:
            assert (expected * (1 - warmup_gap - 1e-6) <= got
                    <= expected * (1 + step_gap + 1e-6)), step
        else:
            assert got == pytest.approx(expected, rel=1e-3), step
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()


def _published_classifier_name(name, version):
    """A classifier parameter name as in the authors' ImageNet model."""
    from published_layout import _published_key
    if name.startswith('head.fc.'):
        return 'cls_head.' + name[len('head.fc.'):]
    assert name.startswith('backbone.'), name
    return _published_key(name[len('backbone.'):], version, dense=False)


@pytest.mark.parametrize('name', ['dat_t_pp_in1k.py', 'dat_t_in1k.py'])
def test_weight_decay_groups_follow_the_authors_rule(name):
    """The authors' set_weight_decay applied to the published parameter names: no decay on
    every 1-D parameter, every name ending in `.bias`, and names containing `rpe_table` or
    `relative_position_bias_table`; decay on the rest (the NA bias `rpb` included)."""
    from mmengine.optim import build_optim_wrapper
    cfg = load(name)
    model = build(cfg)
    init_default_scope('mmpretrain')
    ow_cfg = copy.deepcopy(cfg.optim_wrapper)
    ow_cfg.type = 'OptimWrapper'  # the same parameter groups; AmpOptimWrapper needs a GPU
    ow_cfg.pop('loss_scale')
    wrapper = build_optim_wrapper(model, ow_cfg)
    decay_of = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay_of[id(p)] = group['weight_decay']
    version = 2 if name == 'dat_t_pp_in1k.py' else 1
    for pname, p in model.named_parameters():
        published = _published_classifier_name(pname, version)
        exempt = (p.ndim == 1 or published.endswith('.bias') or
                  any(k in published for k in ('relative_position_bias_table', 'rpe_table')))
        assert decay_of[id(p)] == (0.0 if exempt else 0.05), (pname, published)
    assert len(decay_of) == len(list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]
    if version == 2:
        assert any(n.endswith('.rpe_table') for n in names)
        rpb = [p for n, p in model.named_parameters() if n.endswith('.rpb')]
        assert rpb and all(decay_of[id(p)] == 0.05 for p in rpb)
    else:
        assert any(n.endswith('.relative_position_bias_table') for n in names)
    # every 1-D parameter of the classifier is a norm layer's or a bias: norm_decay_mult and
    # bias_decay_mult alone already give the rule (flat_decay_mult would catch any other)
    modules = dict(model.named_modules())
    for pname, p in model.named_parameters():
        if p.ndim == 1:
            owner = modules[pname.rsplit('.', 1)[0]]
            assert isinstance(owner, torch.nn.LayerNorm) or pname.endswith('.bias'), pname


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_amp_and_drop_last_by_default(name):
    """As published: the launch script always passes --amp (torch.cuda.amp with a dynamic
    GradScaler) and the training loader drops the last incomplete batch."""
    cfg = load(name)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.train_dataloader.drop_last is True
    assert not cfg.val_dataloader.get('drop_last', False)
    assert not cfg.test_dataloader.get('drop_last', False)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU adaptation')
def test_amp_recipe_runs_in_fp32_without_a_gpu():
    """tools/train.py's adaptation: fp32 OptimWrapper (logged) on a machine without a GPU,
    everything else of the optimiser kept; an explicit --amp there is an error."""
    from dat_mm.apis import adapt_to_device
    cfg = load('dat_t_pp_in1k.py')
    before = copy.deepcopy(cfg.optim_wrapper)
    adapt_to_device(cfg, 'none')
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.optimizer == before.optimizer
    assert cfg.optim_wrapper.paramwise_cfg == before.paramwise_cfg
    assert cfg.optim_wrapper.clip_grad == before.clip_grad
    with pytest.raises(RuntimeError, match='--amp needs a GPU'):
        adapt_to_device(load('dat_t_pp_in1k.py'), 'none', amp_requested=True)


def test_train_loader_drops_the_last_incomplete_batch(tmp_path):
    """drop_last reaches the DataLoader: 3 images at batch 2 give one batch."""
    from mmengine.runner import Runner

    from dat_mm.datasets import generate_imagenet_shapes
    generate_imagenet_shapes(str(tmp_path), num_train_per_class=1, num_val_per_class=1,
                             image_size=32, classes=('circle', 'square', 'triangle'))
    cfg = load('dat_t_pp_in1k.py')
    loader = copy.deepcopy(cfg.train_dataloader)
    loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    loader.dataset = dict(type='CustomDataset', data_root=str(tmp_path),
                          ann_file='meta/train.txt', data_prefix='train',
                          pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
    init_default_scope('mmpretrain')
    built = Runner.build_dataloader(loader)
    assert len(built.dataset) == 3 and built.drop_last is True
    assert len(built) == 1 and [len(b['inputs']) for b in built] == [2]


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_augmentation_and_loss_are_the_authors(name):
    side = CONFIGS[name][3]
    cfg = load(name)
    train = cfg.train_dataloader.dataset.pipeline
    types = [t.type for t in train]
    assert types == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'RandAugment',
                     'RandomErasing', 'PackInputs']
    assert train[1].scale == side and train[1].interpolation == 'bicubic'
    assert train[3].magnitude_level == 9 and train[3].magnitude_std == 0.5
    assert train[3].num_policies == 2 and train[3].policies == 'timm_increasing'
    assert train[4].erase_prob == 0.25
    augments = {a.type: a.alpha for a in cfg.model.train_cfg.augments}
    assert augments == {'Mixup': 0.8, 'CutMix': 1.0}
    assert cfg.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                                       mode='original')


@pytest.mark.parametrize('name,resize,crop', [
    ('dat_t_pp_in1k.py', (256, 256), 224),
    ('dat_b_in1k.py', (256, 256), 224),
    ('dat_b_pp_in1k_384.py', (384, 384), None),  # TEST.CROP False
    ('dat_b_in1k_384.py', (438, 438), 384),  # v1 keeps the crop: int(256 / 224 * 384)
])
def test_evaluation_pipeline_is_the_authors(name, resize, crop):
    """Square bicubic resize (their torchvision Resize((s, s))), then the crop if any; run it
    on an image to check that mmpretrain accepts every step."""
    cfg = load(name)
    test = cfg.test_dataloader.dataset.pipeline
    resize_t = [t for t in test if t.type == 'Resize']
    assert len(resize_t) == 1 and tuple(resize_t[0].scale) == resize
    assert resize_t[0].interpolation == 'bicubic' and resize_t[0].backend == 'pillow'
    crops = [t.crop_size for t in test if t.type == 'CenterCrop']
    assert crops == ([crop] if crop else [])
    assert cfg.val_dataloader.dataset.pipeline == test

    init_default_scope('mmpretrain')
    from mmengine.dataset import Compose
    img = np.random.RandomState(0).randint(0, 255, (300, 500, 3), dtype=np.uint8)
    pipeline = Compose([t for t in test if t.type != 'LoadImageFromFile'])
    out = pipeline(dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], gt_label=3))
    side = crop or resize[0]
    assert tuple(out['inputs'].shape) == (3, side, side)

    train = Compose([t for t in cfg.train_dataloader.dataset.pipeline
                     if t.type != 'LoadImageFromFile'])
    out = train(dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], gt_label=3))
    assert tuple(out['inputs'].shape) == (3, CONFIGS[name][3], CONFIGS[name][3])


# A small DAT++ with every block kind, so that a real training step stays cheap on CPU; the
# rest of the config (pipelines, optimizer, schedulers, mixup/cutmix, loss) is unchanged.
SMALL_ARCH = dict(version=2, stages=[
    dict(dim=d, depth=2, num_heads=h, blocks=b, groups=g, stride=s, offset_kernel=k)
    for d, h, b, g, s, k in zip((16, 32, 64, 128), (1, 2, 4, 8), ('ND', 'ND', 'ND', 'DD'),
                                (1, 1, 2, 4), (8, 4, 2, 1), (9, 7, 5, 3))])


@pytest.mark.slow
def test_runner_trains_and_validates_on_generated_imagenet(tmp_path):
    """A real mmengine Runner with the T++ config's recipe on a generated ImageNet-layout
    dataset: one training iteration through the real pipelines, then validation."""
    from mmengine.runner import Runner

    from dat_mm.apis import adapt_to_device
    from dat_mm.datasets import generate_imagenet_shapes
    root = tmp_path / 'imagenet'
    generate_imagenet_shapes(str(root), num_train_per_class=1, num_val_per_class=1,
                             image_size=64, classes=('circle', 'square'))
    cfg = load('dat_t_pp_in1k.py')
    cfg.model.backbone.arch = SMALL_ARCH
    cfg.model.head.in_channels = 128
    cfg.work_dir = str(tmp_path / 'work')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(root)
        cfg[loader].batch_size = 2
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_cfg.max_epochs = 1
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10, save_last=False)
    adapt_to_device(cfg, 'none')  # as tools/train.py: fp32 without a GPU
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    assert runner.iter == 1
    after = runner.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any('rpe_table' in k for k in changed) and any('rpb' in k for k in changed)
    assert any(k.startswith('head.fc.') for k in changed)
    # first iteration of the 20-epoch linear warm-up from lr / 1000
    lr = runner.optim_wrapper.get_lr()['lr'][0]
    assert 0 < lr < 1e-3 * 0.1
    metrics = runner.val_loop.run()
    assert 'accuracy/top1' in metrics
