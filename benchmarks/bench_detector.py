"""A whole Mask R-CNN iteration: DAT-T++ (configs/mmdet/mask_rcnn_dat_t_pp_1x.py) against
mmdet's own Swin-T Mask R-CNN (mmdet's ``swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``).

Both detectors are built from their configs (SyncBN as BN: one process; no pretrained
weights: the time does not depend on them; the DAT recipe's backbone uses activation
checkpointing and mmdet's Swin-T does not, ``--with-cp off`` / ``on`` sets both the same)
and fed the same batch: random images of ``--size`` (the recipes' 1333x800 test scale by
default), padded by each model's data preprocessor, with ``--boxes`` random ground-truth
boxes and masks per image. A *train iteration* is the loss (RPN, box and mask heads at the
recipe's proposal and sampling counts) and its backward pass, gradients set to None before
each; no optimizer step. *Inference* is ``predict`` in eval mode without autograd.

Rounds: each round times every (mode, model) in turn (``--repeats`` calls after one untimed
call), so that the rows compared were measured minutes apart, not one whole series after the
other; a row's time is the median over all rounds, "DAT / Swin" the median of the per-round
ratios with their range. Peak memory (benchmarks/common.py) is measured once per row after
the rounds.

    python -m benchmarks.bench_detector                           # train and infer, 2 rounds
    python -m benchmarks.bench_detector --modes train --rounds 3 --batch 2
    python -m benchmarks.bench_detector --modes train --with-cp off   # neither checkpoints
"""
import argparse
import os
import sys

import numpy as np
import torch

from benchmarks.common import (fmt_mib, fmt_ms, load_average, machine_info, median, peak_memory,
                               table, time_call)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAT_CONFIG = os.path.join(REPO, 'configs', 'mmdet', 'mask_rcnn_dat_t_pp_1x.py')
SWIN_CONFIG = 'swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'   # in mmdet's package configs


def mmdet_config(rel):
    import mmdet
    path = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs', rel)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: mmdet was installed without its configs (.mim)')
    return path


def build_detector(path, with_cp=None):
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import dat_mm  # noqa: F401  (registers DAT)
    from dat_mm.apis import replace_type
    register_all_modules()
    cfg = Config.fromfile(path)
    replace_type(cfg.model, 'SyncBN', 'BN')
    if with_cp is not None:
        cfg.model.backbone.with_cp = with_cp
    model = MODELS.build(cfg.model)
    model.bench_with_cp = bool(cfg.model.backbone.get('with_cp', False))
    return model


def make_batch(B, H, W, boxes, seed=0):
    """``data`` for a detector's data preprocessor: uint8 images and DetDataSamples with
    boxes, labels and bitmap masks."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(B):
        inputs.append(torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8))
        xy = torch.rand(boxes, 2, generator=g) * torch.tensor([W * 0.7, H * 0.7])
        wh = torch.rand(boxes, 2, generator=g) * torch.tensor([W * 0.3, H * 0.3]) + 16
        bboxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([W - 1.0, H - 1.0]))], 1)
        masks = np.zeros((boxes, H, W), dtype=np.uint8)
        for i, (x0, y0, x1, y1) in enumerate(bboxes.round().int().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        s = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), scale_factor=(1., 1.),
                                        pad_shape=(H, W), img_id=0))
        s.gt_instances = InstanceData(bboxes=bboxes,
                                      labels=torch.randint(0, 80, (boxes,), generator=g),
                                      masks=BitmapMasks(masks, H, W))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def step_fn(model, batch, mode):
    if mode == 'train':
        model.train()
        data = model.data_preprocessor(batch, training=True)

        def run():
            for p in model.parameters():
                p.grad = None
            loss, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
            loss.backward()
        return run
    model.eval()
    data = model.data_preprocessor(batch, training=False)

    def run():
        with torch.no_grad():
            model.predict(data['inputs'], data['data_samples'])
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='1333x800', help='WxH of the images (before padding)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--boxes', type=int, default=10, help='ground-truth objects per image')
    p.add_argument('--modes', nargs='+', default=['infer', 'train'], choices=['infer', 'train'])
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                   help='on a GPU mmdet needs an mmcv build with CUDA ops (RoIAlign)')
    p.add_argument('--with-cp', choices=['recipe', 'off', 'on'], default='recipe',
                   help="the backbones' activation checkpointing: as the configs have it (DAT's "
                        "recipe on, mmdet's Swin-T off), or the same for both")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    W, H = (int(v) for v in args.size.split('x'))
    print('# bench_detector:', ' '.join(sys.argv[1:]) or '(defaults)')
    print(machine_info(args.device))
    torch.manual_seed(0)
    cp = {'recipe': None, 'off': False, 'on': True}[args.with_cp]
    models = {'mask-rcnn dat-t++': build_detector(DAT_CONFIG, cp).to(args.device),
              'mask-rcnn swin-t': build_detector(mmdet_config(SWIN_CONFIG), cp).to(args.device)}
    batch = make_batch(args.batch, H, W, args.boxes)
    runs = {(mode, name): step_fn(m, batch, mode) for mode in args.modes
            for name, m in models.items()}
    times = {k: [] for k in runs}
    ratios = {mode: [] for mode in args.modes}
    for r in range(args.rounds):
        for mode in args.modes:
            per_round = {}
            for name in models:
                t = time_call(runs[(mode, name)], args.device, repeats=args.repeats)
                times[(mode, name)] += t
                per_round[name] = median(t)
            ratios[mode].append(per_round['mask-rcnn dat-t++'] / per_round['mask-rcnn swin-t'])
        print(f'  round {r + 1} done, load average {load_average()}', flush=True)
    rows = []
    for (mode, name), run in runs.items():
        mem = peak_memory(run, args.device)
        ratio = '-'
        if 'dat' in name:
            rs = ratios[mode]
            ratio = f'{median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})'
        rows.append([f'{args.size}x{args.batch}', mode, name,
                     'on' if models[name].bench_with_cp else 'off',
                     fmt_ms(median(times[(mode, name)])), fmt_mib(mem), ratio])
    print()
    print(table(['images WxHxB', 'mode', 'model', 'activation ckpt', 'median ms', 'peak MiB',
                 'DAT / Swin'], rows))
    print(f'\nload average at end: {load_average()}')


if __name__ == '__main__':
    main()
