#!/usr/bin/env python
"""Draw where DAT's deformable attention looks on an image.

    python tools/visualize_deformable.py CONFIG [CHECKPOINT] IMAGE [--stage S] [--block B]
        [--query X,Y] [--out FILE]

CONFIG is any dat_mm config (mmpretrain classifier, mmdet detector, mmseg segmentor): the DAT
backbone is found inside the model. CHECKPOINT may be omitted or ``none``: the model is then
randomly initialised and the picture says so. The image goes through the config's test
pipeline and data preprocessor (resizing, cropping, normalisation) exactly as in testing; the
backbone runs once, the sampling positions of the chosen deformable block are captured
(:func:`dat_mm.visualization.capture_deformable`) and mapped back to pixels of IMAGE.

The PNG shows IMAGE at its own size with the sampling points of every offset group (colour =
group), each sized by the attention it receives averaged over all queries (area proportional to
the weight); with ``--query X,Y`` (pixels of IMAGE) the query's cell is marked and the points
are sized by that query's attention. The way back from network-input pixels to IMAGE is read
from what the pipeline's transforms record (``homography_matrix``, ``scale_factor``, ``flip``,
``pad_shape``; see :func:`step_matrix`); a step that moves pixels without recording how stops
the tool with an error naming it. With ``--model-view`` the picture is the image the model saw,
at the pipeline's output size (no mapping needed).
"""
import argparse
import copy
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch

from dat_mm.apis import build_model_from_config
from dat_mm.apis import load_model_weights as load_weights

DESCRIPTION = __doc__.split('\n\n')[0]


# -- arguments ---------------------------------------------------------------------------------
def _xy(text: str) -> Tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected X,Y (pixels), got {text!r}')
    return x, y


def _ints(text: str) -> List[int]:
    try:
        return [int(v) for v in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated integers, got {text!r}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example: python tools/visualize_deformable.py '
               'configs/mmpretrain/dat_t_pp_in1k.py dat_t_pp.pth cat.jpg --stage 2 --block 17 '
               '--query 120,80 --out cat_s2b17.png')
    p.add_argument('config', help='config file')
    p.add_argument('inputs', nargs='+', metavar='[CHECKPOINT] IMAGE',
                   help="checkpoint (optional; 'none' or omitted: random initialisation) and "
                        'image')
    p.add_argument('--stage', type=int, default=None,
                   help='stage of the block (default: the last stage with deformable blocks)')
    p.add_argument('--block', type=int, default=None,
                   help='block index within the stage, as in backbone.stages[S].blocks[B] '
                        '(default: the last deformable block of the stage)')
    p.add_argument('--query', type=_xy, default=None, metavar='X,Y',
                   help='a query pixel of IMAGE (of the model view with --model-view): mark it '
                        'and size the points by its attention')
    p.add_argument('--groups', type=_ints, default=None, metavar='J,K,...',
                   help='draw only these offset groups (default: all)')
    p.add_argument('--out', default=None,
                   help='output PNG (default: <image name>_dat_s<S>_b<B>.png here)')
    p.add_argument('--model-view', action='store_true',
                   help='draw on the image as the model saw it (after the test pipeline)')
    p.add_argument('--show-ref', action='store_true',
                   help='also draw the reference points, joined to their sampling points')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the random initialisation (used without a checkpoint)')
    p.add_argument('--device', default='cpu', help='device to run on (cpu, cuda, cuda:1, ...)')
    from mmengine.config import DictAction
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config settings, as in the OpenMMLab tools')
    args = p.parse_args(argv)
    if len(args.inputs) == 1:
        args.checkpoint, args.image = None, args.inputs[0]
    elif len(args.inputs) == 2:
        args.checkpoint, args.image = args.inputs
    else:
        p.error(f'expected [CHECKPOINT] IMAGE after CONFIG, got {len(args.inputs)} arguments')
    if args.checkpoint is not None and args.checkpoint.lower() in ('none', ''):
        args.checkpoint = None
    return args


# -- data --------------------------------------------------------------------------------------
def test_pipeline_cfg(cfg) -> list:
    """The test pipeline of a config (``test_dataloader``, then ``val_dataloader``, then a
    top-level ``test_pipeline``), without annotation loading."""
    candidates = []
    for loader in ('test_dataloader', 'val_dataloader'):
        ds = cfg.get(loader, {}).get('dataset') if cfg.get(loader) else None
        while isinstance(ds, dict) and 'pipeline' not in ds and 'dataset' in ds:
            ds = ds['dataset']  # wrappers (RepeatDataset, ...)
        if isinstance(ds, dict) and ds.get('pipeline'):
            candidates.append(ds['pipeline'])
    if cfg.get('test_pipeline'):
        candidates.append(cfg.test_pipeline)
    if not candidates:
        raise ValueError('the config has no test pipeline (test_dataloader.dataset.pipeline, '
                         'val_dataloader.dataset.pipeline or test_pipeline)')
    pipeline = [copy.deepcopy(t) for t in candidates[0]
                if 'LoadAnnotations' not in str(t.get('type', ''))]
    if not pipeline or 'LoadImage' not in str(pipeline[0].get('type', '')):
        raise ValueError(f'the test pipeline should start by loading the image, got '
                         f'{pipeline[:1]}')
    return pipeline


