"""Named DAT / DAT++ architectures and the validation of custom ones.

An architecture is a version-wide part (stem, MLP, LPU, coordinate formulas, ``img_size``,
kernel sizes) and one :class:`StageSpec` per stage. Block kinds are names; the published letter
specs are accepted too (``'N'`` neighbourhood, ``'D'`` deformable, ``'L'`` window, ``'S'``
shifted window), and a stage's ``blocks`` pattern repeats to fill its depth (``'ND'`` with depth
18 is ``[N D] * 9``).
"""
from dataclasses import dataclass, fields
from typing import Tuple, Union

BLOCK_LETTERS = {'N': 'neighborhood', 'D': 'deformable', 'L': 'window', 'S': 'shifted_window'}
BLOCK_KINDS = tuple(BLOCK_LETTERS.values())


@dataclass(frozen=True)
class StageSpec:
    dim: int
    depth: int
    num_heads: int
    blocks: Tuple[str, ...]
    groups: int = 1                    # offset groups of deformable blocks
    stride: int = 1                    # key-grid stride of deformable blocks
    offset_kernel: int = 3             # offset conv kernel of deformable blocks
    offset_range_factor: float = -1.0
    use_pe: bool = True                # deformable relative position bias


@dataclass(frozen=True)
class ArchSpec:
    version: int                       # 2: DAT++, 1: DAT (CVPR 2022)
    stages: Tuple[StageSpec, ...]
    img_size: int = 224                # sizes the rpe tables (and nothing else)
    window_size: int = 7               # window / shifted-window blocks
    na_kernel: int = 7                 # neighbourhood blocks
    mlp_ratio: int = 4
    drop_path_rate: float = 0.0        # the published ImageNet-1k value; DAT() may override
    lpu: bool = None                   # defaults by version: DAT++ has LPU, ConvFFN and the
    conv_ffn: bool = None              # overlapped stem / 3x3 down projections, v1 has none
    overlapped_stem: bool = None

    def __post_init__(self):
        for name in ('lpu', 'conv_ffn', 'overlapped_stem'):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.version == 2)

    @property
    def dims(self):
        return tuple(s.dim for s in self.stages)

    @property
    def depths(self):
        return tuple(s.depth for s in self.stages)


def _dat_pp(dims, heads, groups, drop_path_rate):
    depths, patterns = (2, 4, 18, 2), ('ND', 'ND', 'ND', 'DD')
    strides, kernels = (8, 4, 2, 1), (9, 7, 5, 3)
    return dict(version=2, drop_path_rate=drop_path_rate, stages=[
        dict(dim=d, depth=n, num_heads=h, groups=g, blocks=p, stride=s, offset_kernel=k)
        for d, n, h, g, p, s, k in zip(dims, depths, heads, groups, patterns, strides, kernels)
    ])


def _dat_v1(dims, depths, heads, groups, drop_path_rate, img_size=224, window_size=7):
    window = dict(blocks='LS', use_pe=False)
    return dict(version=1, drop_path_rate=drop_path_rate, img_size=img_size,
                window_size=window_size, stages=[
                    dict(dim=dims[0], depth=depths[0], num_heads=heads[0], **window),
                    dict(dim=dims[1], depth=depths[1], num_heads=heads[1], **window),
                    dict(dim=dims[2], depth=depths[2], num_heads=heads[2], groups=groups[0],
                         blocks='LD', offset_kernel=5, offset_range_factor=2),
                    dict(dim=dims[3], depth=depths[3], num_heads=heads[3], groups=groups[1],
                         blocks='LD', offset_kernel=3, offset_range_factor=2),
                ])


ARCH_ZOO = {
    'tiny++': _dat_pp((64, 128, 256, 512), (2, 4, 8, 16), (1, 2, 4, 8), 0.2),
    'small++': _dat_pp((96, 192, 384, 768), (3, 6, 12, 24), (1, 2, 3, 6), 0.4),
    'base++': _dat_pp((128, 256, 512, 1024), (4, 8, 16, 32), (2, 4, 8, 16), 0.7),
    'tiny': _dat_v1((96, 192, 384, 768), (2, 2, 6, 2), (3, 6, 12, 24), (3, 6), 0.2),
    'small': _dat_v1((96, 192, 384, 768), (2, 2, 18, 2), (3, 6, 12, 24), (3, 6), 0.3),
    'base': _dat_v1((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), (4, 8), 0.5),
    # v1 fine-tuned at 384: windows of 12 and tables built for 384 (stage maps 96..12).
    'base-384': _dat_v1((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), (4, 8), 0.5,
                        img_size=384, window_size=12),
}
ARCH_ALIASES = {
    't++': 'tiny++', 's++': 'small++', 'b++': 'base++', 'dat-t++': 'tiny++',
    'dat-s++': 'small++', 'dat-b++': 'base++', 't': 'tiny', 's': 'small', 'b': 'base',
    'b-384': 'base-384', 'base384': 'base-384',
}

