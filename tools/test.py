"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config (scope from the config).

    python tools/test.py CONFIG CHECKPOINT [--tta] [--work-dir DIR] [--out PATH]
                                           [--show-dir DIR] [--cfg-options k=v ...]
                                           [--launcher ...]

CHECKPOINT is a Runner checkpoint or one of the authors' published files (ImageNet, mmdet 2,
mmseg 0.x), converted on load; a file that does not fit the config stops before the first image
(docs/reliability.md). The config's test_evaluator gives the metrics (CocoMetric box/mask AP,
IoUMetric mIoU, Accuracy). ``--out`` saves the predictions: a .pkl for mmdet (DumpDetResults)
and mmpretrain (DumpResults), a directory of PNG label maps for mmseg (IoUMetric's output_dir).
``--show-dir`` draws the predictions with the scope's visualization hook.

``--tta`` evaluates with the config's test-time augmentation, set up as mmdet's, mmseg's and
mmpretrain's own tools/test.py do: ``tta_pipeline`` replaces the test pipeline and
``tta_model`` wraps the model. The ADE20K configs give the authors' multi-scale test (the "MS"
mIoU: 6 scales, 0.5-1.75 of 2048x512, + flip, softmax averaged); RetinaNet mmdet's 3 scales +
flip with the boxes merged by NMS; the classifiers flip averaging. A config without
``tta_model`` / ``tta_pipeline`` is an error, and so are the Mask R-CNN / Cascade Mask R-CNN
configs: mmdet 3.3's DetTTAModel cannot merge masks (docs/recipes.md).
"""
import argparse

from mmengine.config import Config

from dat_mm.apis import (build_runner, exit_after_distributed, finish_distributed, load_config,
                         parse_tool_args, use_tta)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a DAT model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_pipeline and tta_model")
    parser.add_argument('--out', help='where to dump the predictions (see above)')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='save images with the predictions drawn here')
    parser.add_argument('--wait-time', type=float, default=2, help='--show interval (s)')
    parser.add_argument('--show-interval', type=int, default=1,
                        help='draw every n-th test batch (mmseg/mmpretrain; mmdet draws all)')
    return parse_tool_args(parser, argv)


def enable_visualization(cfg: Config, scope: str, show: bool, show_dir: str,
                         wait_time: float, interval: int = 1) -> None:
    """Turn on the scope's visualization hook as each library's test.py does."""
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise RuntimeError('--show/--show-dir need a visualization hook in default_hooks')
    hook = hooks['visualization']
    if scope == 'mmdet':        # DetVisualizationHook
        hook['draw'] = True
        hook['show'] = show
        hook['wait_time'] = wait_time
        if show_dir:
            hook['test_out_dir'] = show_dir
    elif scope == 'mmseg':      # SegVisualizationHook draws into visualizer.save_dir
        hook['draw'] = True
        hook['show'] = show
        hook['wait_time'] = wait_time
        hook['interval'] = interval
        if show_dir:
            cfg.visualizer['save_dir'] = show_dir
    else:                       # mmpretrain VisualizationHook
        hook['enable'] = True
        hook['show'] = show
        hook['wait_time'] = wait_time
        hook['out_dir'] = show_dir
        hook['interval'] = interval


def add_dump(runner, cfg: Config, scope: str, out: str) -> None:
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file for detection, got {out!r}')
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    elif scope == 'mmpretrain':
        from mmengine.evaluator import DumpResults
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file for classification, got {out!r}')
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))


def main(argv=None):
    args = parse_args(argv)
    cfg, scope = load_config(args.config, args.launcher, args.cfg_options, args.work_dir)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, scope, args.show, args.show_dir, args.wait_time,
                             args.show_interval)
    if args.tta:
        use_tta(cfg, scope)
    if args.out and scope == 'mmseg':
        # IoUMetric writes one PNG per image into output_dir
        cfg.test_evaluator['output_dir'] = args.out

    runner = build_runner(cfg, scope, args.launcher)
    if args.out and scope != 'mmseg':
        add_dump(runner, cfg, scope, args.out)
    metrics = runner.test()
    finish_distributed()
    return metrics


if __name__ == '__main__':
    main()
    exit_after_distributed()
