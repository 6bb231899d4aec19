"""Latency of an exported ONNX model in onnxruntime (CPU) against PyTorch eager, batch 1.

Rows: PyTorch eager with the attention paths it chooses by default (the fast paths where they
apply, channels_last maps on CPU: what a PyTorch user runs), PyTorch eager on the reference
paths (the math that is exported; see dat_mm/deployment/onnx.py), and onnxruntime's CPU
execution provider on the exported graph (its default graph optimisations). Both libraries use
the same number of intra-op threads (``--threads``, default: one per core).

Rounds: every row runs ``--repeats`` timed calls (after one untimed call in the first round)
once per round, in turn, so that a slow phase of the machine hits all rows. A row's time is the
median over all its calls; "ONNX / eager" is the median of the per-round ratios of
onnxruntime's round median to the default eager path's, with their range. The outputs of
onnxruntime and the default eager path are compared as the exporter's check does (largest
difference relative to the output's largest magnitude).

    python -m benchmarks.bench_onnx --config configs/mmpretrain/dat_t_pp_in1k.py --shape 224x224
    python -m benchmarks.bench_onnx --config configs/mmdet/mask_rcnn_dat_t_pp_1x.py \\
        --component backbone --shape 512x512 --onnx existing.onnx
"""
import argparse
import copy
import datetime
import os
import sys
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import (commit_of, fmt_ms, load_average, machine_info, median, table,
                               time_call)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default='configs/mmpretrain/dat_t_pp_in1k.py')
    p.add_argument('--component', default=None,
                   help='backbone, backbone+neck or whole (default: as the exporter)')
    p.add_argument('--shape', default='224x224', help='input HxW (batch 1)')
    p.add_argument('--onnx', default=None,
                   help='an ONNX file exported from this config and component (default: '
                        'export one into a temporary directory first)')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=None,
                   help='intra-op threads of both torch and onnxruntime (default: one per '
                        'core)')
    args = p.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        p.error('--rounds and --repeats must be at least 1')
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    from dat_mm.deployment.onnx import (component_module, export_onnx, load_model, onnx_versions,
                                        ort_session, parse_size, use_exportable_paths)
    h, w = parse_size(args.shape)
    print('# bench_onnx:', ' '.join(sys.argv[1:]) or '(defaults)')
    print(f'date {datetime.date.today().isoformat()}, commit '
          f'{commit_of(REPO, ("dat_mm", "benchmarks"))}')
    print(machine_info('cpu'))
    print(', '.join(f'{k} {v}' for k, v in onnx_versions().items()),
          f'; {threads} intra-op threads for torch and onnxruntime')

    model, _, _ = load_model(args.config)
    exported, component, names = component_module(model, args.component, args.config)
    eager = copy.deepcopy(exported).eval()      # default attention paths and memory layout
    reference = exported                        # becomes the exported module
    use_exportable_paths(reference)
    tmp = None
    path = args.onnx
    if path is None:
        tmp = tempfile.mkdtemp(prefix='dat_mm_onnx_')
        path = os.path.join(tmp, 'model.onnx')
        t = time.perf_counter()
        export_onnx(reference, path, where=args.config, component=component,
                    output_names=names)
        print(f'exported {component} in {time.perf_counter() - t:.0f} s')
    session = ort_session(path, threads)
    x = torch.randn(1, 3, h, w)
    feed = {session.get_inputs()[0].name: x.numpy()}

    def run_eager():
        with torch.no_grad():
            return eager(x)

    def run_reference():
        with torch.no_grad():
            return reference(x)

    def run_ort():
        return session.run(None, feed)

    rows = [('PyTorch eager, default paths', run_eager),
            ('PyTorch eager, reference paths', run_reference),
            ('onnxruntime CPU', run_ort)]
    got, expected = run_ort(), run_eager()
    err = max(float(np.abs(g - e.numpy()).max() / np.abs(e.numpy()).max())
              for g, e in zip(got, expected))
    times = {name: [] for name, _ in rows}
    round_medians = {name: [] for name, _ in rows}
    for rnd in range(args.rounds):
        for name, fn in rows:
            # one untimed call per row before its first round
            ts = time_call(fn, 'cpu', repeats=args.repeats, warmup=int(rnd == 0))
            times[name] += ts
            round_medians[name].append(median(ts))
        print(f'  round {rnd + 1}/{args.rounds}: ' + ', '.join(
            f'{name} {fmt_ms(round_medians[name][-1])} ms' for name, _ in rows), flush=True)
    ratios = [o / e for o, e in zip(round_medians['onnxruntime CPU'],
                                    round_medians['PyTorch eager, default paths'])]
    print(f'\n{args.config} {component} {h}x{w} batch 1, {args.rounds} rounds x '
          f'{args.repeats} calls; onnxruntime vs default eager: max rel diff {err:.1e}; '
          f'load average at end: {load_average()}')
    print(table(['path', 'median ms', 'ONNX / eager (default paths)'],
                [[name, fmt_ms(median(times[name])),
                  f'{median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})'
                  if name == 'onnxruntime CPU' else ''] for name, _ in rows]))
    if tmp is not None:
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)
    return 0


if __name__ == '__main__':
    sys.exit(main())
