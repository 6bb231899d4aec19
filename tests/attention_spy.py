"""Count which attention implementation runs: ``with spy_attention() as calls: ...`` gives
``{(kind, backend): number of calls}`` for the forwards inside the block."""
from contextlib import contextmanager

import dat_mm.ops.deformable as deformable
import dat_mm.ops.neighborhood as neighborhood

# (module whose entry point calls the function, function name, kind, backend)
_FUNCTIONS = [
    (neighborhood, 'na2d_tiled', 'neighborhood', 'tiled'),
    (neighborhood, 'na2d_reference', 'neighborhood', 'reference'),
    (deformable, 'dmha_chunked', 'deformable', 'chunked'),
    (deformable, 'dmha_reference', 'deformable', 'reference'),
]


@contextmanager
def spy_attention():
    calls = {}
    saved = [(mod, name, getattr(mod, name)) for mod, name, _, _ in _FUNCTIONS]
    try:
        for mod, name, kind, backend in _FUNCTIONS:
            def counted(*args, _fn=getattr(mod, name), _key=(kind, backend), **kwargs):
                calls[_key] = calls.get(_key, 0) + 1
                return _fn(*args, **kwargs)
            setattr(mod, name, counted)
        yield calls
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
