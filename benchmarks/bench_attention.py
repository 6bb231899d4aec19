"""Each attention kind at the stage shapes of a DAT++ model: reference vs fast backends.

For every stage that has the kind, at the stage shapes of a 224x224 batch-8 input and of an
800x1344 batch-1 input (override with --cases), the attention *function* (what the backends
replace; projections excluded) is run forward (no grad) and forward+backward (gradients of
every input: q, k, v and rpb / q, k, v, positions and rpe_table). Printed per row: median
time, peak memory (see benchmarks/common.py), the fast path's error vs the reference
(norm-relative, output for forward, worst gradient for forward+backward) and the ratios
reference/fast of time and memory.

    python -m benchmarks.bench_attention                     # tiny++, both cases
    python -m benchmarks.bench_attention --arch small++ --cases 224x224x8 --repeats 5
"""
import argparse
import functools
import sys

import torch

from benchmarks.common import (fmt_mib, fmt_ms, load_average, machine_info, median, peak_memory,
                               rel_err, table, time_call)
from dat_mm.models.backbones import resolve_arch
from dat_mm.models.layers import grid_coords
from dat_mm.ops import (can_run_dmha_chunked, can_run_na2d_tiled, dmha_chunked, dmha_reference,
                        na2d_reference, na2d_tiled)

#: Per kind: (name, function, its can_run check or None), the reference first, then the
#: automatic fast path.
BACKENDS = {
    'neighborhood': [('reference', na2d_reference, None),
                     ('tiled', na2d_tiled, can_run_na2d_tiled)],
    'deformable': [('reference', dmha_reference, None),
                   ('chunked', dmha_chunked, can_run_dmha_chunked),
                   # the chunked path with the grid_sample bias where it would choose the
                   # separable one: what the separable bias gains
                   ('chunked-grid', functools.partial(dmha_chunked, bias_method='grid'),
                    can_run_dmha_chunked)],
}
#: CPU only: the chunked path without ATen's fused CPU kernel in its forward chunks (on other
#: devices the same as ``chunked``): what that kernel gains.
CPU_ONLY = {'deformable': [('chunked-unfused', functools.partial(dmha_chunked, fused=False),
                            can_run_dmha_chunked)]}


def conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def stage_shapes(arch, H, W):
    """Per stage: (H, W) of its maps, its spec, and the deformable key grid (Hk, Wk)."""
    spec = resolve_arch(arch)
    h, w = conv_out(conv_out(H, 3, 2, 1), 3, 2, 1), conv_out(conv_out(W, 3, 2, 1), 3, 2, 1)
    out, fmap = [], spec.img_size // 4
    for i, st in enumerate(spec.stages):
        if i > 0:
            h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        pad = 0 if st.offset_kernel == st.stride else st.offset_kernel // 2
        hk, wk = conv_out(h, st.offset_kernel, st.stride, pad), conv_out(w, st.offset_kernel,
                                                                          st.stride, pad)
        out.append(dict(stage=i, H=h, W=w, spec=st, Hk=hk, Wk=wk, table=fmap,
                        ks=spec.na_kernel, kinds=sorted(set(st.blocks))))
        fmap //= 2
    return out


def make_inputs(kind, B, st, device, dtype, requires_grad):
    g = torch.Generator(device='cpu').manual_seed(0)

    def rnd(*shape, scale=1.0):
        t = (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)
        return t.requires_grad_(requires_grad)

    spec = st['spec']
    nh, c = spec.num_heads, spec.dim // spec.num_heads
    H, W = st['H'], st['W']
    if kind == 'neighborhood':
        ks = st['ks']
        pad_h, pad_w = max(H, ks), max(W, ks)  # the module pads maps smaller than the kernel
        q = rnd(B, nh, pad_h, pad_w, c, scale=c ** -0.5)
        return (q, rnd(B, nh, pad_h, pad_w, c), rnd(B, nh, pad_h, pad_w, c),
                rnd(nh, 2 * ks - 1, 2 * ks - 1, scale=0.02), ks), {}
    Ns = st['Hk'] * st['Wk']
    pos = (torch.rand(B, spec.groups, Ns, 2, generator=g) * 2.2 - 1.1).clamp(-1, 1)
    pos = pos.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    q_coords = grid_coords(H, W, 2, 'query', dtype, device).reshape(-1, 2)
    t = st['table']
    return (rnd(B, nh, H * W, c), rnd(B, nh, Ns, c), rnd(B, nh, Ns, c), pos, q_coords,
            rnd(nh, 2 * t - 1, 2 * t - 1, scale=0.01), c ** -0.5), {}


