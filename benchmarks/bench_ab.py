"""The same backbone measurement in two checkouts (two commits), in interleaved rounds.

For each case and model, every round runs bench_backbone's worker (one subprocess: build,
warm-up, ``--repeats`` timed steps, then the peak-memory run) once in checkout A and once in
checkout B, alternating which goes first, so that the two are measured seconds apart and a slow
phase of the machine hits both. Printed per (case, model): the median time and peak memory of
each checkout, and the median and range of the per-round time ratios B / A. A ratio whose
range contains 1.00 is inside the machine's noise for that many rounds.

Both checkouts need ``benchmarks/bench_backbone.py`` with its worker mode; make the other
checkout with ``git worktree add /tmp/before COMMIT``.

    python -m benchmarks.bench_ab --a /tmp/before --b . --models dat-t++ \\
        --cases 224x224x8:train 224x224x8:infer --rounds 5
"""
import argparse
import json
import os
import subprocess
import sys

from benchmarks.common import (commit_of, fmt_mib, fmt_ms, load_average, machine_info, median,
                               table)


def run_worker(tree, case, model, repeats, threads):
    cmd = [sys.executable, '-m', 'benchmarks.bench_backbone', '--worker', '--case', case,
           '--model', model, '--repeats', str(repeats), '--device', 'cpu']
    if threads:
        cmd += ['--threads', str(threads)]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f'{tree}: {case} {model}: exit {proc.returncode}: ' + ' / '.join(tail))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--a', required=True, help='checkout A (the baseline)')
    p.add_argument('--b', required=True, help='checkout B')
    p.add_argument('--models', nargs='+', default=['dat-t++'])
    p.add_argument('--cases', nargs='+', default=['224x224x8:train', '224x224x8:infer'])
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args()
    trees = {'A': args.a, 'B': args.b}
    print('# bench_ab:', ' '.join(sys.argv[1:]))
    print(machine_info('cpu'))
    print('A:', os.path.abspath(args.a), commit_of(args.a), '(working tree as it is)')
    print('B:', os.path.abspath(args.b), commit_of(args.b), '(working tree as it is)')
    rows = []
    for case in args.cases:
        for model in args.models:
            res = {'A': [], 'B': []}
            for rnd in range(args.rounds):
                order = ('A', 'B') if rnd % 2 == 0 else ('B', 'A')
                for name in order:
                    res[name].append(run_worker(trees[name], case, model, args.repeats,
                                                args.threads))
                a, b = res['A'][-1]['t'], res['B'][-1]['t']
                print(f'  {case} {model} round {rnd + 1}/{args.rounds}: A {fmt_ms(a)} ms, '
                      f'B {fmt_ms(b)} ms, B/A {b / a:.3f}', flush=True)
            ratios = [rb['t'] / ra['t'] for ra, rb in zip(res['A'], res['B'])]
            mem = {k: max((r.get('mem') or 0) for r in v) for k, v in res.items()}
            rows.append([case, model,
                         fmt_ms(median([t for r in res['A'] for t in r['times']])),
                         fmt_ms(median([t for r in res['B'] for t in r['times']])),
                         f'{median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})',
                         fmt_mib(mem['A']), fmt_mib(mem['B']),
                         f"{mem['B'] / mem['A']:.3f}" if mem['A'] else '-'])
    print()
    print(table(['case', 'model', 'A median ms', 'B median ms', 'time B / A (range)',
                 'A peak MiB', 'B peak MiB', 'mem B / A'], rows))
    print(f'\nload average at end: {load_average()}')


if __name__ == '__main__':
    main()
