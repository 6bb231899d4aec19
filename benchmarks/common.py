"""Shared helpers of the benchmark scripts: timing, peak memory, matmul peak, tables.

Timing: wall clock (``time.perf_counter``, after ``torch.cuda.synchronize`` on GPU) of each
repeat after warm-up runs; tables report the median. ``--clock cpu`` measures the process's
CPU time instead, for single-thread runs (``--threads 1``) on a machine other jobs load.

Peak memory: bytes of tensor memory allocated by PyTorch *during* one call, above what was
allocated before it (inputs, parameters and, for a train step, nothing of the previous step
survives).
  * CPU: the maximum of the allocator's running "Total Allocated" counter over the profiler's
    memory events (``torch.profiler`` with ``profile_memory=True``), measured in a separate
    run from the timed ones. It counts every tensor PyTorch allocates (activations kept for
    backward, temporaries, gradients); buffers that oneDNN/MKL allocate internally are not
    counted. (Process RSS would also count the allocator's cached pages and other threads.)
  * CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation before the call.
"""
import gc
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from typing import Callable, List, Sequence

import torch


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


#: ``time.perf_counter`` (wall clock, the default) or ``time.process_time`` (CPU time of the
#: process: with one thread on a machine shared with other jobs it leaves out the time spent
#: waiting for a core, which wall clock cannot).
CLOCK = {'wall': time.perf_counter, 'cpu': time.process_time}


def time_call(fn: Callable, device='cpu', repeats: int = 5, warmup: int = 1,
              clock: str = 'wall') -> List[float]:
    """Seconds per call of each repeat (after ``warmup`` untimed calls)."""
    now = CLOCK[clock]
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        gc.collect()
        sync(device)
        t = now()
        fn()
        sync(device)
        times.append(now() - t)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def peak_memory(fn: Callable, device='cpu') -> int:
    """Peak bytes PyTorch allocates during ``fn()`` beyond what is allocated before it."""
    gc.collect()
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix='.json')
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)['traceEvents']
    finally:
        os.remove(path)
    totals = [e['args']['Total Allocated'] for e in events
              if e.get('name') == '[memory]' and e.get('args', {}).get('Device Type', 0) == 0]
    return max([0] + totals)


def matmul_peak(device='cpu', dtype=torch.float32, n: int = 4096, repeats: int = 5,
                clock: str = 'wall') -> float:
    """Best measured FLOP/s (2 n^3 per product) of a square matrix product."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_call(lambda: torch.mm(a, b), device, repeats=repeats, warmup=2, clock=clock)
    return 2 * n ** 3 / min(times)


def rel_err(got: torch.Tensor, exp: torch.Tensor) -> float:
    got, exp = got.detach().double(), exp.detach().double()
    return ((got - exp).norm() / exp.norm().clamp_min(1e-30)).item()


def machine_info(device='cpu') -> str:
    lines = [f'torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, '
             f'python {platform.python_version()}']
    if torch.device(device).type == 'cuda':
        lines.append(f'GPU: {torch.cuda.get_device_name()}')
    else:
        model = platform.processor()
        try:
            with open('/proc/cpuinfo') as f:
                for line in f:
                    if line.startswith('model name'):
                        model = line.split(':', 1)[1].strip()
                        break
        except OSError:
            pass
        lines.append(f'CPU: {model}, {os.cpu_count()} logical CPUs visible, '
                     f'capability {torch.backends.cpu.get_cpu_capability()}')
    lines.append(f'load average at start: {load_average()}')
    return '\n'.join(lines)


def load_average() -> str:
    try:
        return ' '.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError:
        return 'n/a'


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f'{ms:.0f}' if ms >= 100 else f'{ms:.1f}' if ms >= 10 else f'{ms:.2f}'


def fmt_mib(nbytes: int) -> str:
    return f'{nbytes / 2 ** 20:.0f}' if nbytes >= 10 * 2 ** 20 else f'{nbytes / 2 ** 20:.1f}'


def table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-markdown table."""
    out = ['| ' + ' | '.join(headers) + ' |', '|' + '|'.join('---' for _ in headers) + '|']
    for r in rows:
        out.append('| ' + ' | '.join(str(c) for c in r) + ' |')
    return '\n'.join(out)


def commit_of(tree: str, dirty_paths: Sequence[str] = ()) -> str:
    """The short commit of the git checkout ``tree`` ('?' if none), with a remark when any of
    ``dirty_paths`` (relative to ``tree``) has uncommitted changes."""
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=tree,
                              capture_output=True, text=True).stdout.strip() or '?'
        dirty = dirty_paths and subprocess.run(
            ['git', 'status', '--porcelain', '--', *dirty_paths], cwd=tree,
            capture_output=True, text=True).stdout.strip()
    except OSError:
        return '?'
    return head + (f' ({" or ".join(p + "/" for p in dirty_paths)} modified)' if dirty else '')