_STAGE_KEYS = {f.name for f in fields(StageSpec)}
_ARCH_KEYS = {f.name for f in fields(ArchSpec)}


def _expand_blocks(blocks: Union[str, list, tuple], depth: int, where: str) -> Tuple[str, ...]:
    items = list(blocks) if isinstance(blocks, (str, list, tuple)) else None
    if not items:
        raise ValueError(f'{where}: blocks must be a non-empty string of letters '
                         f'{sorted(BLOCK_LETTERS)} or a list of kinds {BLOCK_KINDS}, '
                         f'got {blocks!r}')
    kinds = []
    for b in items:
        kind = BLOCK_LETTERS.get(b, b)
        if kind not in BLOCK_KINDS:
            raise ValueError(f'{where}: unknown block kind {b!r}; use one of {BLOCK_KINDS} '
                             f'or the letters {sorted(BLOCK_LETTERS)}')
        kinds.append(kind)
    if depth % len(kinds):
        raise ValueError(f'{where}: depth {depth} is not a multiple of the block pattern '
                         f'{blocks!r} (length {len(kinds)})')
    return tuple(kinds * (depth // len(kinds)))


def _positive_int(value, name, where):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'{where}: {name} must be a positive integer, got {value!r}')


def _stage_spec(cfg: dict, i: int) -> StageSpec:
    where = f'arch stage {i}'
    if not isinstance(cfg, dict):
        raise TypeError(f'{where}: expected a dict, got {type(cfg).__name__}')
    unknown = set(cfg) - _STAGE_KEYS
    if unknown:
        raise ValueError(f'{where}: unknown keys {sorted(unknown)}; allowed: '
                         f'{sorted(_STAGE_KEYS)}')
    missing = {'dim', 'depth', 'num_heads', 'blocks'} - set(cfg)
    if missing:
        raise ValueError(f'{where}: missing required keys {sorted(missing)}')
    for name in ('dim', 'depth', 'num_heads', 'groups', 'stride', 'offset_kernel'):
        if name in cfg:
            _positive_int(cfg[name], name, where)
    spec = dict(cfg, blocks=_expand_blocks(cfg['blocks'], cfg['depth'], where))
    s = StageSpec(**spec)
    if s.dim % s.num_heads:
        raise ValueError(f'{where}: dim {s.dim} is not divisible by num_heads {s.num_heads}')
    if 'deformable' in s.blocks:
        if s.num_heads % s.groups:
            raise ValueError(f'{where}: num_heads {s.num_heads} is not divisible by groups '
                             f'{s.groups}')
    return s


def resolve_arch(arch: Union[str, dict, ArchSpec]) -> ArchSpec:
    """A preset name (or alias), a custom dict, or an :class:`ArchSpec` -> validated ArchSpec."""
    if isinstance(arch, ArchSpec):
        return arch
    if isinstance(arch, str):
        name = arch.lower()
        name = ARCH_ALIASES.get(name, name)
        if name not in ARCH_ZOO:
            raise ValueError(f'unknown DAT arch {arch!r}; presets: {sorted(ARCH_ZOO)} '
                             f'(aliases: {sorted(ARCH_ALIASES)}), or pass a dict')
        arch = ARCH_ZOO[name]
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a preset name or a dict, got {type(arch).__name__}')
    unknown = set(arch) - _ARCH_KEYS
    if unknown:
        raise ValueError(f'arch: unknown keys {sorted(unknown)}; allowed: {sorted(_ARCH_KEYS)}')
    if 'stages' not in arch:
        raise ValueError("arch: missing required key 'stages' (a list of per-stage dicts)")
    stages = arch['stages']
    if not isinstance(stages, (list, tuple)) or not stages:
        raise ValueError('arch: stages must be a non-empty list of per-stage dicts')
    version = arch.get('version', 2)
    if version not in (1, 2):
        raise ValueError(f'arch: version must be 1 (DAT) or 2 (DAT++), got {version!r}')
    for name in ('img_size', 'window_size', 'na_kernel', 'mlp_ratio'):
        if name in arch:
            _positive_int(arch[name], name, 'arch')
    if arch.get('na_kernel', 7) % 2 == 0:
        raise ValueError(f"arch: na_kernel must be odd, got {arch['na_kernel']}")
    spec = ArchSpec(**dict(arch, version=version,
                           stages=tuple(_stage_spec(s, i) for i, s in enumerate(stages))))
    n = len(spec.stages)
    if spec.img_size % (4 * 2 ** (n - 1)):
        raise ValueError(f'arch: img_size {spec.img_size} must be a multiple of '
                         f'{4 * 2 ** (n - 1)} (the stride of the last stage)')
    return spec
