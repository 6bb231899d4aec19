"""Export a DAT model to ONNX (dynamic height and width) and check it with onnxruntime.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] [--out FILE.onnx]
        [--component {backbone,backbone+neck,whole}] [--opset N] [--shapes HxW ...]
        [--tolerance T] [--min-size HxW] [--no-optimize] [--cfg-options k=v ...]

Without CHECKPOINT the weights are random (``model.backbone.init_cfg=None``; a note says so):
enough to check the export. The graph is compared with PyTorch at each ``--shapes`` size
(default 224x224 256x320 231x197): the largest absolute and relative difference (relative =
max|onnx - torch| / max|torch|) per output. Exit status: 0 when every size is within
``--tolerance``, 1 when the check fails, 2 for an error (missing or refused file, a component
the model lacks, a size the exported graph is not valid for), with the reason on stderr.
What is exported and why: dat_mm/deployment/onnx.py and docs/deployment.md.
"""
import argparse
import sys

from dat_mm.apis import parse_tool_args


def parse_args(argv=None):
    from dat_mm.deployment.onnx import COMPONENTS, DEFAULT_OPSET
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='mmpretrain, mmdet or mmseg config of a DAT model')
    p.add_argument('checkpoint', nargs='?', help='weights (optional; random without)')
    p.add_argument('--out', help='the ONNX file (default: <config name>_<component>.onnx)')
    p.add_argument('--component', choices=COMPONENTS,
                   help='what to export (default: whole for classifiers, backbone+neck for '
                        'models with a neck, else backbone)')
    p.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                   help=f'ONNX opset (default {DEFAULT_OPSET})')
    p.add_argument('--shapes', nargs='+', metavar='HxW',
                   help='input sizes to check (default: 224x224 256x320 231x197)')
    p.add_argument('--tolerance', type=float, default=1e-4,
                   help='largest relative difference allowed (default 1e-4)')
    p.add_argument('--min-size', metavar='HxW',
                   help='the smallest input the graph must be valid for (an error if '
                        'torch.export cannot prove it; default: the smallest it can prove)')
    p.add_argument('--no-optimize', action='store_true',
                   help="skip the exporter's ONNX graph optimiser (faster export; onnxruntime "
                        'optimises the graph when it loads it anyway)')
    return parse_tool_args(p, argv)


def main(argv=None):
    args = parse_args(argv)
    from dat_mm.deployment.onnx import DEFAULT_CHECK_SIZES, export_config, parse_size
    try:
        sizes = [parse_size(s) for s in args.shapes] if args.shapes else DEFAULT_CHECK_SIZES
        result, report = export_config(
            args.config, args.checkpoint, args.out, component=args.component,
            opset=args.opset, optimize=not args.no_optimize, sizes=sizes,
            tolerance=args.tolerance, cfg_options=args.cfg_options,
            min_size=parse_size(args.min_size) if args.min_size else None)
    # FileNotFoundError, CheckpointError / UnsafeCheckpointError, ExportError, a config error
    except (OSError, ValueError, KeyError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(report.format())
    if not report.passed:
        print(f'check FAILED: {result.path} differs from PyTorch beyond the tolerance (see '
              'above)', file=sys.stderr)
        return 1
    print(f'check passed: {result.path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
