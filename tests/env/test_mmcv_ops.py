"""mmcv's compiled ops are present and correct on CPU.

nms against hand-computed keep lists and a plain greedy reference; RoIAlign against the
analytic answer on a linear ramp and against a direct bilinear-sampling loop.
"""
import math

import mmcv.ops as mmcv_ops
import pytest
import torch


def test_ext_loaded():
    import mmcv
    from mmcv.utils import ext_loader

    ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward', 'roi_align_backward'])
    assert callable(ext.nms)
    assert ext.__name__ == 'mmcv._ext'
    assert mmcv.__version__ == '2.1.0'


# Boxes A..E (x1, y1, x2, y2) and scores; pairwise IoUs worked out by hand:
#   E-A: inter [6,10]x[0,10] = 40, union 100 + 90 - 40 = 150 -> 0.267
#   E-B: inter [6,10]x[0,9] = 36, union 90 + 90 - 36 = 144 -> 0.25
#   E-C: inter [6,15]x[0,10] = 90, union 100 + 90 - 90 = 100 -> 0.9
#   A-B: inter 10*9 = 90, union 100 + 90 - 90 = 100 -> 0.9
#   A-C: inter [5,10]x[0,10] = 50, union 150 -> 0.333 ;  D overlaps nothing.
BOXES = [[0, 0, 10, 10],   # A 0.90
         [0, 0, 10, 9],    # B 0.80
         [5, 0, 15, 10],   # C 0.70
         [20, 20, 30, 30],  # D 0.60
         [6, 0, 15, 10]]   # E 0.95
SCORES = [0.90, 0.80, 0.70, 0.60, 0.95]


@pytest.mark.parametrize('iou_thr, expected', [
    (0.5, [4, 0, 3]),        # E; A (0.27 with E); B dies by A (0.9); C by E (0.9); D
    (0.3, [4, 0, 3]),        # same: no kept pair above 0.3 (A-C 0.33 but C already gone)
    (0.26, [4, 1, 3]),       # A dies by E (0.267); B 0.25 with E and A is gone -> kept; C by E
    (0.95, [4, 0, 1, 2, 3]),  # nothing above 0.95
])
def test_nms_hand_computed(iou_thr, expected):
    boxes = torch.tensor(BOXES, dtype=torch.float32)
    scores = torch.tensor(SCORES)
    dets, keep = mmcv_ops.nms(boxes, scores, iou_threshold=iou_thr)
    assert keep.tolist() == expected
    torch.testing.assert_close(dets[:, :4], boxes[keep])
    torch.testing.assert_close(dets[:, 4], scores[keep])


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _greedy_nms(boxes, scores, thr):
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def test_nms_random_vs_greedy_reference():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    wh = torch.rand(60, 2, generator=g) * 20 + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.randperm(60, generator=g).float() / 60 + 0.01  # distinct
    _, keep = mmcv_ops.nms(boxes, scores, iou_threshold=0.4)
    expected = _greedy_nms(boxes.tolist(), scores.tolist(), 0.4)
    assert keep.tolist() == expected
    assert 5 < len(expected) < 60  # the case really suppresses something


def test_roi_align_linear_ramp_is_exact():
    # f(y, x) = 2x + 3y + 1: bilinear sampling is exact, and the symmetric sampling grid of
    # each bin averages to f at the bin centre.
    h, w = 16, 20
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing='ij')
    feat = (2 * xs + 3 * ys + 1)[None, None].float()
    x1, y1, x2, y2 = 3.0, 2.5, 15.0, 11.5
    rois = torch.tensor([[0, x1, y1, x2, y2]])
    ph, pw = 3, 4
    out = mmcv_ops.RoIAlign((ph, pw), spatial_scale=1.0, sampling_ratio=2,
                            aligned=True)(feat, rois)[0, 0]
    bin_w, bin_h = (x2 - x1) / pw, (y2 - y1) / ph
    cx = torch.tensor([x1 - 0.5 + (j + 0.5) * bin_w for j in range(pw)])
    cy = torch.tensor([y1 - 0.5 + (i + 0.5) * bin_h for i in range(ph)])
    expected = 2 * cx[None, :] + 3 * cy[:, None] + 1
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=1e-4)


def _bilinear(img, y, x):
    """Value of img (H, W) at (y, x), with the RoIAlign border rules."""
    h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[y0, x0] + (1 - ly) * lx * img[y0, x1]
            + ly * (1 - lx) * img[y1, x0] + ly * lx * img[y1, x1])


def _roi_align_loop(feat, rois, out_hw, scale, ratio, aligned):
    ph, pw = out_hw
    out = torch.zeros(len(rois), feat.shape[1], ph, pw, dtype=torch.float64)
    offset = 0.5 if aligned else 0.0
    for r, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = (x2 - x1) * scale, (y2 - y1) * scale
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / pw, rh / ph
        for c in range(feat.shape[1]):
            img = feat[int(b), c].double()
            for i in range(ph):
                for j in range(pw):
                    acc = 0.0
                    for iy in range(ratio):
                        y = sy + i * bh + (iy + 0.5) * bh / ratio
                        for ix in range(ratio):
                            x = sx + j * bw + (ix + 0.5) * bw / ratio
                            acc += float(_bilinear(img, y, x))
                    out[r, c, i, j] = acc / (ratio * ratio)
    return out


@pytest.mark.parametrize('aligned', [True, False])
def test_roi_align_random_vs_bilinear_loop(aligned):
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 3, 7, 9, generator=g)
    # spatial_scale 0.5: image coordinates up to ~18; some rois cross the border, one is tiny.
    rois = torch.tensor([[0, 1.0, 2.0, 13.0, 10.0],
                         [1, -3.0, -1.0, 8.0, 6.0],
                         [1, 10.0, 4.0, 21.0, 16.0],
                         [0, 5.0, 5.0, 5.6, 5.4]])
    out = mmcv_ops.RoIAlign((2, 3), spatial_scale=0.5, sampling_ratio=2,
                            aligned=aligned)(feat, rois)
    expected = _roi_align_loop(feat, rois, (2, 3), 0.5, 2, aligned)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
