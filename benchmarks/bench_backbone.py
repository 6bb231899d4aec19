"""Whole backbones: DAT-T++ / DAT-S++ (fast paths and reference) against mmdet's Swin-T/S.

Cases (override with --cases): 224x224 batch 8 inference (eval, no grad) and train step, and
800x1344 batch 1 train step. A *train step* is forward + backward of a fixed random linear
function of every output map (the dense-task backbone returns 4 maps) in train mode (drop
path as the presets: DAT-T++ 0.2, DAT-S++ 0.4, Swin-T 0.2, Swin-S 0.3), gradients set to
None before each step; no optimizer (its cost depends only on the parameter count).

Every (case, model, attention path) runs in its own subprocess, so that the peak-memory
figures do not see each other's allocations; on CPU its address space is capped at the
machine's available memory minus 2 GiB when it starts, so a run that would exhaust the
machine is reported as failed (allocation error) instead of ending the benchmark or
triggering the kernel's OOM killer.

Rounds (``--rounds N``, default 1): every (model, path) of a case runs once per round, in
turn, so that the rows being compared were measured minutes apart rather than one after the
other's whole series; a VM's slow phases then hit both. With N > 1 a row's time is the median
over all rounds' repeats, and "time / Swin" is the median of the per-round ratios (each round's
DAT median over the same round's Swin median), printed with their range.

Printed per row: median time, peak memory (see benchmarks/common.py), the error of the fast
path vs the reference path of the same model (norm-relative, worst over the 4 outputs and,
for train steps, every parameter gradient but the analytically zero one of proj_k.bias), the
time ratio vs Swin of the same size and vs the reference path, the model's FLOPs (MACs of one
forward pass as counted by dat_mm.analysis.count_model, x2 for FLOPs, x3 for a train step)
and the achieved FLOP/s as a fraction of the machine's float32 matmul peak measured in the
same run.

    python -m benchmarks.bench_backbone
    python -m benchmarks.bench_backbone --models dat-t++ swin-t --cases 224x224x8:infer
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

from benchmarks.common import (fmt_mib, fmt_ms, load_average, machine_info, matmul_peak, median,
                               peak_memory, rel_err, table, time_call)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWIN = {  # mmdet SwinTransformer as in mmdet's Swin-T / Swin-S detection configs
    'swin-t': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                   drop_path_rate=0.2),
    'swin-s': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                   drop_path_rate=0.3),
}
DAT_ARCH = {'dat-t++': 'tiny++', 'dat-s++': 'small++'}
PAIR = {'dat-t++': 'swin-t', 'dat-s++': 'swin-s'}


def build(name, backend=None):
    if name in SWIN:
        from mmdet.models.backbones import SwinTransformer
        return SwinTransformer(window_size=7, mlp_ratio=4, qkv_bias=True,
                               out_indices=(0, 1, 2, 3), **SWIN[name])
    from dat_mm import DAT
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

    weights = []

    def run():
        for p in params:
            p.grad = None
        outs = model(x)
        if not weights:  # fixed random weights per output (made in the first, untimed call)
            g = torch.Generator().manual_seed(2)
            weights.extend(torch.randn(o.shape, generator=g).to(o.device) / o.numel()
                           for o in outs)
        # a fixed random projection of each map: the outputs end in a LayerNorm, whose plain
        # mean or mean square have zero gradient (nothing but rounding noise to compare)
        sum((o.float() * w).sum() for o, w in zip(outs, weights)).backward()
        return [o.detach() for o in outs] + [p.grad for p in compared]
    return run


def _mem_available() -> int:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_memory(nbytes: int):
    """Cap this process's address space at its current size + ``nbytes``: an allocation beyond
    fails with an error here instead of waking the kernel's OOM killer on a shared machine."""
    import resource
    with open('/proc/self/status') as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmSize:'))
    resource.setrlimit(resource.RLIMIT_AS, (vm + nbytes, resource.RLIM_INFINITY))


