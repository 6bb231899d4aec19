#!/usr/bin/env bash
# Quickstart (initial version): set everything up, then run the DAT-T++ and DAT-S++ backbones,
# built from the registry as a config would (type='DAT'), on a generated 224x224 image and
# print their multi-scale feature shapes. No download: randomly initialised weights.
#   bash tools/quickstart.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DAT_MM_VENV:-$root/.venv}
bash "$root/tools/install/setup_env.sh"
cd "$root"
exec "$venv/bin/python" - <<'PY'
import time

import numpy as np
import torch
from mmengine.registry import MODELS

import dat_mm  # registers type='DAT'

# A generated image: smooth colour gradients plus a bright disc and a dark square.
h = w = 224
yy, xx = np.mgrid[0:h, 0:w] / 223.0
img = np.stack([xx, yy, 1 - xx * yy], axis=0)
img[:, (yy - .35) ** 2 + (xx - .3) ** 2 < .02] = 1.0
img[:, 130:190, 120:200] = 0.0
x = torch.from_numpy(img).float().unsqueeze(0)
x = (x - x.mean()) / x.std()

torch.manual_seed(0)
print(f'dat_mm {dat_mm.__version__}, torch {torch.__version__}, input {tuple(x.shape)}')
for arch in ('tiny++', 'small++'):
    model = MODELS.build(dict(type='DAT', arch=arch)).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    start = time.perf_counter()
    with torch.no_grad():
        feats = model(x)
    took = time.perf_counter() - start
    print(f'DAT {arch:8s} {params:6.2f} M params, forward {took:5.2f} s')
    for i, f in enumerate(feats):
        print(f'  stage {i}: {tuple(f.shape)} (stride {h // f.shape[-1]})'
              f' mean {f.mean().item():+.3f} std {f.std().item():.3f}')
PY
