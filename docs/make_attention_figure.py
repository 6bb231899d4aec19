"""Make docs/images/deformable_demo.png: where a briefly trained DAT-T++ samples and attends.

    .venv/bin/python docs/make_attention_figure.py [--steps 300] [--out PATH]

All on the CPU, from fixed seeds, downloading nothing:

1. Generates the project's synthetic classification data
   (:func:`dat_mm.datasets.generate_imagenet_shapes`: one circle, square, star or triangle per
   image on a textured background, class = shape) at 128x128 px in a temporary folder:
   ``--train-per-class`` training images per class (seed 0), and ``--heldout-per-class``
   held-out images per class from another seed (1), never trained on.
2. Trains DAT-T++ (``dat_mm.DAT('tiny++')``, randomly initialised, stochastic depth off) with
   global average pooling and a linear 4-way head: AdamW, batch 16, random horizontal flips,
   ``--steps`` steps (the default, 300, takes about 10 minutes on one CPU thread).
3. Captures every deformable block of stage 2 on the held-out images
   (:func:`dat_mm.visualization.capture_deformable`), before and after training, and picks the
   block whose queries attend most selectively after training (fewest keys per query:
   ``exp(entropy)`` of each query's attention over its group's keys).
4. Draws that block with :func:`dat_mm.visualization.draw.draw_sampling_points` on the first
   held-out image of three classes: the keys each offset group samples (colour = group), dot
   area = attention, received from all queries (before / after training) or of one query on
   the shape (after training); the caption states the training, the held-out accuracy and,
   over all held-out images, the share of attention on keys that lie on the shape against the
   share of such keys.
"""
import argparse
import copy
import math
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw, ImageFont

from dat_mm import DAT
from dat_mm.datasets import generate_imagenet_shapes
from dat_mm.datasets.shapes import clip_polygon, image_rng, shape_polygon, textured_background
from dat_mm.visualization import capture_deformable, deformable_blocks, to_image_pixels
from dat_mm.visualization.draw import draw_sampling_points

HERE = os.path.dirname(os.path.abspath(__file__))

SIZE = 128
STAGE = 2  # DAT-T++ stage 2 at 128 px: 8x8 queries; 4 offset groups of 4x4 sampled keys
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--steps', type=int, default=300, help='training steps of batch 16')
    p.add_argument('--train-per-class', type=int, default=400)
    p.add_argument('--heldout-per-class', type=int, default=10)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--threads', type=int, default=1,
                   help='CPU threads for torch (1 by default: on a machine shared with other '
                        'jobs, more threads than free cores make every step many times slower)')
    p.add_argument('--out', default=os.path.join(HERE, 'images', 'deformable_demo.png'))
    return p.parse_args(argv)


# -- data --------------------------------------------------------------------------------------
def load_split(root: str, split: str):
    """(uint8 N x 3 x H x W images, labels, class names, file names) of a generated split."""
    classes = open(os.path.join(root, 'meta', 'classes.txt')).read().split()
    images, labels, names = [], [], []
    for line in open(os.path.join(root, 'meta', f'{split}.txt')).read().splitlines():
        rel, label = line.rsplit(' ', 1)
        img = np.asarray(Image.open(os.path.join(root, split, rel)).convert('RGB'))
        images.append(torch.from_numpy(img.copy()).permute(2, 0, 1))
        labels.append(int(label))
        names.append(rel)
    return torch.stack(images), torch.tensor(labels), classes, names


def shape_mask(seed: int, split: str, name: str, index: int) -> np.ndarray:
    """The shape's pixels in a generated image, from the random draws that
    generate_imagenet_shapes makes for it (same generator, same order)."""
    rng = image_rng(seed, f'{split}/{name}', index)
    textured_background(rng, SIZE, SIZE, contrast=40.0)
    size = rng.uniform(0.45, 0.8) * SIZE
    cx = rng.uniform(size / 2, SIZE - size / 2)
    cy = rng.uniform(size / 2, SIZE - size / 2)
    poly = clip_polygon(shape_polygon(name, cx, cy, size, rng.uniform(0, 6.283)), SIZE, SIZE)
    mask = Image.new('L', (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in poly], fill=255)
    return np.asarray(mask) > 127


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images.float() - MEAN) / STD


