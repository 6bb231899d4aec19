"""Autocast state of a tensor's device, and the dtypes of half-precision work, for the ops
that fix their own dtypes."""
import contextlib

import torch

#: Half types: their matmuls run as given, their softmax and accumulations in float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half inputs, else the inputs' own dtype."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def autocast_enabled(t: torch.Tensor) -> bool:
    """Whether autocast is on for ``t``'s device (``meta`` and others without autocast: no)."""
    dev = t.device.type
    if hasattr(torch.amp, 'is_autocast_available'):  # torch >= 2.4: one API for every device
        return torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)
    if dev == 'cpu':
        return torch.is_autocast_cpu_enabled()
    return dev == 'cuda' and torch.is_autocast_enabled()


def autocast_off(t: torch.Tensor):
    """A context without autocast on ``t``'s device (nothing to do where it is off, which
    includes devices without autocast such as ``meta``)."""
    if autocast_enabled(t):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()
