"""Check that the dat_mm environment really works; exit non-zero with a clear message if not.

Run by tools/install/setup_env.sh after installing (and on every later run), or by hand:
``.venv/bin/python tools/install/check_env.py``. It checks that:

* torch, torchvision, numpy and the mm* packages have the versions pinned in
  requirements/constraints.txt;
* mmcv's compiled ops (``mmcv._ext``) load, and ``mmcv.ops.nms`` and ``RoIAlign`` run on tiny
  CPU inputs with the expected results; when torch sees a GPU, the same on CUDA tensors, and
  ``MultiScaleDeformableAttention``'s CUDA kernel against mmcv's PyTorch version (the line
  says which device the ops were checked on);
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


def check_mmcv_ops(device='cpu'):
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

    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]],
                         device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f'mmcv.ops.nms on {device} kept {keep.tolist()}, expected [0, 2]')
    # value = x on a ramp image: RoIAlign of a box averages x over it -> its centre x.
    image = torch.arange(8, dtype=torch.float32, device=device).repeat(8, 1)[None, None]
    rois = torch.tensor([[0., 1., 1., 5., 5.]], device=device)
    out = RoIAlign((1, 1), spatial_scale=1.0, sampling_ratio=2, aligned=False)(image, rois)
    if abs(out.item() - 3.0) > 1e-5:
        raise RuntimeError(f'mmcv.ops.RoIAlign on {device} gave {out.item()}, expected 3.0')


def check_mmcv_cuda_ops():
    """nms and RoIAlign on CUDA tensors, and MultiScaleDeformableAttention's CUDA kernel
    against mmcv's PyTorch version (what DINO / Mask2Former use on GPUs)."""
    import torch
    from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                                  multi_scale_deformable_attn_pytorch)
    try:
        check_mmcv_ops('cuda')
    except RuntimeError as err:
        if 'not compiled with GPU support' in str(err) or 'CUDA' in str(err):
            raise RuntimeError(
                'mmcv was built without CUDA ops but this machine has a GPU: delete the '
                'cached mmcv wheel and rerun setup_env.sh (DAT_MM_MMCV_CUDA unset or 1). '
                f'Cause: {err}') from err
        raise
    g = torch.Generator(device='cpu').manual_seed(0)
    shapes = torch.tensor([[6, 8], [3, 4]], dtype=torch.long)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    bs, heads, dim, queries, points = 2, 2, 8, 5, 3
    value = torch.rand(bs, int((shapes[:, 0] * shapes[:, 1]).sum()), heads, dim, generator=g)
    loc = torch.rand(bs, queries, heads, len(shapes), points, 2, generator=g)
    weights = torch.rand(bs, queries, heads, len(shapes), points, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    expected = multi_scale_deformable_attn_pytorch(value.double(), shapes, loc.double(),
                                                   weights.double()).float()
    got = MultiScaleDeformableAttnFunction.apply(
        value.cuda(), shapes.cuda(), starts.cuda(), loc.cuda(), weights.cuda(), 64).cpu()
    err = (got - expected).abs().max().item()
    if err > 1e-4:
        raise RuntimeError(f'MultiScaleDeformableAttention on CUDA differs from the PyTorch '
                           f'version by {err:.2e}')


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
    import torch
    checks = [('pinned versions', check_versions), ('mmcv ops on CPU', check_mmcv_ops)]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        checks.append((f'mmcv ops on CUDA ({name}): nms, RoIAlign, '
                       'MultiScaleDeformableAttention', check_mmcv_cuda_ops))
    else:
        print('[check_env] no GPU visible to torch: mmcv ops checked on the CPU only',
              file=sys.stderr)
    checks.append(('mmdet/mmseg/mmpretrain imports + DAT registry', check_imports))
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
