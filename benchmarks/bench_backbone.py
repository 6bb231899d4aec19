"""Whole backbones: DAT-T++ / DAT-S++ (fast paths and reference) against mmdet's Swin-T/S.

Cases (override with --cases): 224x224 batch 8 inference (eval, no grad) and train step, and
800x1344 batch 1 train step. A *train step* is forward + backward of the mean of every output
map (the dense-task backbone returns 4 maps) in train mode, gradients zeroed before each step;
no optimizer (its cost depends only on the parameter count).

Printed per row: median time, peak memory (see benchmarks/common.py), the error of the fast
path vs the reference path of the same model (norm-relative, worst over the 4 outputs and,
for train steps, the parameter gradients), the time ratio vs Swin of the same size and vs
the reference path, the model's FLOPs (MACs of one forward pass as counted by
dat_mm.analysis.count_model, x2 for FLOPs, x3 for a train step) and the achieved FLOP/s as a
fraction of the machine's measured float32 matmul peak (same run).

    python benchmarks/bench_backbone.py
    python benchmarks/bench_backbone.py --models dat-t++ swin-t --cases 224x224x8:infer
"""
import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (fmt_mib, fmt_ms, load_average, machine_info, matmul_peak,  # noqa: E402
                    median, peak_memory, rel_err, table, time_call)

from dat_mm import DAT  # noqa: E402
from dat_mm.analysis import count_model  # noqa: E402

SWIN = {  # mmdet SwinTransformer settings of the Swin-T / Swin-S detection configs
    'swin-t': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                   drop_path_rate=0.2),
    'swin-s': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                   drop_path_rate=0.2),
}
DAT_ARCH = {'dat-t++': 'tiny++', 'dat-s++': 'small++'}
PAIR = {'dat-t++': 'swin-t', 'dat-s++': 'swin-s'}


def build(name, backend=None):
    if name in SWIN:
        from mmdet.models.backbones import SwinTransformer
        return SwinTransformer(window_size=7, mlp_ratio=4, qkv_bias=True,
                               out_indices=(0, 1, 2, 3), **SWIN[name])
    # the published dense-task settings (drop path as the ImageNet preset)
    return DAT(DAT_ARCH[name], attn_backend=backend)


def step_fn(model, x, mode):
    if mode == 'infer':
        model.eval()

        def run():
            with torch.no_grad():
                return [o for o in model(x)]
        return run
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # compared gradients: all but proj_k.bias of deformable attention, whose gradient is zero
    # analytically (softmax is invariant to adding q.b_k to every logit of a query), so both
    # paths return rounding noise there
    compared = [p for n, p in model.named_parameters()
                if p.requires_grad and not n.endswith('proj_k.bias')]

    def run():
        for p in params:
            p.grad = None
        outs = model(x)
        sum(o.float().mean() for o in outs).backward()
        return [o.detach() for o in outs] + [p.grad for p in compared]
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=['dat-t++', 'swin-t', 'dat-s++', 'swin-s'])
    p.add_argument('--cases', nargs='+',
                   default=['224x224x8:infer', '224x224x8:train', '800x1344x1:train'],
                   help='HxWxBATCH:{infer,train}')
    p.add_argument('--reference', nargs='*', default=None,
                   help='cases (as in --cases) that also run the DAT reference path '
                        '(default: all)')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads (default: torch\'s, one per core)')
    p.add_argument('--channels-last', action='store_true',
                   help='run DAT models and inputs in channels_last memory format')
    p.add_argument('--no-memory', action='store_true')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print('# bench_backbone:', ' '.join(sys.argv[1:]) or '(defaults)')
    print(machine_info(args.device))
    peak = matmul_peak(args.device)
    print(f'measured float32 matmul peak: {peak / 1e9:.0f} GFLOP/s (4096^3 torch.mm, best of 5)')
    ref_cases = args.cases if args.reference is None else args.reference
    rows = []
    for case in args.cases:
        size, mode = case.split(':')
        H, W, B = (int(v) for v in size.split('x'))
        x = torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(0)).to(args.device)
        times = {}
        for name in args.models:
            torch.manual_seed(0)
            model = build(name).to(args.device)
            macs = count_model(copy.deepcopy(model).cpu(), (B, 3, H, W), device='meta').flops
            flops = 2 * macs * (3 if mode == 'train' else 1)
            variants = [('fast' if name in DAT_ARCH else '', None)]
            if name in DAT_ARCH and case in ref_cases:
                variants.append(('reference', 'reference'))
            ref_vals = None
            for label, backend in variants:
                for m in model.modules():
                    if hasattr(m, 'backend') and name in DAT_ARCH:
                        m.backend = backend
                xi = x
                if args.channels_last and name in DAT_ARCH:
                    model = model.to(memory_format=torch.channels_last)
                    xi = x.contiguous(memory_format=torch.channels_last)
                run = step_fn(model, xi, mode)
                torch.manual_seed(1)  # same drop-path draws for both paths
                vals = run()
                if label == 'reference':
                    ref_vals = vals
                else:
                    fast_vals = vals
                del vals
                ts = time_call(run, args.device, repeats=args.repeats)
                mem = None if args.no_memory else peak_memory(run, args.device)
                times[(name, label)] = (median(ts), mem)
                print(f'  done {case} {name} {label}: {fmt_ms(median(ts))} ms', flush=True)
            err = '-'
            if ref_vals is not None:
                err = f'{max(rel_err(a, b) for a, b in zip(fast_vals, ref_vals)):.1e}'
            fast_vals = ref_vals = None
            for label, _ in variants:
                t, mem = times[(name, label)]
                rows.append(dict(case=case, model=name, path=label or '-', t=t, mem=mem,
                                 err=err if label == 'fast' else '-', flops=flops))
            del model
        for r in rows:
            if r['case'] != case:
                continue
            swin = times.get((PAIR.get(r['model']), ''))
            r['vs_swin'] = f"{r['t'] / swin[0]:.2f}" if swin else '-'
            ref = times.get((r['model'], 'reference'))
            r['vs_ref'] = (f"{ref[0] / r['t']:.2f}" if ref and r['path'] == 'fast' else '-')
            r['mem_vs_ref'] = (f"{r['mem'] / ref[1]:.2f}" if ref and r['path'] == 'fast'
                               and r['mem'] and ref[1] else '-')
    print()
    print(table(['case', 'model', 'attention path', 'median ms', 'peak MiB', 'err vs ref',
                 'time / Swin', 'speed-up vs ref', 'mem / ref', 'GFLOP', 'FLOP/s / peak'],
                [[r['case'], r['model'], r['path'], fmt_ms(r['t']),
                  '-' if r['mem'] is None else fmt_mib(r['mem']), r['err'], r['vs_swin'],
                  r['vs_ref'], r['mem_vs_ref'], f"{r['flops'] / 1e9:.1f}",
                  f"{r['flops'] / r['t'] / peak:.2f}"] for r in rows]))
    print(f'\nload average at end: {load_average()}')


if __name__ == '__main__':
    main()
