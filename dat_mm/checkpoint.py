"""Loading checkpoints safely, and writing them so that no crash can lose one.

The plain form
--------------
:class:`dat_mm.engine.SafeCheckpointHook` saves the Runner state that is not tensors and
builtin values (numpy RNG state and scalars, the message hub's ``HistoryBuffer`` objects,
the MultiStep schedulers' ``Counter``) as tagged dicts of tensors and builtin values
(:func:`to_plain`). torch's weights-only unpickler reads such a checkpoint with no global
allowed: plain ``torch.load`` of any torch from 2.1, and so tools outside dat_mm, read it.
:func:`safe_load` turns the tagged dicts back (:func:`from_plain`), checking each: an unknown
tag, a non-numeric dtype, a size that does not match or an inconsistent HistoryBuffer is an
:class:`UnsafeCheckpointError`.

Loading
-------
Every checkpoint dat_mm reads goes through :func:`safe_load`: ``torch.load(...,
weights_only=True)``, torch's restricted unpickler. For checkpoints with pickled Runner
state (saved by mmengine without SafeCheckpointHook), exactly the globals they need are added
for that one call (``torch.serialization.safe_globals``, torch >= 2.5; older torch refuses
them with a message that says so):

* ``mmengine.logging.history_buffer.HistoryBuffer`` (the message hub's logged scalars), bound
  to a checked stand-in whose ``__setstate__`` validates the state (numeric 1-D histories of
  equal length, a positive ``max_length``, statistics methods that are HistoryBuffer's own
  ``min``/``max``/``current``/``mean`` under their own names) and never writes into the class:
  mmengine's own ``__setstate__`` merges a checkpoint's statistics methods into the class-wide
  table, so a crafted file could make every buffer of the process report the max as the mean;
* ``getattr``, bound to a guarded stand-in that resolves only those four methods of
  HistoryBuffer (pickle protocol 2 stores a class's method as ``getattr(cls, name)``);
* the numpy functions and classes that rebuild arrays, scalars and dtypes (numpy 2 names and
  numpy 1's ``numpy.core`` names).

Everything else, including the ``os``/``subprocess``/``eval`` payloads of a hostile pickle,
is refused by torch before it is called, and TorchScript archives (which ``torch.load`` would
otherwise hand to ``torch.jit.load``, running their code) are refused before torch opens
them. An empty, truncated or foreign file is a :class:`CheckpointError`; a refused one an
:class:`UnsafeCheckpointError`; both name the file and the reason.

Nothing changes at ``import dat_mm``. mmengine's ``CheckpointLoader`` (``load_from``,
``resume``, ``Runner.load_checkpoint``, ``init_cfg`` Pretrained) uses :func:`safe_load` for
local paths once :func:`use_safe_loader` has run: dat_mm's tools call it, and so does
:class:`dat_mm.engine.SafeCheckpointHook` when a run starts, so every config of this project
gets it with any entry point (mmdet's own ``tools/test.py`` included). Users' scripts call
``dat_mm.checkpoint.use_safe_loader()`` once. Without it mmengine calls ``torch.load`` with
torch's ``weights_only`` default, which is safe too and reads checkpoints in the plain form
(SafeCheckpointHook turns their state back after loading), but not pickled Runner state. See
docs/reliability.md.

Writing
-------
:func:`atomic_write` writes a file next to its destination, fsyncs it and renames it over the
destination, then fsyncs the directory: a reader sees the old file or the new one, never a
part. :func:`is_complete_checkpoint` tells a whole checkpoint from a truncated one cheaply
(the zip's central directory, written last, must be readable).
"""
import os
import os.path as osp
import pickle
import zipfile
from contextlib import contextmanager
from math import prod
from typing import Any, Callable, Iterator, List, Optional, Tuple

import torch

__all__ = [
    'CheckpointError', 'UnsafeCheckpointError', 'safe_load', 'load_checkpoint', 'to_plain',
    'from_plain', 'PLAIN_TAG', 'CAN_EXTEND_ALLOW_LIST',
    'use_safe_loader',
    'checkpoint_globals', 'is_complete_checkpoint', 'atomic_write', 'atomic_write_text',
    'commit_temporary', 'temporary_name', 'safe_loader', 'check_file'
]

HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, empty, truncated, not a checkpoint."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint that asks for something dat_mm refuses to run or build while loading."""


# ---------------------------------------------------------------------------------------
# The globals a Runner checkpoint may name