def worker(args):
    """One (case, model, path) measurement; prints a JSON line."""
    if args.max_bytes:
        _limit_memory(args.max_bytes)
    if args.threads:
        torch.set_num_threads(args.threads)
    size, mode = args.case.split(':')
    H, W, B = (int(v) for v in size.split('x'))
    torch.manual_seed(0)
    model = build(args.model, args.backend).to(args.device)
    x = torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(0)).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = step_fn(model, x, mode)
    amp = (torch.autocast(torch.device(args.device).type, dtype=getattr(torch, args.amp))
           if args.amp else None)

    def call():
        if amp is None:
            return run()
        with amp:
            return run()
    torch.manual_seed(1)  # the same drop-path draws for both attention paths
    vals = call()
    result = {}
    if args.save_vals:
        torch.save([v.cpu() for v in vals], args.save_vals)
    if args.compare_vals:
        other = torch.load(args.compare_vals)
        result['err'] = max(rel_err(a.to(b.device), b) for a, b in zip(other, vals))
    del vals
    times = time_call(call, args.device, repeats=args.repeats, warmup=0, clock=args.clock)
    result['t'] = median(times)
    result['times'] = times
    result['mem'] = None if args.no_memory else peak_memory(call, args.device)
    print('RESULT ' + json.dumps(result), flush=True)


