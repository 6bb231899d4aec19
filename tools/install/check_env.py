"""Check that the dat_mm environment really works; exit non-zero with a clear message if not.

Run by tools/install/setup_env.sh after installing (and on every later run), or by hand:
``.venv/bin/python tools/install/check_env.py``. It checks that:

* torch, torchvision, numpy and the mm* packages have the versions pinned in
  requirements/constraints.txt;
* mmcv's compiled ops (``mmcv._ext``) load, and ``mmcv.ops.nms`` and ``RoIAlign`` run on tiny
  CPU inputs with the expected results;
* mmdet, mmseg, ``mmpretrain.models``, ``mmpretrain.datasets``, ``mmpretrain.evaluation``
  import, and ``import dat_mm`` registers ``DAT`` in the mmdet, mmseg and mmpretrain
  registries.
"""
import importlib
import os.path as osp
import sys
import traceback

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONSTRAINTS = osp.join(ROOT, 'requirements', 'constraints.txt')
# distribution name in constraints.txt -> module to import for __version__
CHECKED = {
    'torch': 'torch',
    'torchvision': 'torchvision',
    'numpy': 'numpy',
    'mmengine': 'mmengine',
    'mmcv': 'mmcv',
    'mmdet': 'mmdet',
    'mmsegmentation': 'mmseg',
    'mmpretrain': 'mmpretrain',
}


def pinned_versions(path=CONSTRAINTS):
    """``{name: version}`` for the ``name==version`` lines of the constraints file."""
    pins = {}
    with open(path) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if '==' in line:
                name, version = line.split('==', 1)
                pins[name.strip().lower()] = version.strip()
    return pins


def check_versions():
    pins = pinned_versions()
    for dist, module in CHECKED.items():
        installed = importlib.import_module(module).__version__.split('+')[0]
        if installed != pins[dist]:
            raise RuntimeError(f'{dist} {installed} is installed but constraints.txt pins '
                               f'{pins[dist]}: rerun tools/install/setup_env.sh')


def check_mmcv_ops():
    import torch
    try:
        from mmcv.utils import ext_loader
        ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])
    except Exception as err:  # noqa: BLE001 - report whatever made the import fail
        raise RuntimeError(
            'mmcv._ext (the compiled ops) did not load: mmcv was built without ops or '
            'against another torch. Delete the cached wheel (DAT_MM_CACHE, default '
            f'~/.cache/dat_mm/wheels) and rerun setup_env.sh. Cause: {err!r}') from err
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f'mmcv.ops.nms kept {keep.tolist()}, expected [0, 2]')
    # value = x on a ramp image: RoIAlign of a box averages x over it -> its centre x.
    image = torch.arange(8, dtype=torch.float32).repeat(8, 1)[None, None]
    rois = torch.tensor([[0., 1., 1., 5., 5.]])
    out = RoIAlign((1, 1), spatial_scale=1.0, sampling_ratio=2, aligned=False)(image, rois)
    if abs(out.item() - 3.0) > 1e-5:
        raise RuntimeError(f'mmcv.ops.RoIAlign gave {out.item()}, expected 3.0')


def check_imports():
    for module in ('mmdet', 'mmdet.models', 'mmseg', 'mmseg.models', 'mmpretrain',
                   'mmpretrain.models', 'mmpretrain.datasets', 'mmpretrain.evaluation'):
        importlib.import_module(module)
    import dat_mm
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRETRAIN
    from mmseg.registry import MODELS as SEG
    for scope, registry in (('mmdet', DET), ('mmseg', SEG), ('mmpretrain', PRETRAIN)):
        if registry.get('DAT') is not dat_mm.DAT:
            raise RuntimeError(f"type='DAT' does not resolve to dat_mm.DAT in {scope}")


def main():
    checks = [('pinned versions', check_versions), ('mmcv ops', check_mmcv_ops),
              ('mmdet/mmseg/mmpretrain imports + DAT registry', check_imports)]
    failed = False
    for name, check in checks:
        try:
            check()
        except Exception as err:  # noqa: BLE001 - every failure is reported, then exit 1
            failed = True
            print(f'[check_env] FAIL {name}: {err}', file=sys.stderr)
            if not isinstance(err, RuntimeError):
                traceback.print_exc()
        else:
            print(f'[check_env] ok   {name}', file=sys.stderr)
    if failed:
        print('[check_env] the environment is NOT usable (see above)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
