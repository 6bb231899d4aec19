"""Turn a Runner checkpoint into a weights file that any loader reads.

    python tools/model_converters/publish_model.py IN.pth OUT.pth

A checkpoint that MMEngine's Runner saves holds, besides the weights, the optimiser and
scheduler state and the message hub's logged state. The Runner checkpoints dat_mm saves keep
all of it as tensors and builtin values, which any ``torch.load(weights_only=True)`` reads;
one saved without dat_mm's SafeCheckpointHook pickles mmengine HistoryBuffer objects and
numpy arrays, which plain ``torch.load`` refuses since torch 2.6 (and torch < 2.5 always).
dat_mm reads both (dat_mm.checkpoint.safe_load). OUT keeps the weights (``state_dict``) and a
``meta`` of plain values (epoch, iteration, the dataset's classes and palette, the source
file and its SHA-256): smaller, and readable by any tool. It is written atomically and checked
to load with ``torch.load(weights_only=True)`` and nothing else before the command reports
success.
"""
import argparse
import hashlib
import sys

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help='Runner checkpoint (.pth)')
    p.add_argument('dst', help='weights file to write (.pth)')
    return p.parse_args(argv)


def _plain(value):
    """``value`` as builtin containers and scalars, or None if it holds anything else."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) \
            else type(value)(items)
    if isinstance(value, dict):
        items = {k: _plain(v) for k, v in value.items()}
        ok = all(isinstance(k, str) for k in items) and not any(
            items[k] is None and value[k] is not None for k in items)
        return items if ok else None
    return None


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def main(argv=None):
    args = parse_args(argv)
    from dat_mm.checkpoint import CheckpointError, atomic_write, safe_load
    try:
        ckpt = safe_load(args.src, map_location='cpu')
    except (CheckpointError, FileNotFoundError) as err:
        print(f'publish_model: {err}', file=sys.stderr)
        return 1
    state = ckpt.get('state_dict') if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        print(f'publish_model: {args.src}: no state_dict of tensors (keys: '
              f'{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__})',
              file=sys.stderr)
        return 1
    meta_in = ckpt.get('meta') or {}
    meta = {k: _plain(meta_in[k]) for k in ('epoch', 'iter', 'mmengine', 'dataset_meta')
            if k in meta_in and _plain(meta_in[k]) is not None}
    meta.update(source=str(args.src), source_sha256=_sha256(args.src))
    out = {'state_dict': state, 'meta': meta}
    atomic_write(args.dst, lambda tmp: torch.save(out, tmp))
    torch.load(args.dst, map_location='cpu', weights_only=True)  # what any loader can read
    print(f'{args.dst}: {len(state)} tensors, sha256 {_sha256(args.dst)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
