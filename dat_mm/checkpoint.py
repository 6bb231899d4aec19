"""Safe loading of MMEngine Runner checkpoints under torch >= 2.6.

The problem
-----------
Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: it unpickles only tensors,
plain containers and a fixed allow-list of globals. mmengine 0.10.7 predates that and calls
``torch.load(filename, map_location=...)`` in its local-file loader, but every checkpoint its
Runner saves carries, besides the weights, a ``message_hub`` state with

* ``mmengine.logging.history_buffer.HistoryBuffer`` objects,
* numpy arrays and scalars inside them (``numpy._core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype``, ``numpy._core.multiarray.scalar``),
* the buffers' statistics methods, which pickle protocol 2 stores as
  ``getattr(HistoryBuffer, 'min')`` (``__builtin__.getattr`` applied to the class),

and a param-scheduler state with ``collections.Counter``. So ``tools/test.py``
(``runner.load_checkpoint``), ``load_from`` and ``--resume`` all fail. Passing
``weights_only=False`` would make them work but lets any checkpoint run arbitrary code, and
allow-listing ``builtins.getattr`` in torch's unpickler amounts to the same thing
(``getattr`` reaches everything).

The design
----------
:func:`safe_load` unpickles with :class:`RestrictedUnpickler`, a ``pickle.Unpickler`` whose
``find_class`` only returns globals from an explicit allow-list:

* everything torch's own weights-only unpickler allows (tensor rebuild functions, storages,
  dtypes, ``torch.Size``, ``OrderedDict``, ``Counter``, ``set``, ...),
* the numpy functions/classes that rebuild arrays and scalars (numpy 2 names and the
  numpy 1 ``numpy.core`` names of older checkpoints),
* ``mmengine.logging.history_buffer.HistoryBuffer``,
* ``getattr`` **only** as a guarded stand-in: it resolves ``getattr(obj, name)`` when ``obj``
  is one of :data:`GETATTR_ALLOWED`'s targets (today ``HistoryBuffer``) and ``name`` is in its
  explicit list (``min``, ``max``, ``current``, ``mean``); anything else is refused.

Any other global raises :class:`UnsafeCheckpointError`, naming the global and the file, before
anything from that global is called: a payload such as ``os.system`` never runs. The
unpickler is passed to ``torch.load`` as ``pickle_module`` (torch subclasses
``pickle_module.Unpickler`` and keeps its own storage handling), so tensors, ``map_location``
and both the zip and the legacy format behave exactly as in ``torch.load``.

Importing :mod:`dat_mm` registers :func:`load_from_local_safe` as mmengine's loader for local
paths (``CheckpointLoader.register_scheme(prefixes='', force=True)``), which is what
``Runner.load_checkpoint``, ``load_from``, ``resume`` and ``init_cfg=dict(type='Pretrained')``
go through. Other schemes (http, s3, ...) are untouched. If ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
is set, torch's strict weights-only loader is used instead (as that variable asks).

To allow one more trusted class (e.g. a custom ``HistoryBuffer`` statistics function), call
:func:`allow_globals`. A file you trust completely can still be loaded with
``torch.load(path, weights_only=False)`` by hand; dat_mm never does that for you.
"""
import _compat_pickle
import io
import os
import os.path as osp
import pickle
import types
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch

__all__ = [
    'UnsafeCheckpointError', 'RestrictedUnpickler', 'GETATTR_ALLOWED', 'allow_globals',
    'allowed_global_names', 'safe_load', 'load_from_local_safe',
    'register_mmengine_loader'
]