def run_worker(args, case, model, backend, extra):
    cmd = [sys.executable, '-m', 'benchmarks.bench_backbone', '--worker', '--case', case, '--model',
           model, '--repeats', str(args.repeats), '--device', args.device] + extra
    if backend:
        cmd += ['--backend', backend]
    for flag in ('threads', 'amp', 'clock'):
        if getattr(args, flag):
            cmd += [f'--{flag}', str(getattr(args, flag))]
    if args.channels_last and model in DAT_ARCH:
        cmd.append('--channels-last')
    if args.no_memory:
        cmd.append('--no-memory')
    if args.device == 'cpu':  # leave 2 GiB of the machine's available memory to others
        cmd += ['--max-bytes', str(max(1 << 30, _mem_available() - (2 << 30)))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {'failed': f'exit {proc.returncode}: ' + ' / '.join(tail)[-300:]}


def _merge_round(results, key, r):
    """Fold one round's worker result into the row: all repeats, each round's median, the
    worst error and peak memory seen; a failure in any round fails the row."""
    row = results.setdefault(key, {'times': [], 'round_t': [], 'mem': None})
    if 'failed' in row:
        return
    if 'failed' in r:
        results[key] = {'failed': r['failed']}
        return
    row['times'] += r['times']
    row['round_t'].append(r['t'])
    row['t'] = median(row['times'])
    if r.get('mem') is not None:
        row['mem'] = max(row['mem'] or 0, r['mem'])
    if 'err' in r:
        row['err'] = max(row.get('err', 0.0), r['err'])


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
    p.add_argument('--rounds', type=int, default=1,
                   help='interleaved rounds of all (model, path) rows of a case (see above)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads (default: torch\'s, one per core)')
    p.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                   help='wall clock, or process CPU time (for --threads 1 on a busy machine)')
    p.add_argument('--channels-last', action='store_true',
                   help='run DAT models and inputs in channels_last memory format')
    p.add_argument('--amp', default=None, help='autocast dtype, e.g. bfloat16')
    p.add_argument('--no-memory', action='store_true')
    # worker mode (internal)
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--case', help=argparse.SUPPRESS)
    p.add_argument('--model', help=argparse.SUPPRESS)
    p.add_argument('--backend', default=None, help=argparse.SUPPRESS)
    p.add_argument('--save-vals', default=None, help=argparse.SUPPRESS)
    p.add_argument('--compare-vals', default=None, help=argparse.SUPPRESS)
    p.add_argument('--max-bytes', type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    from dat_mm.analysis import count_model
    if args.rounds < 1:
        p.error('--rounds must be at least 1')
    print('# bench_backbone:', ' '.join(sys.argv[1:]) or '(defaults)')
    print(machine_info(args.device))
    print(f'timing clock: {args.clock}')
    peak = matmul_peak(args.device, clock=args.clock)
    print(f'measured float32 matmul peak: {peak / 1e9:.0f} GFLOP/s (4096^3 torch.mm, best of 5, '
          f'{args.clock} clock)')
    ref_cases = args.cases if args.reference is None else args.reference
    rows = []
    tmp = tempfile.mkdtemp(prefix='dat_mm_bench_')
    for case in args.cases:
        size, mode = case.split(':')
        H, W, B = (int(v) for v in size.split('x'))
        results = {}
        flops = {}
        for name in args.models:
            macs = count_model(build(name), (B, 3, H, W), device='meta').flops
            flops[name] = 2 * macs * (3 if mode == 'train' else 1)
        for rnd in range(args.rounds):
            for name in args.models:
                vals = os.path.join(tmp, 'vals.pt')
                paths = [('fast' if name in DAT_ARCH else '-', None, ['--save-vals', vals])]
                if name in DAT_ARCH and case in ref_cases:
                    paths.append(('reference', 'reference', ['--compare-vals', vals]))
                for label, backend, extra in paths:
                    r = run_worker(args, case, name, backend, extra)
                    _merge_round(results, (name, label), r)
                    print(f'  {case} {name} {label} round {rnd + 1}/{args.rounds}: ' +
                          (r['failed'] if 'failed' in r else
                           f"{fmt_ms(r['t'])} ms, times {[round(t, 3) for t in r['times']]}"),
                          flush=True)
                if os.path.exists(vals):
                    os.remove(vals)
        for (name, label), r in results.items():
            r.update(case=case, model=name, path=label, flops=flops[name])
            rows.append(r)
        for r in rows:
            if r['case'] != case or 'failed' in r:
                continue
            swin = results.get((PAIR.get(r['model']), '-'))
            r['vs_swin'] = '-'
            if swin and 'failed' not in swin:
                ratios = [a / b for a, b in zip(r['round_t'], swin['round_t'])]
                r['vs_swin'] = f'{median(ratios):.2f}'
                if len(ratios) > 1:
                    r['vs_swin'] += f' ({min(ratios):.2f}-{max(ratios):.2f})'
            ref = results.get((r['model'], 'reference'))
            ok = r['path'] == 'fast' and ref and 'failed' not in ref
            r['vs_ref'] = f"{ref['t'] / r['t']:.2f}" if ok else '-'
            r['mem_vs_ref'] = (f"{r['mem'] / ref['mem']:.2f}" if ok and r['mem'] and ref['mem']
                               else '-')
            if r['path'] == 'fast' and ref and 'err' in ref:
                r['err_s'] = f"{ref['err']:.1e}"
    os.rmdir(tmp)
    print()
    body = []
    for r in rows:
        if 'failed' in r:
            body.append([r['case'], r['model'], r['path'], 'failed: ' + r['failed']] +
                        ['-'] * 7)
            continue
        body.append([r['case'], r['model'], r['path'], fmt_ms(r['t']),
                     '-' if r['mem'] is None else fmt_mib(r['mem']), r.get('err_s', '-'),
                     r['vs_swin'], r['vs_ref'], r['mem_vs_ref'], f"{r['flops'] / 1e9:.1f}",
                     f"{r['flops'] / r['t'] / peak:.2f}"])
    print(table(['case', 'model', 'attention path', 'median ms', 'peak MiB', 'err vs ref',
                 'time / Swin', 'speed-up vs ref', 'mem / ref', 'GFLOP', 'FLOP/s / peak'],
                body))
    print(f'\nload average at end: {load_average()}')


if __name__ == '__main__':
    main()