def _history_buffer_class():
    from mmengine.logging.history_buffer import HistoryBuffer
    return HistoryBuffer


def _guarded_getattr(obj: Any, name: Any, *default: Any) -> Any:
    """``getattr`` as a checkpoint sees it: HistoryBuffer's own statistics methods only."""
    history_buffer = _history_buffer_class()
    if (not default and isinstance(obj, type) and issubclass(obj, history_buffer)
            and name in HISTORY_BUFFER_STATISTICS):
        return getattr(history_buffer, name)
    raise UnsafeCheckpointError(
        f'refusing getattr({getattr(obj, "__qualname__", type(obj).__name__)}, {name!r}): '
        f'a checkpoint may only name HistoryBuffer.{{{",".join(HISTORY_BUFFER_STATISTICS)}}}')


def _valid_max_length(value: Any) -> bool:
    """A HistoryBuffer ``max_length``: a positive int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _checked_history_buffer_class():
    """A HistoryBuffer subclass whose ``__setstate__`` validates and then becomes the real
    class (``type(buffer) is HistoryBuffer`` afterwards)."""
    import numpy as np
    history_buffer = _history_buffer_class()

    class CheckedHistoryBuffer(history_buffer):

        def __setstate__(self, state):
            if not isinstance(state, dict):
                raise UnsafeCheckpointError('HistoryBuffer state is not a dict')
            state = dict(state)
            methods = state.pop('statistics_methods', {})
            expected = {'max_length', '_log_history', '_count_history'}
            if set(state) != expected:
                raise UnsafeCheckpointError(
                    f'HistoryBuffer state has fields {sorted(state)}, expected '
                    f'{sorted(expected)}')
            if not isinstance(methods, dict) or any(
                    name not in HISTORY_BUFFER_STATISTICS
                    or fn is not getattr(history_buffer, name) for name, fn in methods.items()):
                raise UnsafeCheckpointError(
                    'HistoryBuffer state carries statistics methods other than its own '
                    f'{HISTORY_BUFFER_STATISTICS} under their own names')
            max_length = state['max_length']
            if not _valid_max_length(max_length):
                raise UnsafeCheckpointError(f'HistoryBuffer max_length {max_length!r}')
            logs, counts = state['_log_history'], state['_count_history']
            for arr in (logs, counts):
                if not isinstance(arr, np.ndarray) or arr.ndim != 1 or not (
                        np.issubdtype(arr.dtype, np.number) or arr.size == 0):
                    raise UnsafeCheckpointError(
                        'HistoryBuffer histories must be 1-D numeric arrays')
            if len(logs) != len(counts):
                raise UnsafeCheckpointError('HistoryBuffer histories differ in length')
            self.__class__ = history_buffer
            self.__dict__.update(state)

    CheckedHistoryBuffer.__module__ = history_buffer.__module__
    CheckedHistoryBuffer.__name__ = CheckedHistoryBuffer.__qualname__ = 'HistoryBuffer'
    return CheckedHistoryBuffer


def _numpy_globals() -> List[Tuple[Any, str]]:
    import numpy as np
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    out = [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        out.append((multiarray._reconstruct, f'{module}._reconstruct'))
        out.append((multiarray.scalar, f'{module}.scalar'))
    # a dtype's state is set on its concrete class (numpy.dtypes.Float64DType, ...)
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes['All']}
    out.extend((cls, f'numpy.dtypes.{cls.__name__}') for cls in dtype_classes)
    return out


_GLOBALS: Optional[List[Tuple[Any, str]]] = None


def checkpoint_globals() -> List[Tuple[Any, str]]:
    """``(object, name)`` pairs added to torch's weights-only allow-list while dat_mm loads a
    checkpoint (the format of ``torch.serialization.safe_globals``)."""
    global _GLOBALS
    if _GLOBALS is None:
        _GLOBALS = [(_guarded_getattr, 'builtins.getattr'),
                    (_checked_history_buffer_class(),
                     'mmengine.logging.history_buffer.HistoryBuffer')] + _numpy_globals()
    return list(_GLOBALS)


# ---------------------------------------------------------------------------------------
# The plain form: Runner state that any weights-only loader reads

#: Key of the dicts that stand for the non-container objects of a Runner checkpoint.
PLAIN_TAG = '__dat_mm_plain__'
_NUMERIC_KINDS = 'biufc'  # numpy dtype kinds a plain array or scalar may have


def to_plain(obj: Any) -> Any:
    """``obj`` with the objects that torch's weights-only unpickler does not read by default
    replaced by tagged dicts of tensors and builtin values: numeric numpy arrays and scalars,
    ``collections.Counter`` (MultiStep schedulers' milestones) and mmengine ``HistoryBuffer``
    (the message hub's logged scalars). Containers are rebuilt with their type (dict,
    OrderedDict, list, tuple); tensors and builtin values are kept; anything else is left as
    it is. :class:`SafeCheckpointHook` saves Runner checkpoints in this form, so that plain
    ``torch.load`` (any torch from 2.1) reads them; :func:`safe_load` turns them back."""
    import collections

    import numpy as np
    if isinstance(obj, np.ndarray) and obj.dtype.kind in _NUMERIC_KINDS:
        # the bytes, as uint8: every numeric dtype, on every torch (2.1 has no uint32)
        raw = np.frombuffer(np.ascontiguousarray(obj).tobytes(), dtype=np.uint8)
        return {PLAIN_TAG: 'ndarray', 'dtype': obj.dtype.str, 'shape': list(obj.shape),
                'data': torch.from_numpy(raw.copy())}
    if isinstance(obj, np.generic) and obj.dtype.kind in _NUMERIC_KINDS:  # np.float64 too
        return {PLAIN_TAG: 'scalar', 'dtype': obj.dtype.str, 'value': obj.item()}
    if isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, complex)) or obj is None:
        return obj
    if isinstance(obj, collections.Counter):
        return {PLAIN_TAG: 'Counter', 'items': [[to_plain(k), v] for k, v in obj.items()]}
    if type(obj) is _history_buffer_class():
        return {PLAIN_TAG: 'HistoryBuffer', 'max_length': obj.max_length,
                'log': to_plain(obj._log_history), 'count': to_plain(obj._count_history)}
    if type(obj) in (dict, collections.OrderedDict):
        return type(obj)((k, to_plain(v)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def _numeric_dtype(text: Any):
    """The numpy dtype ``text`` names if it is a numeric one (:data:`_NUMERIC_KINDS`), else
    None."""
    import numpy as np
    try:
        dtype = np.dtype(text) if isinstance(text, str) else None
    except TypeError:
        return None
    return dtype if dtype is not None and dtype.kind in _NUMERIC_KINDS else None


def _plain_array(node: Any, where: str):
    import numpy as np
    if not (isinstance(node, dict) and node.get(PLAIN_TAG) == 'ndarray'
            and set(node) == {PLAIN_TAG, 'dtype', 'shape', 'data'}
            and isinstance(node['data'], torch.Tensor) and node['data'].dtype == torch.uint8
            and node['data'].dim() == 1 and isinstance(node['dtype'], str)
            and isinstance(node['shape'], list)
            and all(type(n) is int and n >= 0 for n in node['shape'])):
        raise UnsafeCheckpointError(f'{where}: not a plain array')
    dtype = _numeric_dtype(node['dtype'])
    if dtype is None:
        raise UnsafeCheckpointError(f'{where}: plain array of dtype {node["dtype"]!r} (numeric '
                                    'dtypes only)')
    shape = tuple(node['shape'])
    if prod(shape) * dtype.itemsize != node['data'].numel():
        raise UnsafeCheckpointError(f'{where}: plain array of shape {shape} and dtype {dtype} '
                                    f'with {node["data"].numel()} bytes')
    return np.frombuffer(node['data'].cpu().numpy().tobytes(), dtype=dtype).reshape(shape)


def from_plain(obj: Any, where: str = 'checkpoint') -> Any:
    """The inverse of :func:`to_plain`, checking every tagged dict: an unknown tag, a
    non-numeric dtype or an inconsistent HistoryBuffer is an :class:`UnsafeCheckpointError`.
    Objects that are not tagged dicts pass through, so old checkpoints are unchanged."""
    import collections
    if type(obj) in (dict, collections.OrderedDict):
        tag = obj.get(PLAIN_TAG)
        if tag is None:
            return type(obj)((k, from_plain(v, f'{where}.{k}')) for k, v in obj.items())
        if tag == 'ndarray':
            return _plain_array(obj, where)
        if tag == 'scalar' and set(obj) == {PLAIN_TAG, 'dtype', 'value'}:
            value, dtype = obj['value'], _numeric_dtype(obj['dtype'])
            if isinstance(value, (bool, int, float, complex)) and dtype is not None:
                return dtype.type(value)
        elif tag == 'Counter' and set(obj) == {PLAIN_TAG, 'items'} and isinstance(
                obj['items'], list) and all(isinstance(i, list) and len(i) == 2
                                            for i in obj['items']):
            return collections.Counter({from_plain(k, where): v for k, v in obj['items']})
        elif tag == 'HistoryBuffer' and set(obj) == {PLAIN_TAG, 'max_length', 'log', 'count'}:
            logs = _plain_array(obj['log'], f'{where}.log')
            counts = _plain_array(obj['count'], f'{where}.count')
            max_length = obj['max_length']
            if (_valid_max_length(max_length) and logs.ndim == counts.ndim == 1
                    and len(logs) == len(counts) <= max_length):
                return _history_buffer_class()(logs, counts, max_length)
        raise UnsafeCheckpointError(f'{where}: malformed plain {tag!r} entry')
    if type(obj) in (list, tuple):
        return type(obj)(from_plain(v, f'{where}[{i}]') for i, v in enumerate(obj))
    return obj


# ---------------------------------------------------------------------------------------
# Loading


def _describe_path(f: Any) -> str:
    return os.fspath(f) if isinstance(f, (str, os.PathLike)) else f'<{type(f).__name__}>'


def check_file(path: str) -> None:
    """Refuse what torch.load should not see: a missing, empty, truncated or foreign file
    (``FileNotFoundError``, :class:`CheckpointError`), a TorchScript archive
    (:class:`UnsafeCheckpointError`). Cheap: reads the zip directory, not the data."""
    if not osp.exists(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if not osp.isfile(path):
        raise CheckpointError(f'{path}: not a file')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointError(f'{path}: the file is empty (0 bytes)')
    with open(path, 'rb') as fh:
        head = fh.read(4)
    if head.startswith(b'PK'):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(
                f'{path}: incomplete or damaged checkpoint ({size} bytes; its zip directory '
                f'cannot be read: {err}). A save that was interrupted leaves such a file.'
            ) from None
        if any(n.split('/', 1)[-1] == 'constants.pkl' or '/code/' in n for n in names):
            raise UnsafeCheckpointError(
                f'{path}: refused: a TorchScript archive (loading one runs the code inside '
                'it, so dat_mm never does; save weights with torch.save(model.state_dict()))')
    elif not head.startswith(b'\x80'):
        raise CheckpointError(f'{path}: not a PyTorch checkpoint (neither a zip archive nor '
                              f'a pickle; starts with {head!r})')


def _weights_only_reason(err: BaseException) -> str:
    """What torch's weights-only error says was refused, without its preamble (which
    suggests ``weights_only=False``) and its documentation link."""
    text = str(err)
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text.split(marker, 1)[1]
    parts = [p.strip() for p in text.split('\n\n') if p.strip()]
    parts = [p for p in parts if not p.startswith(('Weights only load failed',
                                                   'Check the documentation'))]
    return ' '.join(parts) or str(err).strip()


#: Whether this torch has ``torch.serialization.safe_globals`` (2.5+): globals allowed for one
#: load. Without it, checkpoints with pickled Runner state (not in the plain form) are refused.
CAN_EXTEND_ALLOW_LIST = hasattr(torch.serialization, 'safe_globals')


def _load_weights_only(f: Any, map_location: Any) -> Any:
    """``torch.load(weights_only=True)``, with :func:`checkpoint_globals` allowed where torch
    can allow globals for one call; older torch loads with its own allow-list alone (tensors,
    containers and builtin types: model weights, not Runner state)."""
    if not CAN_EXTEND_ALLOW_LIST:
        return torch.load(f, map_location=map_location, weights_only=True)
    with torch.serialization.safe_globals(checkpoint_globals()):
        return torch.load(f, map_location=map_location, weights_only=True)


def safe_load(f: Any, map_location: Any = None) -> Any:
    """``torch.load(f, weights_only=True)`` with the globals of :func:`checkpoint_globals`.

    Raises ``FileNotFoundError``, :class:`CheckpointError` (empty, truncated, not a
    checkpoint) or :class:`UnsafeCheckpointError` (TorchScript, a refused global, a forged
    HistoryBuffer), each naming the file.
    """
    where = _describe_path(f)
    if isinstance(f, (str, os.PathLike)):
        f = osp.expanduser(os.fspath(f))
        check_file(f)
    try:
        return from_plain(_load_weights_only(f, map_location), where)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f'{where}: refused: {err}') from None
    except pickle.UnpicklingError as err:
        reason = _weights_only_reason(err)
        if 'truncated' in reason or 'EOF' in reason:
            raise CheckpointError(f'{where}: incomplete or damaged checkpoint: {reason}') \
                from None
        if not CAN_EXTEND_ALLOW_LIST:
            raise UnsafeCheckpointError(
                f'{where}: refused: {reason} (torch {torch.__version__} loads tensors and '
                'containers only: its weights-only allow-list cannot be extended for one load, '
                'which reading the pickled numpy arrays and logged state of an mmengine Runner '
                "checkpoint needs; torch >= 2.5 reads those, and dat_mm's SafeCheckpointHook "
                'saves checkpoints that any torch reads)') from None
        raise UnsafeCheckpointError(
            f'{where}: refused: {reason} (dat_mm loads tensors, containers, numpy arrays and '
            'mmengine Runner state only)') from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        if 'TorchScript' in str(err):
            raise UnsafeCheckpointError(f'{where}: refused: a TorchScript archive (its code '
                                        'would run)') from None
        raise CheckpointError(
            f'{where}: incomplete or damaged checkpoint: {str(err).splitlines()[0]}') from None


def load_checkpoint(path: str, map_location: Any = 'cpu') -> Any:
    """A local checkpoint through :func:`safe_load`; a URL (``http://``, ``s3://``, ...)
    through mmengine's loader for its scheme (which calls ``torch.load`` with torch's
    ``weights_only`` default). For code of dat_mm that loads a file itself."""
    if '://' in str(path):
        from mmengine.runner.checkpoint import CheckpointLoader
        return CheckpointLoader.load_checkpoint(str(path), map_location=map_location)
    return safe_load(path, map_location=map_location)


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local paths (see :func:`use_safe_loader`)."""
    return safe_load(filename, map_location=map_location)


