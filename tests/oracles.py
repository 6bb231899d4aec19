"""Test oracles written from the published models' specification, independently of ``dat_mm``.

Nothing here imports ``dat_mm``'s layers: every mechanism is transcribed from docs/model.md in the
plainest form (per-pixel loops, per-head loops, an explicit bilinear sampler instead of
``F.grid_sample``), so that a mistake in the implementation cannot be shared by its oracle.
The modules under test only lend their *parameters* (read by attribute name, which is the
published checkpoint layout of docs/model.md, "Checkpoint layout").

Conventions that docs/model.md leaves implicit and that we take from the published checkpoints
(they must hold for the published weights to load and give the same numbers):

* ``qkv = Linear(C, 3C)`` output channels are laid out ``(3, heads, head_dim)`` (q first),
  for both the NATTEN block (``qkv``) and the Swin blocks (``proj_qkv``).
* head ``n`` of a deformable layer owns channels ``[n*c, (n+1)*c)``; offset group ``j`` owns
  channels ``[j*C/g, (j+1)*C/g)``, hence heads ``[j*h/g, (j+1)*h/g)``.
* ``GELU`` is the exact (erf) GELU of ``nn.GELU()``; ``LN`` has eps 1e-5.

dat_mm's documented choice for the size-1 edge case (docs/model.md) (DAT++ formulas dividing by
``n - 1``): an axis of length 1 gets the single coordinate 0, and a range-limited offset
(``offset_range_factor >= 0``) on such an axis divides by 1 instead of 0.
"""
import math

import torch
import torch.nn.functional as F


# -- primitives ------------------------------------------------------------------------------
def conv1x1(conv, x):
    """A 1x1 conv written as a channel matmul (``conv`` lends weight and bias)."""
    y = torch.einsum('oc,bchw->bohw', conv.weight[:, :, 0, 0], x)
    if conv.bias is not None:
        y = y + conv.bias[None, :, None, None]
    return y


def linear(lin, x):
    """``x @ W^T + b`` on the last axis."""
    y = x @ lin.weight.t()
    return y + lin.bias if lin.bias is not None else y


def layer_norm_channels(x, norm, eps=1e-5):
    """LN over the channel axis of an NCHW map, written out (mean, biased variance)."""
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    return y * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def bilinear_yx(img, pos_y, pos_x):
    """Bilinear sampling with ``align_corners=True`` semantics and zero padding.

    img: ``(N, C, H, W)``; pos_y, pos_x: ``(N, P)`` normalised coordinates, -1 the centre of
    the first pixel, +1 the centre of the last one (an axis of length 1 always reads pixel 0).
    Neighbours outside the map read 0. Returns ``(N, C, P)``.
    """
    N, C, H, W = img.shape
    P = pos_y.shape[1]
    fy = (pos_y + 1) / 2 * (H - 1)
    fx = (pos_x + 1) / 2 * (W - 1)
    y0, x0 = torch.floor(fy).detach(), torch.floor(fx).detach()
    wy1, wx1 = fy - y0, fx - x0
    flat = img.reshape(N, C, H * W)
    out = 0
    for dy, wy in ((0, 1 - wy1), (1, wy1)):
        for dx, wx in ((0, 1 - wx1), (1, wx1)):
            yi, xi = y0 + dy, x0 + dx
            valid = ((yi >= 0) & (yi <= H - 1) & (xi >= 0) & (xi <= W - 1)).to(img.dtype)
            idx = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long()
            vals = flat.gather(2, idx[:, None, :].expand(N, C, P))
            out = out + vals * (wy * wx * valid)[:, None, :]
    return out