# -- model -------------------------------------------------------------------------------------
class Classifier(nn.Module):
    """DAT-T++ + global average pooling + linear head (the mmpretrain classifier's layout)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = DAT('tiny++', out_indices=(3,), drop_path_rate=0.0)
        self.head = nn.Linear(self.backbone.out_channels[-1], num_classes)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean((2, 3)))


def train(model, images, labels, steps: int, lr: float, batch: int = 16):
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(i, steps) / steps)))
    model.train()
    order = torch.randperm(len(images), generator=gen)
    pos = 0
    for step in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos:pos + batch]
        pos += batch
        x = normalise(images[idx])
        flip = torch.rand(batch, generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        loss = nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            print(f'step {step + 1}/{steps}: loss {loss.item():.3f}', flush=True)
    model.eval()


@torch.no_grad()
def accuracy(model, images, labels) -> float:
    pred = torch.cat([model(normalise(images[i:i + 20])).argmax(1)
                      for i in range(0, len(images), 20)])
    return (pred == labels).float().mean().item()


@torch.no_grad()
def capture_stage(model, images, stage: int = STAGE):
    """For every deformable block of ``stage``, per image: sampling points ``(g, N, 2)`` as
    ``(x, y)`` image pixels, the attention each key receives ``(g, N)`` (mean over queries and
    the heads of its group) and the attention of every query ``(H, W, g, N)``."""
    blocks = [b for b in deformable_blocks(model.backbone) if b[0] == stage]
    out = {b: [] for b in blocks}
    for i in range(0, len(images), 10):
        with capture_deformable(model, blocks) as cap:
            model.backbone(normalise(images[i:i + 10]))
        for rec in cap:
            g = rec.groups
            pts = to_image_pixels(rec.pos.double(), rec.query_size, (SIZE, SIZE)).flip(-1)
            recv = rec.received_attention().double()
            per_query = rec.group_attention().double().flatten(-2).permute(0, 2, 3, 1, 4)
            for b in range(len(pts)):
                out[rec.stage, rec.block].append(dict(
                    points=pts[b].reshape(g, -1, 2).numpy(),
                    received=recv[b].reshape(g, -1).numpy(),
                    queries=per_query[b].numpy()))
    return out


def spread(records) -> float:
    """Over how many of its group's keys a query spreads its attention, on average:
    ``exp(entropy)`` of each query's distribution (the group's key count when uniform)."""
    ent = [-(r['queries'] * np.log(np.clip(r['queries'], 1e-12, None))).sum(-1)
           for r in records]
    return float(np.exp(np.concatenate([e.ravel() for e in ent])).mean())


def on_shape(points, weights, mask):
    """(share of the attention on keys sampled on the shape, share of such keys)."""
    ij = np.clip(np.floor(points).astype(int), 0, SIZE - 1)
    inside = mask[ij[..., 1], ij[..., 0]]
    return float((weights * inside).sum() / weights.sum()), float(inside.mean())


def shape_query(mask, query_size):
    """The query map cell ``(row, column)`` at the centre of the shape's pixels."""
    ys, xs = np.nonzero(mask)
    H, W = query_size
    return int((ys.mean() + 0.5) * H / SIZE), int((xs.mean() + 0.5) * W / SIZE)


# -- figure ------------------------------------------------------------------------------------
def wrap(draw, text: str, font, width: int):
    """Greedy word wrap of ``text`` to lines no wider than ``width`` pixels."""
    lines, line = [], ''
    for word in text.split():
        candidate = f'{line} {word}'.strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line]


def panel(image, points, weights, label, query, zoom: int):
    """One drawing at ``zoom`` x the image size, with label lines under it; ``query``: None or
    ``(x, y, cell)``: a query point and its map cell ``(x0, y0, x1, y1)`` in image pixels."""
    big = np.asarray(Image.fromarray(image).resize((SIZE * zoom, SIZE * zoom), Image.BICUBIC))
    marks = {} if query is None else dict(query=(query[0] * zoom, query[1] * zoom),
                                          query_box=[v * zoom for v in query[2]])
    pic = draw_sampling_points(big, points * zoom, weights, caption=[], legend=False,
                               radius=(1.5, 3.4 * zoom), dim=0.25, **marks)
    font = ImageFont.load_default(size=14)
    out = Image.new('RGB', (pic.width, pic.height + 4 + 17 * len(label)), (255, 255, 255))
    out.paste(pic, (0, 0))
    for k, line in enumerate(label):
        ImageDraw.Draw(out).text((2, pic.height + 2 + 17 * k), line, font=font, fill=(0, 0, 0))
    return out