def _local_loader() -> Callable:
    from mmengine.runner.checkpoint import CheckpointLoader
    return CheckpointLoader._schemes['']


def use_safe_loader() -> Callable:
    """Make :func:`safe_load` mmengine's loader for local checkpoint paths; returns the
    loader it replaced. Idempotent. dat_mm's tools and :class:`SafeCheckpointHook` call it;
    call it once in a script that loads checkpoints through mmengine itself."""
    from mmengine.runner.checkpoint import CheckpointLoader
    previous = _local_loader()
    if previous is not load_from_local:
        CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    return previous


@contextmanager
def safe_loader() -> Iterator[None]:
    """:func:`use_safe_loader` for the duration of a ``with`` block."""
    from mmengine.runner.checkpoint import CheckpointLoader
    previous = use_safe_loader()
    try:
        yield
    finally:
        CheckpointLoader.register_scheme(prefixes='', loader=previous, force=True)


def is_complete_checkpoint(path: str) -> Tuple[bool, str]:
    """``(True, '')`` when ``path`` is a whole checkpoint file as far as can be told without
    reading it all (a zip whose directory, written last, reads; or a legacy pickle), else
    ``(False, reason)``. A file that must be refused raises :class:`UnsafeCheckpointError`
    instead of being passed over."""
    try:
        check_file(path)
    except UnsafeCheckpointError:
        raise
    except (OSError, CheckpointError) as err:
        return False, str(err)
    return True, ''


# ---------------------------------------------------------------------------------------
# Writing


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: str) -> str:
    """Where :func:`atomic_write` stages ``path``: a hidden sibling ending in ``.tmp``."""
    directory, name = osp.split(path)
    return osp.join(directory, f'.{name}.tmp')


def commit_temporary(path: str) -> None:
    """Make the file staged at ``temporary_name(path)`` durable and move it to ``path``:
    fsync it, rename it over ``path`` (atomic), fsync the directory."""
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(path))


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` to stage the file at ``temporary_name(path)``, then
    :func:`commit_temporary`. If anything fails, ``path`` is untouched and the staged file
    removed."""
    tmp = temporary_name(path)
    try:
        write(tmp)
        commit_temporary(path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write` of a small text file."""

    def write(tmp):
        with open(tmp, 'w') as fh:
            fh.write(text)

    atomic_write(path, write)
