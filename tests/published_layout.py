"""The authors' published key layout (docs/model.md) and the inverse of dat_mm's conversion.

Used by the tests to build published-format checkpoints from dat_mm models: every key produced
is checked against the list of published names (docs/model.md).
"""
import re

import torch

# -- the published key layout (docs/model.md) ------------------------------------------------
_WB = r'\.(weight|bias)$'
# D blocks, down projections and the classifier's norm/head: the same in DAT++ and v1
_SHARED = [
    r'^stages\.\d\.layer_norms\.\d+\.norm' + _WB,
    r'^stages\.\d\.attns\.\d+\.proj_(q|k|v|out)' + _WB,
    r'^stages\.\d\.attns\.\d+\.conv_offset\.0' + _WB,
    r'^stages\.\d\.attns\.\d+\.conv_offset\.1\.norm' + _WB,
    r'^stages\.\d\.attns\.\d+\.conv_offset\.3\.weight$',
    r'^stages\.\d\.attns\.\d+\.rpe_table$',
    r'^down_projs\.\d\.0\.weight$', r'^down_projs\.\d\.1\.norm' + _WB,
    r'^cls_norm\.norm' + _WB, r'^cls_head' + _WB,
]
PUBLISHED_V2 = _SHARED + [
    r'^patch_proj\.[03]' + _WB, r'^patch_proj\.[14]\.norm' + _WB,
    r'^stages\.\d\.local_perception_units\.\d+' + _WB,
    r'^stages\.\d\.mlps\.\d+\.(linear1\.0|linear2\.0|dwc)' + _WB,
    r'^stages\.\d\.attns\.\d+\.(qkv|proj)' + _WB, r'^stages\.\d\.attns\.\d+\.rpb$',
]
PUBLISHED_V1 = _SHARED + [
    r'^patch_proj\.0' + _WB, r'^patch_proj\.1\.norm' + _WB,
    r'^stages\.\d\.mlps\.\d+\.chunk\.linear[12]' + _WB,
    r'^stages\.\d\.attns\.\d+\.proj_(qkv|out)' + _WB,
    r'^stages\.\d\.attns\.\d+\.relative_position_(bias_table|index)$',
    r'^stages\.\d\.attns\.\d+\.attn_mask$',
]
DENSE_NORMS = r'^norms\.\d\.norm' + _WB


def _published_key(key, version, dense):
    """dat_mm backbone key -> the published name (the inverse of the conversion)."""
    rules = [
        (r'^stem\.(\d+)\.(weight|bias)$',
         lambda m: (f'patch_proj.{m[1]}.norm.{m[2]}'
                    if int(m[1]) in ((1, 4) if version == 2 else (1,))
                    else f'patch_proj.{m[1]}.{m[2]}')),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.norm([12])\.(.*)$',
         lambda m: f'stages.{m[1]}.layer_norms.{2 * int(m[2]) + int(m[3]) - 1}.norm.{m[4]}'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.lpu\.(.*)$',
         lambda m: f'stages.{m[1]}.local_perception_units.{m[2]}.{m[3]}'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.attn\.conv_offset\.1\.(.*)$',
         lambda m: f'stages.{m[1]}.attns.{m[2]}.conv_offset.1.norm.{m[3]}'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.attn\.(.*)$',
         lambda m: f'stages.{m[1]}.attns.{m[2]}.{m[3]}'),
        (r'^stages\.(\d+)\.blocks\.(\d+)\.mlp\.(.*)$',
         lambda m: f'stages.{m[1]}.mlps.{m[2]}.{m[3]}'),
        (r'^downsamples\.(\d+)\.0\.weight$', lambda m: f'down_projs.{m[1]}.0.weight'),
        (r'^downsamples\.(\d+)\.1\.(.*)$', lambda m: f'down_projs.{m[1]}.1.norm.{m[2]}'),
        (r'^norms\.(\d+)\.(.*)$',
         lambda m: f'norms.{m[1]}.norm.{m[2]}' if dense else f'cls_norm.norm.{m[2]}'),
    ]
    for pattern, repl in rules:
        m = re.match(pattern, key)
        if m:
            return repl(m)
    raise AssertionError(f'no published name for {key}')


def _swin_index(w):
    coords = [(a, b) for a in range(w) for b in range(w)]
    return torch.tensor([[(ya - yb + w - 1) * (2 * w - 1) + (xa - xb + w - 1)
                          for yb, xb in coords] for ya, xa in coords])


def _v1_buffers(depths, window=7, img_size=224):
    """The buffers the published v1 checkpoints carry: relative_position_index in every L/S
    block (stages 0-1: L S; stages 2-3: L D) and attn_mask in the S blocks."""
    out, fmap = {}, img_size // 4
    for i, depth in enumerate(depths):
        for j in range(0, depth, 2):  # L blocks
            out[f'stages.{i}.attns.{j}.relative_position_index'] = _swin_index(window)
            if i < 2:  # S blocks
                nw = (fmap // window) ** 2
                out[f'stages.{i}.attns.{j + 1}.relative_position_index'] = _swin_index(window)
                out[f'stages.{i}.attns.{j + 1}.attn_mask'] = torch.zeros(nw, window ** 2,
                                                                        window ** 2)
        fmap //= 2
    return out


def published_state(state, version, dense=False, head=None):
    """dat_mm backbone state dict (no prefix) -> published names, each checked against the
    published layout; ``head`` (an ``nn.Linear``) becomes ``cls_head``."""
    pub = {_published_key(k, version, dense): v.clone() for k, v in state.items()}
    assert len(pub) == len(state)
    if head is not None:
        pub['cls_head.weight'] = head.weight.detach().clone()
        pub['cls_head.bias'] = head.bias.detach().clone()
    allowed = (PUBLISHED_V2 if version == 2 else PUBLISHED_V1) + ([DENSE_NORMS] if dense else [])
    bad = [k for k in pub if not any(re.match(p, k) for p in allowed)]
    assert not bad, f'keys outside the published layout (docs/model.md): {bad}'
    return pub


def to_published(backbone, version, dense=False, head=None):
    """A DAT module -> its published-format state dict (with the v1 buffers for version 1)."""
    pub = published_state(backbone.state_dict(), version, dense, head)
    if version == 1:
        pub.update(_v1_buffers([len(s.blocks) for s in backbone.stages]))
    return pub
