"""Convert a published DAT / DAT++ checkpoint to dat_mm's (OpenMMLab 2.0) layout.

    python tools/model_converters/dat_official_to_mm.py SRC DST [--backbone-only] [--config CFG]

* ImageNet checkpoints of LeapLabTHU/DAT (weights under ``model``) become checkpoints of the
  classifier configs in configs/mmpretrain (``backbone.*`` + ``head.fc.*``), loadable with
  strict=True.
* ``--backbone-only``: the backbone weights alone (no prefix, no classifier norm/fc), for
  ``init_cfg=dict(type='Pretrained', checkpoint=DST)`` of DAT in det/seg configs.
* mmdet 2 / mmseg 0.x checkpoints of LeapLabTHU/DAT-Detection and DAT-Segmentation
  (``state_dict`` with ``backbone.`` + neck and heads) become checkpoints of the matching
  mmdet 3 / mmseg 1 configs.
* ``--config CFG`` builds the model of CFG (the whole classifier/detector/segmentor; its
  backbone with ``--backbone-only``) and checks that every key fits it, with the same shape;
  any key that does not is an error listing the keys. With ``--backbone-only`` the per-stage
  output norms (``norms.*``) may be missing or extra: DAT initialises or ignores them.

Every key of SRC is accounted for: one that has no place in dat_mm is an error listing it.
SRC is read with ``torch.load(weights_only=True)`` (the published files hold only tensors and
plain values); DST is ``{'state_dict': ..., 'meta': {...}}`` written with ``torch.save``.
"""
import argparse
import os
import sys
from collections import OrderedDict


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('src', help='published checkpoint (.pth)')
    p.add_argument('dst', help='output checkpoint (.pth)')
    p.add_argument('--backbone-only', action='store_true',
                   help='write only the backbone weights (for DAT init_cfg in det/seg configs)')
    p.add_argument('--config', help='verify that the result fits the model of this config')
    return p.parse_args(argv)


class ConversionError(RuntimeError):
    """A checkpoint that cannot be read, converted or fitted; the message says why."""


def load_published(path):
    """The published file through dat_mm's safe loader (weights only; pickled objects refused)."""
    from dat_mm.checkpoint import CheckpointError, safe_load
    if not os.path.isfile(path):
        raise ConversionError(f'{path}: no such file')
    try:
        return safe_load(path, map_location='cpu')
    except CheckpointError as e:
        raise ConversionError(
            f'{e}\nThe published DAT checkpoints hold only tensors and plain values. If you '
            "trust this file, re-save just its weights: torch.save({'model': torch.load(SRC, "
            "weights_only=False)['model']}, SRC2) (or 'state_dict' for det/seg checkpoints) "
            'and convert SRC2.') from e


def convert(src, backbone_only=False):
    """``(state_dict, meta)`` of the published checkpoint at ``src``."""
    from dat_mm.converters import convert_published_checkpoint
    ckpt = load_published(src)
    try:
        state = convert_published_checkpoint(ckpt, backbone_only=backbone_only)
    except (KeyError, TypeError) as e:
        raise ConversionError(f'{src}: {e.args[0] if e.args else e}') from e
    source_format = 'imagenet (model)' if 'model' in ckpt else 'mmdet2/mmseg0 (state_dict)'
    meta = OrderedDict(
        converted_from=os.path.basename(src),
        source_format=source_format,
        backbone_only=bool(backbone_only),
        converter='tools/model_converters/dat_official_to_mm.py',
    )
    try:
        import dat_mm
        meta['dat_mm_version'] = dat_mm.__version__
    except Exception:  # pragma: no cover - dat_mm is importable wherever this runs
        pass
    for key in ('epoch', 'max_accuracy'):
        value = ckpt.get(key)
        if isinstance(value, (int, float)):
            meta[key] = value
    return state, dict(meta)


def verify(state, config, backbone_only=False):
    """Raise ConversionError naming every key of ``state`` that does not fit the config."""
    from dat_mm.apis import build_model_from_config
    from dat_mm.converters import check_state_dict_fits
    try:
        model = build_model_from_config(config, backbone_only=backbone_only)
    except (ValueError, FileNotFoundError) as e:
        raise ConversionError(str(e)) from e
    allow = ('norms.',) if backbone_only else ()
    try:
        check_state_dict_fits(model, state, allow_missing=allow, allow_unexpected=allow)
    except KeyError as e:
        raise ConversionError(f'the converted weights do not fit {config}: '
                              f'{e.args[0] if e.args else e}') from e
    return model


def main(argv=None):
    args = parse_args(argv)
    import torch
    try:
        state, meta = convert(args.src, args.backbone_only)
        if args.config:
            verify(state, args.config, args.backbone_only)
            meta['verified_with_config'] = args.config
    except ConversionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state, 'meta': meta}, args.dst)
    n = sum(v.numel() for v in state.values())
    what = 'backbone weights' if args.backbone_only else 'weights'
    check = f', fits {args.config} (strict)' if args.config else ''
    print(f'{args.src} [{meta["source_format"]}] -> {args.dst}: {len(state)} tensors, '
          f'{n:,} {what}{check}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
