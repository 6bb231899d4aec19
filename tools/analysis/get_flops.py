"""Parameters and FLOPs of the model a config builds, per part, with the paper's figure.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--device meta|cpu|cuda]
    python tools/analysis/get_flops.py --presets     # every published model vs its paper

mmpretrain configs count the whole classifier (backbone, LN, pooling, fc); det/seg configs
count the backbone. FLOPs are multiply-accumulates; the attention matmuls, softmax and
grid_sample are included. The counting rule is in dat_mm/analysis/flops.py and docs/flops.md.
"""
import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', nargs='?', help='config file (mmpretrain, mmdet or mmseg)')
    p.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                   help='input H W (or one side); default: the classifier test size, else 224')
    p.add_argument('--device', default='meta',
                   help="where the counting pass runs: 'meta' (shapes only, default) or a "
                        'real device')
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
    from dat_mm.analysis.flops import count_config, paper_comparison
    if args.presets:
        print('Published classifiers (FLOPs = multiply-accumulates, as in the papers)')
        print(f'{"model":<13}{"input":>6}{"params":>14}{"paper":>9}{"counted":>10}{"diff":>8}')
        for name, side, paper, ours, params in paper_comparison(device=args.device):
            print(f'{name:<13}{side:>6}{params:>14,}{paper:>8.1f}G{ours:>9.2f}G'
                  f'{(ours / paper - 1) * 100:>+7.1f}%')
        if not args.config:
            return 0
        print()
    shape = None
    if args.shape:
        shape = tuple(args.shape) * (2 if len(args.shape) == 1 else 1)
    report = count_config(args.config, shape=shape, device=args.device)
    print(report.format())
    return 0


if __name__ == '__main__':
    sys.exit(main())