@dataclass
class Geometry:
    """How the test pipeline moved pixels: ``matrix`` (3x3) maps continuous pixel coordinates
    ``(x, y, 1)`` of the loaded image (pixel ``k`` spans ``[k, k + 1)``) to those of the model's
    view (the pipeline's output image, which the data preprocessor only pads at the bottom and
    right: view pixels are network-input pixels). ``None`` when a step's effect cannot be
    recovered from what the transforms recorded; ``why`` then names that step."""
    matrix: Optional[np.ndarray] = field(default_factory=lambda: np.eye(3))
    why: str = ''

    @property
    def known(self) -> bool:
        return self.matrix is not None

    @staticmethod
    def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        p = xy @ m[:2, :2].T + m[:2, 2]
        w = xy @ m[2, :2] + m[2, 2]
        return p / w[..., None]

    def to_view(self, xy: np.ndarray) -> np.ndarray:
        """``(..., 2)`` loaded-image ``(x, y)`` -> model-view ``(x, y)``."""
        return self._apply(self.matrix, xy)

    def to_orig(self, xy: np.ndarray) -> np.ndarray:
        """``(..., 2)`` model-view ``(x, y)`` -> loaded-image ``(x, y)``."""
        return self._apply(np.linalg.inv(self.matrix), xy)

    def orig_pixels_per_view_pixel(self) -> Tuple[float, float]:
        inv = np.linalg.inv(self.matrix)[:2, :2]
        return float(np.hypot(*inv[:, 0])), float(np.hypot(*inv[:, 1]))


# Transforms that move pixels without changing the image size: they must record what they did.
_SIZE_KEEPING_GEOMETRY = ('Flip', 'Rot', 'Shear', 'Translate', 'Affine', 'Perspective', 'Shift')


def step_matrix(transform, before: dict, after: dict) -> np.ndarray:
    """The 3x3 map from the image before one pipeline step to the image after it, from what the
    OpenMMLab transforms record (``before`` is a shallow copy of the results taken before the
    step, so a key the step wrote is a new object):

    * ``homography_matrix`` (mmdet's transforms: the cumulative original -> current map): the
      step is its change;
    * ``flip`` / ``flip_direction`` of an mmcv ``RandomFlip`` (and subclasses), which writes
      its choice on every call;
    * ``scale_factor`` ``(w_scale, h_scale)`` written by the step (``Resize``, ``ResizeEdge``,
      ``RandomResize``, ...: relative to the step's input);
    * ``pad_shape`` written by a step that grew the image (``Pad``: bottom / right padding);
    * mmcv's ``CenterCrop`` (mmpretrain and mmseg use it) records only the new shape; its offset
      follows from the shapes as it computes it: ``round((W - w) / 2)`` (Python's rounding),
      0 where the crop was larger than the image and padded.

    A step that keeps the size and records nothing is taken as pixel-wise (normalisation, colour)
    unless its name says it moves pixels (flip, rotation, shear, ...). Anything else raises
    ``ValueError`` naming the transform.
    """
    from mmcv.transforms import CenterCrop, RandomFlip
    name = type(transform).__name__
    (H, W), (h, w) = before['img'].shape[:2], after['img'].shape[:2]
    hm0, hm1 = before.get('homography_matrix'), after.get('homography_matrix')
    if hm1 is not None and (hm0 is None or not np.array_equal(hm0, hm1)):
        prev = np.eye(3) if hm0 is None else np.asarray(hm0, np.float64)
        return np.asarray(hm1, np.float64) @ np.linalg.inv(prev)
    if isinstance(transform, RandomFlip):
        sx, sy = {None: (1, 1), 'horizontal': (-1, 1), 'vertical': (1, -1),
                  'diagonal': (-1, -1)}[after.get('flip_direction') if after.get('flip')
                                        else None]
        return np.array([[sx, 0, W * (sx < 0)], [0, sy, H * (sy < 0)], [0, 0, 1]], np.float64)
    scale = after.get('scale_factor')
    if scale is not None and scale is not before.get('scale_factor'):
        sx, sy = (float(scale),) * 2 if np.ndim(scale) == 0 else (float(v) for v in scale[:2])
        if abs(W * sx - w) <= 1 and abs(H * sy - h) <= 1:
            return np.diag([sx, sy, 1.0])
        raise ValueError(f'{name} recorded scale_factor {tuple(np.ravel(scale))} but changed '
                         f'the image from {W}x{H} to {w}x{h}')
    if isinstance(transform, CenterCrop):
        x0, y0 = max(0, int(round((W - w) / 2))), max(0, int(round((H - h) / 2)))
        return np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    pad = after.get('pad_shape')
    if pad is not None and pad is not before.get('pad_shape') and h >= H and w >= W \
            and tuple(pad[:2]) == (h, w):
        return np.eye(3)
    if (h, w) == (H, W) and not any(k in name for k in _SIZE_KEEPING_GEOMETRY):
        return np.eye(3)
    raise ValueError(f'the test pipeline step {name} changed the image geometry ({W}x{H} -> '
                     f'{w}x{h}) without recording it (homography_matrix, scale_factor, flip, '
                     f'pad_shape)')


