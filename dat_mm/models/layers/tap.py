"""A named point where a layer shows tensors it computes internally to forward hooks."""
import torch.nn as nn


class Tap(nn.Module):
    """Identity on a dict of tensors, called by its owner only while ``enabled``.

    A layer that has internals worth inspecting (the deformable attention's sampling positions
    and attention probabilities) owns a ``Tap`` as a named sub-module. Off (the default) the
    layer skips it entirely and computes nothing extra. To look inside::

        tap = model.stages[2].blocks[1].attn.tap
        tap.enabled = True
        handle = tap.register_forward_hook(lambda mod, args, out: records.append(out))
        ...
        handle.remove(); tap.enabled = False

    The hook receives the dict the layer passes (its keys are documented by the layer). A
    ``Tap`` has no parameters or buffers, so state dicts are unchanged.
    """

    def __init__(self):
        super().__init__()
        self.enabled = False

    def forward(self, record: dict) -> dict:
        return record

    def extra_repr(self) -> str:
        return f'enabled={self.enabled}'