# -- neighbourhood attention -----------------------------------------------------------------
def na_loop(q, k, v, rpb, kernel_size):
    """Brute-force NA: one query at a time (docs/model.md, neighbourhood attention).

    q, k, v: ``(B, heads, H, W, c)`` with ``q`` already scaled; rpb ``(heads, 2k-1, 2k-1)`` or
    None. Window start along an axis of length L: ``clamp(i - k//2, 0, L - k)``; bias index
    ``ky - qy + k - 1`` (and x likewise).
    """
    B, nh, H, W, c = q.shape
    ks = kernel_size
    assert H >= ks and W >= ks, 'na_loop needs maps at least as large as the kernel'
    rows = []
    for qy in range(H):
        y0 = min(max(qy - ks // 2, 0), H - ks)
        ky = torch.arange(y0, y0 + ks)
        cols = []
        for qx in range(W):
            x0 = min(max(qx - ks // 2, 0), W - ks)
            kx = torch.arange(x0, x0 + ks)
            keys = k[:, :, y0:y0 + ks, x0:x0 + ks]          # (B, nh, ks, ks, c)
            vals = v[:, :, y0:y0 + ks, x0:x0 + ks]
            logits = (q[:, :, qy, qx, None, None, :] * keys).sum(-1)  # (B, nh, ks, ks)
            if rpb is not None:
                by = (ky - qy + ks - 1)[:, None]
                bx = (kx - qx + ks - 1)[None, :]
                logits = logits + rpb[:, by, bx]
            p = logits.reshape(B, nh, ks * ks).softmax(-1).reshape(B, nh, ks, ks)
            cols.append((p[..., None] * vals).sum(dim=(2, 3)))  # (B, nh, c)
        rows.append(torch.stack(cols, dim=2))                 # (B, nh, W, c)
    return torch.stack(rows, dim=2)                           # (B, nh, H, W, c)


def na_module_oracle(mod, x, kernel_size):
    """NA block attention on an NCHW map with the parameters of ``mod`` (qkv, rpb, proj).

    Maps smaller than the kernel are zero-padded at the bottom/right *before* the qkv
    projection (pad tokens are real tokens whose qkv is the projection bias) and cropped back.
    """
    ks, nh = kernel_size, mod.num_heads
    t = x.permute(0, 2, 3, 1)
    B, H0, W0, C = t.shape
    H, W = max(H0, ks), max(W0, ks)
    t = torch.cat([t, t.new_zeros(B, H0, W - W0, C)], dim=2)
    t = torch.cat([t, t.new_zeros(B, H - H0, W, C)], dim=1)
    hd = C // nh
    qkv = linear(mod.qkv, t).reshape(B, H, W, 3, nh, hd)
    q, k, v = (qkv[:, :, :, i].permute(0, 3, 1, 2, 4) for i in range(3))
    out = na_loop(q * hd ** -0.5, k, v, mod.rpb, ks)
    out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)[:, :H0, :W0]
    return linear(mod.proj, out).permute(0, 3, 1, 2)


# -- deformable attention --------------------------------------------------------------------
def axis_coord(i, n, version, kind):
    """Normalised coordinate of point ``i`` of ``n`` (spec steps 3 and 7)."""
    if version == 1:
        return (i + 0.5) / n * 2 - 1
    if n == 1:
        return 0.0  # dat_mm's documented choice; the published formula divides by zero
    if kind == 'ref':
        return (i + 0.5) / (n - 1) * 2 - 1
    return i / (n - 1) * 2 - 1


def dmha_oracle(mod, x, *, stride, offset_kernel, offset_range_factor, version,
                use_pe=True, return_positions=False, detach_pos_in=None):
    """Deformable multi-head attention, steps 1-8 of docs/model.md, with ``mod``'s
    parameters (``proj_{q,k,v,out}``, ``conv_offset.{0,1,3}``, ``rpe_table``).

    The structural settings are passed from the test (not read from ``mod``), so a module
    built with the wrong stride/padding/kernel disagrees with the oracle.
    ``detach_pos_in`` ('sampling' or 'bias') cuts the gradient of the positions along one of
    the two paths, to show that the offsets get gradient through both.
    """
    B, C, H, W = x.shape
    g, nh = mod.groups, mod.num_heads
    c, Cg, hpg = C // nh, C // g, nh // g
    dt = x.dtype
    # 1. queries
    q = conv1x1(mod.proj_q, x)
    # 2. offsets from q, per group: DWConv(ks, s, pad ks//2 or 0 if ks == s) -> LN -> GELU
    #    -> 1x1 (no bias) to (y, x)
    dw, ln, pw = mod.conv_offset[0], mod.conv_offset[1], mod.conv_offset[3]
    pad = 0 if offset_kernel == stride else offset_kernel // 2
    qg = q.reshape(B * g, Cg, H, W)
    h = F.conv2d(qg, dw.weight, dw.bias, stride=stride, padding=pad, groups=Cg)
    h = gelu(layer_norm_channels(h, ln))
    off = torch.einsum('oc,bchw->bohw', pw.weight[:, :, 0, 0], h)  # (B*g, 2, Hk, Wk)
    assert pw.bias is None
    Hk, Wk = off.shape[2:]
    # 3. reference points
    ref_y = torch.tensor([axis_coord(i, Hk, version, 'ref') for i in range(Hk)], dtype=dt)
    ref_x = torch.tensor([axis_coord(i, Wk, version, 'ref') for i in range(Wk)], dtype=dt)
    off_y, off_x = off[:, 0], off[:, 1]
    # 4. offset range / clamp / tanh
    f = offset_range_factor
    if version == 2:
        if f >= 0:
            off_y = torch.tanh(off_y) * f / (Hk - 1 if Hk > 1 else 1)
            off_x = torch.tanh(off_x) * f / (Wk - 1 if Wk > 1 else 1)
        pos_y = ref_y[None, :, None] + off_y
        pos_x = ref_x[None, None, :] + off_x
        if f < 0:
            pos_y, pos_x = pos_y.clamp(-1, 1), pos_x.clamp(-1, 1)
    else:
        if f > 0:
            off_y = torch.tanh(off_y) * f / Hk
            off_x = torch.tanh(off_x) * f / Wk
        pos_y = ref_y[None, :, None] + off_y
        pos_x = ref_x[None, None, :] + off_x
        if f < 0:
            pos_y, pos_x = torch.tanh(pos_y), torch.tanh(pos_x)
    Ns = Hk * Wk
    pos_y, pos_x = pos_y.reshape(B * g, Ns), pos_x.reshape(B * g, Ns)
    # 5. sample x (not q) at pos
    sy, sx = pos_y, pos_x
    if detach_pos_in == 'sampling':
        sy, sx = sy.detach(), sx.detach()
    xs = bilinear_yx(x.reshape(B * g, Cg, H, W), sy, sx).reshape(B, C, 1, Ns)
    # 6. keys / values
    k = conv1x1(mod.proj_k, xs).reshape(B, C, Ns)
    v = conv1x1(mod.proj_v, xs).reshape(B, C, Ns)
    qf = q.reshape(B, C, H * W)
    qy = torch.tensor([axis_coord(i, H, version, 'query') for i in range(H)], dtype=dt)
    qx = torch.tensor([axis_coord(i, W, version, 'query') for i in range(W)], dtype=dt)
    QY = qy[:, None].expand(H, W).reshape(-1)
    QX = qx[None, :].expand(H, W).reshape(-1)
    py, px = pos_y.reshape(B, g, Ns), pos_x.reshape(B, g, Ns)
    if detach_pos_in == 'bias':
        py, px = py.detach(), px.detach()
    outs = []
    for n in range(nh):
        j = n // hpg  # the head's offset group
        sl = slice(n * c, (n + 1) * c)
        logits = torch.einsum('bcm,bcn->bmn', qf[:, sl], k[:, sl]) * c ** -0.5
        if use_pe:
            # 7. bias: the head's table sampled at (q - pos) / 2, (y, x)
            dy = (QY[None, :, None] - py[:, j, None, :]) * 0.5   # (B, M, Ns)
            dx = (QX[None, :, None] - px[:, j, None, :]) * 0.5
            table = mod.rpe_table[n][None, None].expand(B, 1, -1, -1)
            bias = bilinear_yx(table, dy.reshape(B, -1), dx.reshape(B, -1))
            logits = logits + bias.reshape(B, H * W, Ns)
        # 8. softmax over the Ns keys, weighted sum of v
        p = logits.softmax(-1)
        outs.append(torch.einsum('bmn,bcn->bcm', p, v[:, sl]))
    out = conv1x1(mod.proj_out, torch.cat(outs, dim=1).reshape(B, C, H, W))
    if return_positions:
        return out, torch.stack([pos_y, pos_x], -1).reshape(B, g, Hk, Wk, 2)
    return out


# -- window attention (v1) -------------------------------------------------------------------
def window_oracle(mod, x, window, shift):
    """Swin window / shifted-window attention (spec **L** / **S**) with ``mod``'s parameters
    (``proj_qkv``, ``relative_position_bias_table``, ``proj_out``).

    Maps that are not window multiples are zero-padded at the bottom/right (as mmdet's Swin
    does) before the shift; the mask regions are those of the padded map; cropped back.
    """
    B, C, H0, W0 = x.shape
    w, nh = window, mod.num_heads
    hd = C // nh
    Hp, Wp = -(-H0 // w) * w, -(-W0 // w) * w
    t = F.pad(x, (0, Wp - W0, 0, Hp - H0)).permute(0, 2, 3, 1)     # (B, Hp, Wp, C)

    def region(r, n):  # Swin's slices (0, -w), (-w, -shift), (-shift, None)
        return 0 if r < n - w else (1 if r < n - shift else 2)

    label = torch.tensor([[region(r, Hp) * 3 + region(s, Wp) for s in range(Wp)]
                          for r in range(Hp)])
    if shift:
        t = torch.roll(t, shifts=(-shift, -shift), dims=(1, 2))
    coords = [(a, b) for a in range(w) for b in range(w)]          # row-major in a window
    rel = torch.tensor([[(ya - yb + w - 1) * (2 * w - 1) + (xa - xb + w - 1)
                         for (yb, xb) in coords] for (ya, xa) in coords])
    bias = mod.relative_position_bias_table[rel.reshape(-1)].reshape(w * w, w * w, nh)
    bias = bias.permute(2, 0, 1)
    out_rows = []
    for r in range(Hp // w):
        out_cols = []
        for s in range(Wp // w):
            tok = t[:, r * w:(r + 1) * w, s * w:(s + 1) * w].reshape(B, w * w, C)
            qkv = linear(mod.proj_qkv, tok).reshape(B, w * w, 3, nh, hd)
            q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, nh, N, hd)
            logits = (q * hd ** -0.5) @ k.transpose(-1, -2) + bias[None]
            if shift:
                lab = label[r * w:(r + 1) * w, s * w:(s + 1) * w].reshape(-1)
                mask = (lab[:, None] != lab[None, :]).to(x.dtype) * -100.0
                logits = logits + mask
            o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, w, w, C)
            out_cols.append(linear(mod.proj_out, o))
        out_rows.append(torch.cat(out_cols, dim=2))
    out = torch.cat(out_rows, dim=1)                               # (B, Hp, Wp, C)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out[:, :H0, :W0].permute(0, 3, 1, 2)


# -- MLPs, stems, blocks, whole backbone -----------------------------------------------------
def conv_ffn_oracle(mlp, x):
    """DAT++ ConvFFN: 1x1 (C -> 4C); h = h + DWConv3x3(h); GELU; 1x1 (4C -> C)."""
    h = conv1x1(mlp.linear1[0], x)
    dwc = mlp.dwc
    h = h + F.conv2d(h, dwc.weight, dwc.bias, padding=1, groups=h.shape[1])
    return conv1x1(mlp.linear2[0], gelu(h))


def token_mlp_oracle(mlp, x):
    """v1 MLP on tokens: Linear(C, 4C) -> GELU -> Linear(4C, C)."""
    t = x.permute(0, 2, 3, 1)
    t = linear(mlp.chunk.linear2, gelu(linear(mlp.chunk.linear1, t)))
    return t.permute(0, 3, 1, 2)


def overlapped_stem_oracle(stem, x):
    """DAT++ stem: Conv3x3 s2 p1 -> LN -> GELU -> Conv3x3 s2 p1 -> LN."""
    h = F.conv2d(x, stem[0].weight, stem[0].bias, stride=2, padding=1)
    h = gelu(layer_norm_channels(h, stem[1]))
    h = F.conv2d(h, stem[3].weight, stem[3].bias, stride=2, padding=1)
    return layer_norm_channels(h, stem[4])


def patch_stem_oracle(stem, x):
    """v1 stem: Conv4x4 s4 -> LN (inputs zero-padded bottom/right to multiples of 4)."""
    x = F.pad(x, (0, -x.shape[3] % 4, 0, -x.shape[2] % 4))
    return layer_norm_channels(F.conv2d(x, stem[0].weight, stem[0].bias, stride=4), stem[1])


def down_oracle(down, x, version):
    """DAT++: Conv3x3 s2 p1 no bias -> LN; v1: Conv2x2 s2 no bias -> LN (padded to even)."""
    assert down[0].bias is None
    if version == 2:
        h = F.conv2d(x, down[0].weight, stride=2, padding=1)
    else:
        x = F.pad(x, (0, -x.shape[3] % 2, 0, -x.shape[2] % 2))
        h = F.conv2d(x, down[0].weight, stride=2)
    return layer_norm_channels(h, down[1])


def block_oracle(block, x, stage, version, na_kernel=7, window=7):
    """One DAT block in eval mode (drop-path is the identity):
    ``[x += DWConv3x3(x)]; x += Attn(LN(x)); x += MLP(LN(x))``.

    ``stage`` is a plain dict written from docs/model.md's tables: ``kind`` of this block
    ('N', 'D', 'L', 'S') and the deformable settings (``stride``, ``offset_kernel``,
    ``offset_range_factor``, ``use_pe``).
    """
    C = x.shape[1]
    kind = stage['kind']
    if version == 2:  # local perception unit
        x = x + F.conv2d(x, block.lpu.weight, block.lpu.bias, padding=1, groups=C)
    h = layer_norm_channels(x, block.norm1)
    if kind == 'N':
        a = na_module_oracle(block.attn, h, na_kernel)
    elif kind == 'D':
        a = dmha_oracle(block.attn, h, stride=stage['stride'],
                        offset_kernel=stage['offset_kernel'],
                        offset_range_factor=stage['offset_range_factor'], version=version,
                        use_pe=stage['use_pe'])
    elif kind == 'L':
        a = window_oracle(block.attn, h, window, 0)
    elif kind == 'S':
        a = window_oracle(block.attn, h, window, math.ceil(window / 2))
    else:
        raise ValueError(kind)
    x = x + a
    h = layer_norm_channels(x, block.norm2)
    return x + (conv_ffn_oracle(block.mlp, h) if version == 2 else token_mlp_oracle(block.mlp, h))


def backbone_oracle(model, x, arch, out_indices=(0, 1, 2, 3), out_norm=True):
    """stem -> stage0 -> down0 -> ... -> stage3, LN on returned stage outputs.

    ``arch``: ``dict(version=, window=, stages=[dict(pattern='ND', depth=, stride=,
    offset_kernel=, offset_range_factor=, use_pe=), ...])`` written from docs/model.md.
    """
    version = arch['version']
    h = (overlapped_stem_oracle if version == 2 else patch_stem_oracle)(model.stem, x)
    outs = []
    for i, st in enumerate(arch['stages']):
        if i > 0:
            h = down_oracle(model.downsamples[i - 1], h, version)
        pattern = st['pattern']
        for j in range(st['depth']):
            settings = dict(st, kind=pattern[j % len(pattern)])
            h = block_oracle(model.stages[i].blocks[j], h, settings, version,
                             window=arch.get('window', 7))
        if i in out_indices:
            outs.append(layer_norm_channels(h, model.norms[i]) if out_norm else h)
        if i == max(out_indices):
            break
    return tuple(outs)