def run_pipeline(cfg, image_path: str):
    """Run the test pipeline step by step, following the geometry from what each transform
    records (:func:`step_matrix`).

    Returns ``(packed data, loaded image HxWx3 BGR, model-view image HxWx3 BGR, Geometry)``.
    """
    from mmengine.registry import TRANSFORMS
    pipeline = [TRANSFORMS.build(t) for t in test_pipeline_cfg(cfg)]
    results = dict(img_path=image_path, img_id=0, sample_idx=0)
    results = pipeline[0](results)
    if results is None or results.get('img') is None:
        raise ValueError(f'could not load the image {image_path}')
    loaded = results['img'].copy()
    geo = Geometry()
    for t in pipeline[1:-1]:
        before = dict(results)
        results = t(results)
        if not isinstance(results, dict) or results.get('img') is None:
            raise ValueError(f'the test pipeline step {type(t).__name__} did not return one '
                             f'image (test-time augmentation is not supported)')
        if geo.known:
            try:
                geo.matrix = step_matrix(t, before, results) @ geo.matrix
            except ValueError as e:
                geo.matrix, geo.why = None, str(e)
    view = results['img']
    return pipeline[-1](results), loaded, view, geo


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3][..., ::-1]  # OpenMMLab pipelines hold BGR
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


# -- block choice ------------------------------------------------------------------------------
def choose_block(backbone, stage: Optional[int], block: Optional[int]) -> Tuple[int, int]:
    """``--stage`` / ``--block``: by default the last stage with a deformable block that runs,
    and the last deformable block of the stage."""
    from dat_mm.visualization import deformable_blocks, select_blocks
    last_stage, _ = select_blocks(backbone, 'last')[0]  # raises when no deformable block runs
    stage = last_stage if stage is None else stage
    if block is None:
        n = len(backbone.stages)
        in_stage = [j for i, j in deformable_blocks(backbone) if i == stage % n]
        # Block 0 of a stage without deformable blocks: the error lists where they are.
        block = in_stage[-1] if in_stage and -n <= stage < n else 0
    return select_blocks(backbone, (stage, block))[0]


class _StopForward(Exception):
    pass


def _stop_forward(module, args, output):
    raise _StopForward


