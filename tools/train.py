"""Train a model from an mmdet, mmseg or mmpretrain config (the scope comes from the config).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
                                 [--resume [CKPT]] [--no-validate]
                                 [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

The same flags as OpenMMLab's own tools/train.py. On a machine without a GPU the config is
adapted so that the published GPU recipes still run: mixed precision (AmpOptimWrapper, which
MMEngine allows on accelerators only) falls back to fp32, and distributed runs use the gloo
backend with SyncBN replaced by BN (SyncBN has no CPU implementation). Each change is logged.
"""
import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a DAT model (mmdet/mmseg/mmpretrain)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training (GPU only)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (GPUs x batch) / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest checkpoint in '
        'the work directory')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
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


def set_work_dir(cfg: Config, config_path: str, work_dir: str = None) -> None:
    """CLI > the config's work_dir > ./work_dirs/<config name>."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def _replace_type(node, old: str, new: str) -> int:
    """Replace ``type=old`` by ``type=new`` in every dict of a config tree; returns a count."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == old:
            node['type'] = new
            count += 1
        for value in node.values():
            count += _replace_type(value, old, new)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_type(value, old, new)
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
        n = _replace_type(cfg.model, 'SyncBN', 'BN')
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


def build_runner(cfg: Config):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    scope = config_scope(cfg)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_work_dir(cfg, args.config, args.work_dir)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                               'config (the total batch its lr was tuned for)')
        cfg.auto_scale_lr.enable = True
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    apply_scope_defaults(cfg, scope)
    adapt_to_device(cfg, args.launcher, amp_requested=args.amp)
    init_cpu_distributed(args.launcher, cfg.env_cfg.dist_cfg.get('backend', 'gloo')
                         if cfg.get('env_cfg') else 'gloo')
    runner = build_runner(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