# Attribute names the guarded getattr may fetch, per target object (identity match).
GETATTR_ALLOWED: Dict[Any, frozenset] = {}
_EXTRA_GLOBALS: Dict[Tuple[str, str], Any] = {}
_ALLOWED_CACHE: Optional[Dict[Tuple[str, str], Any]] = None


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a global that dat_mm does not allow to unpickle."""


def _guarded_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """The ``getattr`` seen by :class:`RestrictedUnpickler`: explicit (target, name) only."""
    if default:
        raise UnsafeCheckpointError('refusing getattr with a default value in a checkpoint')
    for target, names in GETATTR_ALLOWED.items():
        if obj is target:
            if isinstance(name, str) and name in names:
                return getattr(obj, name)
            raise UnsafeCheckpointError(
                f'refusing getattr({_describe(obj)}, {name!r}): only '
                f'{sorted(names)} may be fetched from {_describe(obj)}')
    raise UnsafeCheckpointError(
        f'refusing getattr({_describe(obj)}, {name!r}): getattr is only allowed on '
        f'{[_describe(t) for t in GETATTR_ALLOWED]}')


def _describe(obj: Any) -> str:
    if isinstance(obj, type) or callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
    return type(obj).__name__ + ' object'


def _numpy_globals() -> Dict[Tuple[str, str], Any]:
    import numpy as np
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    out = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype}
    for mod in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        out[(mod, '_reconstruct')] = multiarray._reconstruct
        out[(mod, 'scalar')] = multiarray.scalar
    # numpy 2 may name the concrete dtype classes (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                out[('numpy.dtypes', name)] = cls
    return out


def _build_allowed() -> Dict[Tuple[str, str], Any]:
    from torch import _weights_only_unpickler
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed: Dict[Tuple[str, str], Any] = {}
    for full_name, obj in _weights_only_unpickler._get_allowed_globals().items():
        module, _, name = full_name.rpartition('.')
        allowed[(module, name)] = obj
    allowed.update(_numpy_globals())
    allowed[('mmengine.logging.history_buffer', 'HistoryBuffer')] = HistoryBuffer
    allowed[('builtins', 'getattr')] = _guarded_getattr
    GETATTR_ALLOWED.setdefault(HistoryBuffer, frozenset({'min', 'max', 'current', 'mean'}))
    return allowed


def _allowed() -> Dict[Tuple[str, str], Any]:
    global _ALLOWED_CACHE
    if _ALLOWED_CACHE is None:
        _ALLOWED_CACHE = _build_allowed()
    merged = dict(_ALLOWED_CACHE)
    merged.update(_EXTRA_GLOBALS)
    return merged


def allowed_global_names() -> Tuple[str, ...]:
    """The fully qualified names :class:`RestrictedUnpickler` accepts (sorted)."""
    return tuple(sorted(f'{m}.{n}' for m, n in _allowed()))


def allow_globals(*objects: Any, getattr_names: Optional[Iterable[str]] = None) -> None:
    """Trust more classes/functions (by their ``__module__`` and ``__qualname__``).

    With ``getattr_names``, each object also becomes a target of the guarded ``getattr``
    for exactly those attribute names (how pickle protocol 2 stores methods of a class).
    """
    for obj in objects:
        module, qualname = getattr(obj, '__module__', None), getattr(obj, '__qualname__', None)
        if not module or not qualname or '<locals>' in qualname:
            raise TypeError(f'{obj!r} has no importable module/qualname to allow')
        _EXTRA_GLOBALS[(module, qualname)] = obj
        if getattr_names is not None:
            names = frozenset(getattr_names)
            GETATTR_ALLOWED[obj] = GETATTR_ALLOWED.get(obj, frozenset()) | names


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals (see module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 0-2 pickles may carry Python 2 names (``__builtin__``); map them the way
        # pickle does, then look up the allow-list. Nothing is imported here.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to unpickle global '{module}.{name}': it is not in dat_mm's "
                'checkpoint allow-list (tensors, containers, numpy arrays/scalars, '
                'mmengine HistoryBuffer). If you trust this file, allow it with '
                'dat_mm.checkpoint.allow_globals(...) or load it with '
                'torch.load(path, weights_only=False) yourself.') from None


def _load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# What torch.load needs from a ``pickle_module``: Unpickler (subclassed by torch), load
# (legacy format header), __name__.
restricted_pickle = types.ModuleType('dat_mm_restricted_pickle')
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _load
restricted_pickle.loads = _loads
restricted_pickle.UnpicklingError = pickle.UnpicklingError
restricted_pickle.__doc__ = 'pickle-compatible module that unpickles only allow-listed globals'


def _force_weights_only() -> bool:
    value = os.getenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower()
    return value in ('1', 'y', 'yes', 'true')


def safe_load(f: Any, map_location: Any = None) -> Any:
    """``torch.load`` with :class:`RestrictedUnpickler`; refuses non-allow-listed globals."""
    if _force_weights_only():
        return torch.load(f, map_location=map_location, weights_only=True)
    try:
        return torch.load(f, map_location=map_location, pickle_module=restricted_pickle,
                          weights_only=False)
    except UnsafeCheckpointError as err:
        where = f if isinstance(f, (str, os.PathLike)) else type(f).__name__
        raise UnsafeCheckpointError(f'{where}: {err}') from None


def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local paths, using :func:`safe_load`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load(filename, map_location=map_location)


def register_mmengine_loader(loader: Callable = load_from_local_safe) -> None:
    """Make ``loader`` mmengine's local-file checkpoint loader (done on ``import dat_mm``)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=loader, force=True)


register_mmengine_loader()