# -- main --------------------------------------------------------------------------------------
def visualize(args) -> dict:
    """Run the tool; returns a summary (output path, sizes, block, ...)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from dat_mm.visualization import capture_deformable, find_backbone, to_image_pixels
    from dat_mm.visualization.draw import draw_sampling_points

    if not os.path.isfile(args.image):
        raise FileNotFoundError(f'image not found: {args.image}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        torch.manual_seed(args.seed)
        model = build_model_from_config(cfg, device=args.device)
        backbone = find_backbone(model)
        stage, block = choose_block(backbone, args.stage, args.block)
        if args.checkpoint:
            weights_note = load_weights(model, args.checkpoint)
        else:
            weights_note = f'RANDOMLY INITIALISED model (no checkpoint, seed {args.seed})'
        model.eval()
        data, loaded, view, geo = run_pipeline(cfg, args.image)
        if not geo.known and not args.model_view:
            raise ValueError(f'cannot map the network input back to {args.image}: {geo.why}. '
                             f'Use --model-view to draw on the image as the model saw it')
        with torch.no_grad():
            batch = model.data_preprocessor(
                dict(inputs=[data['inputs']], data_samples=[data['data_samples']]), False)
            inputs = batch['inputs']
            # Stop after the chosen block: later stages are not needed.
            stop = backbone.stages[stage].blocks[block].register_forward_hook(_stop_forward)
            try:
                with capture_deformable(backbone, (stage, block)) as cap:
                    backbone(inputs)
            except _StopForward:
                pass
            finally:
                stop.remove()
    rec = cap[stage, block]
    Hp, Wp = inputs.shape[-2:]
    H, W = rec.query_size

    frame_is_orig = geo.known and not args.model_view
    if frame_is_orig:
        canvas, to_frame, to_view = loaded, geo.to_orig, geo.to_view
        frame = 'image'
    else:
        canvas, to_frame, to_view = view, (lambda a: a), (lambda a: a)
        frame = 'model view'
    canvas = _to_rgb_uint8(canvas)
    Hc, Wc = canvas.shape[:2]

    pts = to_image_pixels(rec.pos[0].double(), (H, W), (Hp, Wp)).flip(-1).numpy()  # (g,Hk,Wk,2)
    refs = to_image_pixels(rec.ref[0].double(), (H, W), (Hp, Wp)).flip(-1).numpy()
    g = rec.groups
    pts, refs = to_frame(pts.reshape(g, -1, 2)), to_frame(refs.reshape(g, -1, 2))
    query_box = query_pt = None
    if args.query is not None:
        qx, qy = args.query
        if not (0 <= qx < Wc and 0 <= qy < Hc):
            raise ValueError(f'--query {qx:g},{qy:g} is outside the {frame} ({Wc}x{Hc} pixels)')
        vx, vy = to_view(np.array([qx, qy], dtype=np.float64))
        cx = int(np.clip(np.floor(vx * W / Wp), 0, W - 1))
        cy = int(np.clip(np.floor(vy * H / Hp), 0, H - 1))
        weights = rec.query_attention(cy, cx)[0].reshape(g, -1).double().numpy()
        x0, x1, y0, y1 = cx * Wp / W, (cx + 1) * Wp / W, cy * Hp / H, (cy + 1) * Hp / H
        corners = to_frame(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
        (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
        query_box, query_pt = (x0, y0, x1, y1), (qx, qy)
        size_text = f'point area: attention of query ({qx:g}, {qy:g}) = map cell ({cy}, {cx})'
    else:
        weights = rec.received_attention()[0].reshape(g, -1).double().numpy()
        size_text = 'point area: attention received (mean over all queries)'
    shown = list(range(g))
    if args.groups is not None:
        bad = [j for j in args.groups if not 0 <= j < g]
        if bad:
            raise ValueError(f'--groups {bad} out of range: this block has {g} groups (0..'
                             f'{g - 1})')
        shown = list(dict.fromkeys(args.groups))
    # The largest point fills about the share of a key-grid cell that one group gets.
    sx, sy = geo.orig_pixels_per_view_pixel() if frame_is_orig else (1.0, 1.0)
    spacing = min(sx * Wp / rec.key_size[1], sy * Hp / rec.key_size[0])
    rmax = float(np.clip(0.5 * spacing / np.sqrt(len(shown)), 2.5, max(2.5, min(Wc, Hc) / 12)))
    caption = [
        f'{os.path.basename(args.config)}: stage {stage} block {block}, {g} offset group'
        f'{"s" if g > 1 else ""} x {rec.key_size[0]}x{rec.key_size[1]} keys',
        size_text,
        weights_note,
    ]
    if not frame_is_orig:
        caption.append(f'model view {Wc}x{Hc}')
    pic = draw_sampling_points(
        canvas, pts[shown], weights[shown], refs=refs[shown] if args.show_ref else None,
        query=query_pt, query_box=query_box, caption=caption, group_ids=shown,
        num_groups=g,
        radius=(max(1.0, rmax / 5), rmax))
    out = args.out or (f'{os.path.splitext(os.path.basename(args.image))[0]}'
                       f'_dat_s{stage}_b{block}.png')
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    pic.save(out, format='PNG')
    return dict(out=out, size=pic.size, frame=frame, stage=stage, block=block, groups=g,
                key_size=rec.key_size, query_size=rec.query_size, input_size=(Hp, Wp),
                random_init=args.checkpoint is None, weights=weights_note)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        info = visualize(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'visualize_deformable: error: {msg}', file=sys.stderr)
        return 2
    print(f"wrote {info['out']} ({info['size'][0]}x{info['size'][1]}, {info['frame']}): "
          f"stage {info['stage']} block {info['block']}, {info['groups']} groups x "
          f"{info['key_size'][0]}x{info['key_size'][1]} keys, network input "
          f"{info['input_size'][1]}x{info['input_size'][0]}"
          + (', random initialisation' if info['random_init'] else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
