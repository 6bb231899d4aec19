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
are sized by that query's attention. When the test pipeline transforms the image in a way that
cannot be mapped back (anything but resizing, padding, cropping, flipping), or with
``--model-view``, the picture is the image the model saw, at the pipeline's output size.
"""
import argparse
import copy
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

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


# -- model -------------------------------------------------------------------------------------
def build_model(cfg):
    """The config's model (with its top-level ``data_preprocessor``, as the runner does)."""
    from mmengine.registry import MODELS
    model_cfg = copy.deepcopy(cfg.get('model'))
    if model_cfg is None:
        raise ValueError('the config defines no model')
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    return MODELS.build(model_cfg)


def _load_file(path: str):
    """Through dat_mm's safe loader (Runner checkpoints load; pickled code, TorchScript and
    forged state are refused with an error naming the file)."""
    from dat_mm.checkpoint import load_checkpoint
    return load_checkpoint(path, map_location='cpu')


def load_weights(model, path: str) -> str:
    """Load a checkpoint into ``model``: a whole-model state dict (dat_mm / OpenMMLab 2.0
    layout), a backbone-only state dict, or the authors' published checkpoints (converted).
    Returns a one-line description; raises if no backbone weight fits."""
    from dat_mm.converters import (check_state_dict_fits, convert_published_checkpoint,
                                   is_published_layout, state_dict_of)
    from dat_mm.visualization import find_backbone

    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    ckpt = _load_file(path)
    try:
        state = state_dict_of(ckpt, path)
    except TypeError as e:
        raise ValueError(str(e)) from None
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    backbone = find_backbone(model)
    whole = any(k.startswith('backbone.') for k in state)
    bb_state = {k[len('backbone.'):]: v for k, v in state.items()
                if k.startswith('backbone.')} if whole else state
    if is_published_layout(bb_state):
        if whole:
            state = convert_published_checkpoint({'state_dict': state})
        else:
            state = convert_published_checkpoint({'model': state})
            whole = any(k.startswith('backbone.') for k in state)
        bb_state = {k[len('backbone.'):]: v for k, v in state.items()
                    if k.startswith('backbone.')} if whole else state
    # The backbone must fit exactly (output norms may differ between task models).
    check_state_dict_fits(backbone, bb_state, allow_missing=('norms.',),
                          allow_unexpected=('norms.',))
    if whole:
        own = model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        model.load_state_dict(fitting, strict=False)
        skipped = len(state) - len(fitting)
        missing = len([k for k in own if k not in fitting])
        note = f' ({skipped} keys not used, {missing} model keys not in it)' \
            if skipped or missing else ''
    else:
        own = backbone.state_dict()
        backbone.load_state_dict({k: v for k, v in bb_state.items() if k in own}, strict=False)
        note = ' (backbone only)'
    return f'checkpoint {os.path.basename(path)}{note}'


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
    """Per axis ``orig = a * view + b`` (continuous pixel coordinates), from the model's view
    (the test pipeline's output image) to the loaded image; ``None`` when not invertible."""
    ax: float = 1.0
    bx: float = 0.0
    ay: float = 1.0
    by: float = 0.0
    known: bool = True
    why: str = ''

    def then(self, ax, bx, ay, by):
        """Prepend a step ``prev_view = a * new_view + b``."""
        self.bx, self.ax = self.ax * bx + self.bx, self.ax * ax
        self.by, self.ay = self.ay * by + self.by, self.ay * ay

    def to_orig(self, xy: np.ndarray) -> np.ndarray:
        return np.stack([xy[..., 0] * self.ax + self.bx, xy[..., 1] * self.ay + self.by], -1)

    def to_view(self, xy: np.ndarray) -> np.ndarray:
        return np.stack([(xy[..., 0] - self.bx) / self.ax, (xy[..., 1] - self.by) / self.ay], -1)


