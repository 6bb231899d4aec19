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

from dat_mm.apis import (build_runner, exit_after_distributed, finish_distributed, load_config,
                         parse_tool_args)


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
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg, scope = load_config(args.config, args.launcher, args.cfg_options, args.work_dir)

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

    runner = build_runner(cfg, scope, args.launcher, amp_requested=args.amp)
    runner.train()
    finish_distributed()
    return runner


if __name__ == '__main__':
    main()
    exit_after_distributed()
