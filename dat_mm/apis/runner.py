"""Config handling shared by tools/train.py and tools/test.py (and usable from Python).

What each OpenMMLab library's own train/test scripts add to their configs, the config's scope,
and the adaptation of the published GPU recipes to a machine without a GPU (each change logged,
never silent).
"""
import argparse
import copy
import logging
import os
import os.path as osp
import sys

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Add the options every tool shares (``--cfg-options``, ``--launcher``, ``--local-rank``)
    to ``parser``, parse ``argv`` and export ``LOCAL_RANK`` as MMEngine expects it."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, key=value pairs merged into it, e.g. '
        'train_cfg.max_epochs=1 "model.backbone.arch=small++"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torchrun sets LOCAL_RANK instead)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def config_scope(cfg: Config) -> str:
    """The OpenMMLab library a config belongs to ('mmdet', 'mmseg' or 'mmpretrain')."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'config default_scope is {scope!r}; tools/train.py and tools/test.py '
                         f'handle {SCOPES} (inherit one of their bases, e.g. '
                         "'mmdet::_base_/default_runtime.py')")
    return scope


def load_config(path: str, launcher: str = 'none', cfg_options: dict = None,
                work_dir: str = None):
    """The config with the command line's overrides; returns ``(cfg, scope)``."""
    cfg = Config.fromfile(path)
    scope = config_scope(cfg)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    set_work_dir(cfg, path, work_dir)
    return cfg, scope


def set_work_dir(cfg: Config, config_path: str, work_dir: str = None) -> None:
    """CLI > the config's work_dir > ./work_dirs/<config name>."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


#: mmdet heads that predict masks without a ``mask_head`` key in the model config (mmdet 3.3).
_MASK_HEADS = ('RTMDetInsHead', 'RTMDetInsSepBNHead')


def _predicts_masks(node) -> bool:
    """Whether an mmdet model config predicts masks: a ``mask_head`` anywhere (Mask R-CNN,
    Cascade, SOLO, CondInst, YOLACT), a MaskFormer / Mask2Former ``panoptic_head``, or a
    head in :data:`_MASK_HEADS`."""
    if isinstance(node, dict):
        if node.get('mask_head') is not None or node.get('panoptic_head') is not None:
            return True
        if node.get('type') in _MASK_HEADS:
            return True
        return any(_predicts_masks(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_predicts_masks(v) for v in node)
    return False


def use_tta(cfg: Config, scope: str) -> None:
    """Test-time augmentation as mmdet's, mmseg's and mmpretrain's tools/test.py ``--tta`` set
    it up: the config's ``tta_pipeline`` becomes the test pipeline and its ``tta_model``
    (SegTTAModel, DetTTAModel, AverageClsScoreTTA) wraps the model. The wrapped model keeps the
    data preprocessor it has without ``--tta``.

    Unlike those scripts this sets up no default: a config without ``tta_model`` or
    ``tta_pipeline`` is an error naming it, and so is an mmdet model that predicts masks (Mask
    R-CNN, Cascade, Mask2Former), which mmdet 3.3's DetTTAModel cannot merge (it asserts on
    them after the first image).
    """
    where = cfg.filename or 'the config'
    if scope == 'mmdet' and _predicts_masks(cfg.model):
        raise ValueError(
            f'{where}: --tta is not available for {cfg.model.get("type")}: it predicts '
            "masks, and mmdet 3.3's DetTTAModel merges boxes only (it fails on "
            'predictions with masks); evaluate without --tta')
    missing = [key for key in ('tta_model', 'tta_pipeline') if cfg.get(key) is None]
    if missing:
        raise ValueError(f'{where} defines no {" and no ".join(missing)}, which --tta needs '
                         '(the recipe configs under configs/ define both; docs/recipes.md)')
    model = copy.deepcopy(cfg.model)
    preprocessor = model.get('data_preprocessor') or cfg.get('data_preprocessor')
    tta_model = copy.deepcopy(cfg.tta_model)
    tta_model.module = model
    if preprocessor is not None:
        # the Runner would otherwise give the wrapper the top-level data_preprocessor, which
        # BaseTTAModel puts in place of the model's own
        tta_model.data_preprocessor = copy.deepcopy(preprocessor)
    cfg.model = tta_model
    cfg.test_dataloader.dataset.pipeline = copy.deepcopy(cfg.tta_pipeline)


def replace_type(node, old: str, new: str) -> int:
    """Replace ``type=old`` by ``type=new`` in every dict of a config tree; returns a count."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == old:
            node['type'] = new
            count += 1
        for value in node.values():
            count += replace_type(value, old, new)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_type(value, old, new)
    return count