def _find_crop(prev: np.ndarray, new: np.ndarray, hint=None) -> Optional[Tuple[int, int]]:
    H, W = prev.shape[:2]
    h, w = new.shape[:2]
    cands = []
    if hint is not None:
        cands.append((int(hint[1]), int(hint[0])))
    for oy in sorted({(H - h) // 2, (H - h + 1) // 2, int(round((H - h) / 2))}):
        for ox in sorted({(W - w) // 2, (W - w + 1) // 2, int(round((W - w) / 2))}):
            cands.append((oy, ox))
    cands += [(0, 0), (H - h, W - w)]
    for oy, ox in cands:
        if 0 <= oy <= H - h and 0 <= ox <= W - w and \
                np.array_equal(prev[oy:oy + h, ox:ox + w], new):
            return oy, ox
    return None


def run_pipeline(cfg, image_path: str):
    """Run the test pipeline step by step, following the image geometry.

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
        prev = results['img'].copy()
        results = t(results)
        if results is None:
            raise ValueError(f'the test pipeline step {type(t).__name__} dropped the image')
        new = results['img']
        name = type(t).__name__
        (H, W), (h, w) = prev.shape[:2], new.shape[:2]
        if not geo.known:
            continue
        if (H, W) == (h, w):
            if 'Flip' in name and results.get('flip'):
                direction = results.get('flip_direction', 'horizontal')
                if direction == 'horizontal':
                    geo.then(-1.0, float(W), 1.0, 0.0)
                elif direction == 'vertical':
                    geo.then(1.0, 0.0, -1.0, float(H))
                else:
                    geo.then(-1.0, float(W), -1.0, float(H))
            continue
        if h >= H and w >= W and np.array_equal(new[:H, :W], prev):
            continue  # padding at the bottom / right
        if h <= H and w <= W and 'Resize' not in name:
            off = _find_crop(prev, new, results.get('crop_bbox'))
            if off is not None:
                geo.then(1.0, float(off[1]), 1.0, float(off[0]))
                continue
        if 'Resize' in name or 'Scale' in name:
            geo.then(W / w, 0.0, H / h, 0.0)
            continue
        geo.known, geo.why = False, f'{name} changed the image from {W}x{H} to {w}x{h}'
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
    from dat_mm.visualization import check_block, resolve_blocks
    running = resolve_blocks(backbone, 'all')  # raises when there is no deformable block
    if stage is None:
        stage = running[-1][0]
    if block is None:
        n = len(backbone.stages)
        if not -n <= stage < n:
            return check_block(backbone, stage, 0)  # the out-of-range message
        in_stage = [j for i, j in running if i == stage % n]
        if not in_stage:
            stages = sorted({i for i, _ in running})
            raise ValueError(f'stage {stage % n} has no deformable block that runs; stages '
                             f'with deformable blocks: {stages}')
        block = in_stage[-1]
    return check_block(backbone, stage, block)


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
        model = build_model(cfg)
        backbone = find_backbone(model)
        stage, block = choose_block(backbone, args.stage, args.block)
        if args.checkpoint:
            weights_note = load_weights(model, args.checkpoint)
        else:
            weights_note = f'RANDOMLY INITIALISED model (no checkpoint, seed {args.seed})'
        model.to(args.device).eval()
        data, loaded, view, geo = run_pipeline(cfg, args.image)
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
        corners = to_frame(np.array([[cx * Wp / W, cy * Hp / H],
                                     [(cx + 1) * Wp / W, (cy + 1) * Hp / H]]))
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
    spacing = min(abs(geo.ax if frame_is_orig else 1.0) * Wp / rec.key_size[1],
                  abs(geo.ay if frame_is_orig else 1.0) * Hp / rec.key_size[0])
    rmax = float(np.clip(0.5 * spacing / np.sqrt(len(shown)), 2.5, max(2.5, min(Wc, Hc) / 12)))
    caption = [
        f'{os.path.basename(args.config)}: stage {stage} block {block}, {g} offset group'
        f'{"s" if g > 1 else ""} x {rec.key_size[0]}x{rec.key_size[1]} keys',
        size_text,
        weights_note,
    ]
    if not frame_is_orig:
        caption.append(f'model view {Wc}x{Hc}' +
                       (f' ({geo.why})' if not geo.known else ''))
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