def figure(rows, row_titles, caption, zoom=2, gap=8):
    panels = [[panel(*cell, zoom=zoom) for cell in row] for row in rows]
    pw, ph = panels[0][0].size
    title_w = 165
    width = title_w + len(panels[0]) * (pw + gap)
    font, small = ImageFont.load_default(size=16), ImageFont.load_default(size=14)
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    text = [line for para in caption for line in wrap(probe, para, small, width - 12)]
    line_h = 18
    height = len(panels) * (ph + gap) + len(text) * line_h + 10
    fig = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(fig)
    y = 0
    for title, row in zip(row_titles, panels):
        for k, line in enumerate(title):
            draw.text((6, y + ph // 2 - 40 + k * line_h), line, font=font, fill=(0, 0, 0))
        for j, p in enumerate(row):
            fig.paste(p, (title_w + j * (pw + gap), y))
        y += ph + gap
    for k, line in enumerate(text):
        draw.text((6, y + 2 + k * line_h), line, font=small, fill=(0, 0, 0))
    return fig


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        generate_imagenet_shapes(os.path.join(tmp, 'train'), args.train_per_class, 0,
                                 image_size=SIZE, seed=0, splits=('train',))
        generate_imagenet_shapes(os.path.join(tmp, 'heldout'), 0, args.heldout_per_class,
                                 image_size=SIZE, seed=1, splits=('val',))
        images, labels, classes, _ = load_split(os.path.join(tmp, 'train'), 'train')
        held, held_labels, _, held_names = load_split(os.path.join(tmp, 'heldout'), 'val')
    masks = []
    for rel in held_names:
        name, file = rel.split('/')
        masks.append(shape_mask(1, 'val', name, int(file.rsplit('_', 1)[1].split('.')[0])))
    for img, mask in zip(held, masks):  # the masks cover the drawn shapes
        img = img.permute(1, 2, 0).numpy().astype(float)
        assert np.abs(img[mask].mean(0) - img[~mask].mean(0)).max() > 30, 'mask mismatch'

    model = Classifier(len(classes))
    initial = copy.deepcopy(model).eval()
    t0 = time.time()
    train(model, images, labels, args.steps, args.lr)
    minutes = (time.time() - t0) / 60
    acc0, acc = accuracy(initial, held, held_labels), accuracy(model, held, held_labels)

    before, after = capture_stage(initial, held), capture_stage(model, held)
    spreads = {b: (spread(before[b]), spread(after[b])) for b in after}
    for b, (s0, s1) in spreads.items():
        print(f'stage {b[0]} block {b[1]}: attention spread over {s0:.2f} -> {s1:.2f} keys')
    # The block to draw: the most selective one after training (fewest keys per query).
    block = min(after, key=lambda b: spreads[b][1])
    n_keys = after[block][0]['received'].shape[1]
    shares = {key: np.array([on_shape(r['points'], r['received'], m)
                             for r, m in zip(recs[block], masks)]).mean(0)
              for key, recs in (('before', before), ('after', after))}

    # The first held-out image of three classes (no choosing).
    show = [held_names.index(next(n for n in held_names if n.startswith(c + '/')))
            for c in ('circle', 'star', 'triangle')]
    rows = []
    for recs, kind in ((before, 'received'), (after, 'received'), (after, 'query')):
        row = []
        for i in show:
            r = recs[block][i]
            query = None
            weights = r['received']
            if kind == 'query':
                H, W = r['queries'].shape[:2]
                cy, cx = shape_query(masks[i], (H, W))
                weights = r['queries'][cy, cx]
                cell = (cx * SIZE / W, cy * SIZE / H, (cx + 1) * SIZE / W, (cy + 1) * SIZE / H)
                query = ((cell[0] + cell[2]) / 2, (cell[1] + cell[3]) / 2, cell)
            share, keys = on_shape(r['points'], weights, masks[i])
            row.append((held[i].permute(1, 2, 0).numpy(), r['points'], weights,
                        [f'attention on the shape: {share:.0%}',
                         f'sampled keys on the shape: {keys:.0%}'], query))
        rows.append(row)
    titles = [['Before training', '(random init),', 'mean over queries'],
              ['After training,', 'mean over queries'],
              ['After training,', 'one query (x)', 'on the shape']]
    s0, s1 = spreads[block]
    threads = f'{args.threads} CPU thread' + ('s' if args.threads > 1 else '')
    caption = [
        f'DAT-T++ (28M parameters), randomly initialised, trained as a 4-way classifier (global '
        f'average pooling + linear head) on {len(images)} generated 128x128 images of '
        f"dat_mm's synthetic shapes data (one circle, square, star or triangle on a textured "
        f'background): {args.steps} steps of batch 16, AdamW, {minutes:.1f} min on {threads}. '
        f'Held-out accuracy {acc0:.0%} before, {acc:.0%} after ({len(held)} images never '
        f'trained on; shown: the first of three classes).',
        f'Drawn: stage 2 block {block[1]}, the stage-2 deformable block whose queries attend most '
        f'selectively after training: a query spreads its attention over {s1:.1f} of the '
        f'{n_keys} keys of its group on average ({s0:.1f} before training; {n_keys} = uniform). '
        f'Dots: the keys each offset group (colour) samples; dot area = attention (the key\'s '
        f'share, averaged over the heads of its group and, in rows 1-2, over all 8x8 queries; '
        f'the largest dot of each picture is its largest share).',
        f'Over all held-out images this block gives {shares["before"][0]:.0%} (before) / '
        f'{shares["after"][0]:.0%} (after training) of the attention of an average query to '
        f'keys sampled on the shape, which are {shares["before"][1]:.0%} / '
        f'{shares["after"][1]:.0%} of its keys. Made by docs/make_attention_figure.py.',
    ]
    fig = figure(rows, titles, caption)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
        .save(args.out, optimize=True)
    print(f'wrote {args.out} ({fig.width}x{fig.height}, '
          f'{os.path.getsize(args.out) / 1024:.0f} KB) in {(time.time() - t_start) / 60:.1f} min')


if __name__ == '__main__':
    main()