def runner(fn, args, kwargs, mode):
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def run():
        if mode == 'fwd':
            with torch.no_grad():
                return [fn(*args, **kwargs)]
        out = fn(*args, **kwargs)
        grads = torch.autograd.grad(out, diff, torch.ones_like(out) / out.numel() ** 0.5)
        return [out.detach()] + list(grads)
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', default='tiny++')
    p.add_argument('--cases', nargs='+', default=['224x224x8', '800x1344x1'],
                   help='HxWxBATCH input sizes')
    p.add_argument('--kinds', nargs='+', default=['neighborhood', 'deformable'])
    p.add_argument('--modes', nargs='+', default=['fwd', 'fwdbwd'])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=None,
                   help='torch.set_num_threads (default: torch\'s, one per core)')
    p.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                   help='wall clock, or process CPU time (for --threads 1 on a busy machine)')
    p.add_argument('--dtype', default='float32')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print('# bench_attention:', ' '.join(sys.argv[1:]) or '(defaults)')
    print(machine_info(args.device))
    print(f'timing clock: {args.clock}')
    rows = []
    for case in args.cases:
        H, W, B = (int(v) for v in case.split('x'))
        for st in stage_shapes(args.arch, H, W):
            for kind in args.kinds:
                if kind not in st['kinds']:
                    continue
                for mode in args.modes:
                    inputs, kwargs = make_inputs(kind, B, st, args.device, dtype,
                                                 mode == 'fwdbwd')
                    results = {}
                    ref_vals = runner(BACKENDS[kind][0][1], inputs, kwargs, mode)()
                    extra = CPU_ONLY.get(kind, []) if args.device == 'cpu' else []
                    for name, fn, can_run in BACKENDS[kind] + extra:
                        if can_run is not None and not can_run(*inputs, **kwargs):
                            print(f'  {kind} {name}: not run (run with DEBUG logging of '
                                  "'dat_mm.attention' for the reason)")
                            continue
                        run = runner(fn, inputs, kwargs, mode)
                        vals = ref_vals if can_run is None else run()
                        err = max(rel_err(v, r) for v, r in zip(vals, ref_vals))
                        del vals
                        times = time_call(run, args.device, repeats=args.repeats,
                                          clock=args.clock)
                        mem = None if args.no_memory else peak_memory(run, args.device)
                        results[name] = (median(times), mem, err)
                    del ref_vals
                    t_ref, m_ref, _ = results['reference']
                    shape = (f"{st['H']}x{st['W']}" + (f" vs {st['Hk']}x{st['Wk']}"
                                                        if kind == 'deformable' else ''))
                    for name, (t, m, err) in results.items():
                        rows.append([case, st['stage'], kind, shape, mode, name, fmt_ms(t),
                                     '-' if m is None else fmt_mib(m),
                                     '-' if name == 'reference' else f'{err:.1e}',
                                     f'{t_ref / t:.2f}',
                                     '-' if m is None or not m else f'{m_ref / m:.2f}'])
                    print('  done', case, st['stage'], kind, mode, flush=True)
    print()
    print(table(['input HxWxB', 'stage', 'kind', 'queries (vs keys)', 'mode', 'backend',
                 'median ms', 'peak MiB', 'err vs ref', 'speed-up', 'mem ratio'], rows))
    print(f'\nload average at end: {load_average()}')


if __name__ == '__main__':
    main()
