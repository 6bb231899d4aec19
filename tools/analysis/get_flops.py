"""Parameters and FLOPs of the model a config builds, per part, with the paper's figure.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--backbone-only] [--device D]
    python tools/analysis/get_flops.py --presets     # every published classifier vs its paper

The whole model is counted: a classifier's backbone, neck and head; a segmentor's backbone,
neck and decode head; a detector's backbone, neck and heads through its predict pass, at the
recipe's proposal and detection numbers (printed below the table). ``--backbone-only`` counts
the backbone alone. FLOPs are multiply-accumulates; the attention matmuls, softmax and
grid_sample are included. The counting rule is in dat_mm/analysis/flops.py and docs/flops.md.
"""
import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', nargs='?', help='config file (mmpretrain, mmdet or mmseg)')
    p.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                   help='input H W (or one side); default: the test pipeline\'s fixed size '
                        '(classifiers), else 224')
    p.add_argument('--backbone-only', action='store_true', help='count the backbone alone')
    p.add_argument('--device', default=None,
                   help="where the counting pass runs: default 'meta' (shapes only) for "
                        "classifiers, segmentors and backbones, 'cpu' for detectors (their "
                        'heads keep boxes by score, so they need values)')
    p.add_argument('--presets', action='store_true',
                   help='count every published DAT / DAT++ classifier and compare with the '
                        'papers')
    args = p.parse_args(argv)
    if not args.config and not args.presets:
        p.error('give a CONFIG or --presets')
    if args.shape is not None and len(args.shape) not in (1, 2):
        p.error('--shape takes H W or a single side')
    return args


def main(argv=None):
    args = parse_args(argv)
    import dat_mm  # noqa: F401  (dat_mm:: configs)
    from dat_mm.analysis.flops import count_config, paper_comparison
    if args.presets:
        print('Published classifiers (FLOPs = multiply-accumulates, as in the papers)')
        print(f'{"model":<13}{"input":>6}{"params":>14}{"paper":>9}{"counted":>10}{"diff":>8}')
        for name, side, paper, ours, params in paper_comparison(device=args.device or 'meta'):
            print(f'{name:<13}{side:>6}{params:>14,}{paper:>8.1f}G{ours:>9.2f}G'
                  f'{(ours / paper - 1) * 100:>+7.1f}%')
        if not args.config:
            return 0
        print()
    shape = None
    if args.shape:
        shape = tuple(args.shape) * (2 if len(args.shape) == 1 else 1)
    report = count_config(args.config, shape=shape, device=args.device,
                          backbone_only=args.backbone_only)
    print(report.format())
    return 0


if __name__ == '__main__':
    sys.exit(main())