def adapt_to_device(cfg: Config, launcher: str, amp_requested: bool = False) -> None:
    """Make a GPU recipe runnable on a machine without a GPU (logged, never silent)."""
    import torch
    if torch.cuda.is_available():
        return
    optim = cfg.get('optim_wrapper')
    if optim is not None and optim.get('type') == 'AmpOptimWrapper':
        if amp_requested:
            raise RuntimeError('--amp needs a GPU (MMEngine\'s AmpOptimWrapper runs on '
                               'accelerators only) and none is available')
        optim.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            optim.pop(key, None)
        print_log('No GPU: this recipe trains with fp16 mixed precision on GPUs; training in '
                  'fp32 (OptimWrapper) instead', logger='current', level=logging.WARNING)
    if launcher != 'none':
        cfg.setdefault('env_cfg', ConfigDict())
        cfg.env_cfg.setdefault('dist_cfg', ConfigDict())
        if cfg.env_cfg.dist_cfg.get('backend', 'nccl') != 'gloo':
            print_log('No GPU: distributed backend gloo', logger='current')
            cfg.env_cfg.dist_cfg.backend = 'gloo'
        # MMEngine passes device_ids=[LOCAL_RANK] to DDP by default, which is for GPUs.
        wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(type='MMDistributedDataParallel')
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper
        n = replace_type(cfg.model, 'SyncBN', 'BN')
        if n:
            print_log(f'No GPU: SyncBN has no CPU implementation; {n} norm config(s) use BN '
                      '(statistics per process)', logger='current', level=logging.WARNING)


def init_cpu_distributed(launcher: str, backend: str = 'gloo') -> None:
    """Start the process group for a CPU run ourselves: MMEngine's pytorch launcher calls
    torch.cuda.set_device, which fails without a GPU."""
    import torch
    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher != 'pytorch':
        raise RuntimeError(f'CPU-only distributed runs support --launcher pytorch '
                           f'(tools/dist_train.sh), not {launcher!r}')
    dist.init_process_group(backend=backend)


#: Set by :func:`finish_distributed` once it destroyed a process group in this process.
_GROUP_FINISHED = False


def finish_distributed() -> None:
    """Destroy the process group of a distributed run once the runner is done; the tools then
    leave through :func:`exit_after_distributed`."""
    global _GROUP_FINISHED
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        _GROUP_FINISHED = True


def exit_after_distributed() -> None:
    """End a process whose distributed run has finished: flush output and logs, then leave
    with ``os._exit(0)``, skipping the interpreter's teardown. Does nothing in other runs.

    A gloo process group that a DDP model has trained with stays alive in C++ after
    ``destroy_process_group`` (with its threads: the reducer keeps it, and no public torch
    API releases it), and the teardown of such a process at exit now and then aborts it with
    'terminate called without an active exception' (SIGABRT) after a complete run, failing
    the launcher.
    """
    if not _GROUP_FINISHED:
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(0)


def apply_scope_defaults(cfg: Config, scope: str) -> None:
    """What each library's own tools/train.py adds to its configs."""
    if scope == 'mmpretrain':
        import torch
        # mmpretrain's train/test scripts default the dataloaders to default_collate.
        for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(field) is None:
                continue
            loader = ConfigDict(collate_fn=dict(type='default_collate'),
                                pin_memory=torch.cuda.is_available())
            loader.update(cfg[field])
            cfg[field] = loader
    if scope == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()


def use_safe_checkpoints(cfg: Config) -> None:
    """Safe checkpoint loading for this process, and the config's checkpoint hook made
    ``SafeCheckpointHook`` (fit checks, atomic saves, RNG state; docs/reliability.md) where it
    is mmengine's plain ``CheckpointHook`` (logged)."""
    from dat_mm.checkpoint import use_safe_loader
    use_safe_loader()
    cfg.setdefault('default_hooks', ConfigDict())
    hook = cfg.default_hooks.get('checkpoint')
    if hook is None:
        cfg.default_hooks.checkpoint = ConfigDict(type='SafeCheckpointHook', interval=1)
    elif hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
        hook.type = 'SafeCheckpointHook'
        print_log('default_hooks.checkpoint: SafeCheckpointHook instead of CheckpointHook '
                  '(atomic saves, checked loading, RNG state)', logger='current')


def build_runner(cfg: Config, scope: str, launcher: str = 'none', amp_requested: bool = False):
    """The Runner of a loaded config, after what tools/train.py and tools/test.py both do:
    safe checkpoints, the scope's defaults, the CPU adaptation of GPU recipes, and the CPU
    process group."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    use_safe_checkpoints(cfg)
    apply_scope_defaults(cfg, scope)
    adapt_to_device(cfg, launcher, amp_requested=amp_requested)
    init_cpu_distributed(launcher, cfg.env_cfg.dist_cfg.get('backend', 'gloo')
                         if cfg.get('env_cfg') else 'gloo')
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
