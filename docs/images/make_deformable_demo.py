"""Regenerate docs/images/deformable_demo.png (the README picture of the visualisation tool).

    .venv/bin/python docs/images/make_deformable_demo.py

The input is generated here (shapes on a textured background: no photo, no download) and the
model is DAT-T++ *randomly initialised* (no weights are downloaded), so the picture shows what
the tool draws, not what a trained model learned.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def make_image(path: str, width: int = 512, height: int = 384, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Texture: two smooth gradients, diagonal stripes and blurred noise.
    noise = Image.fromarray((rng.random((height, width)) * 255).astype(np.uint8))
    noise = np.asarray(noise.filter(ImageFilter.GaussianBlur(3)), np.float32) / 255
    stripes = 0.5 + 0.5 * np.sin((xx + 0.6 * yy) / 9.0)
    base = np.stack([90 + 60 * xx / width + 30 * stripes,
                     110 + 50 * yy / height + 20 * noise,
                     140 - 40 * xx / width + 40 * noise], -1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), 'RGB')
    draw = ImageDraw.Draw(img)
    draw.ellipse([60, 70, 190, 200], fill=(235, 200, 40), outline=(40, 30, 10), width=4)
    draw.rectangle([300, 60, 460, 170], fill=(200, 50, 50), outline=(60, 10, 10), width=4)
    draw.polygon([(250, 340), (340, 200), (430, 340)], fill=(40, 150, 70),
                 outline=(10, 50, 20))
    draw.ellipse([90, 260, 170, 340], fill=(240, 240, 240), outline=(30, 30, 30), width=3)
    img.save(path)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, 'dat_t_pp_demo.py')
        with open(cfg, 'w') as f:  # DAT-T++ classifier; the test pipeline keeps 512x384
            f.write("""
default_scope = 'mmpretrain'
custom_imports = dict(imports=['dat_mm'], allow_failed_imports=False)
model = dict(type='ImageClassifier',
             backbone=dict(type='DAT', arch='tiny++', out_indices=(3,)),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=1000, in_channels=512,
                       loss=dict(type='CrossEntropyLoss')))
data_preprocessor = dict(num_classes=1000, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
test_dataloader = dict(dataset=dict(type='CustomDataset', data_root='',
                                    pipeline=test_pipeline))
""")
        image = os.path.join(tmp, 'shapes.png')
        make_image(image)
        out = os.path.join(HERE, 'deformable_demo.png')
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
        subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'visualize_deformable.py'),
                        cfg, 'none', image, '--stage', '2', '--block', '17',
                        '--query', '125,135', '--out', out], check=True, env=env)


if __name__ == '__main__':
    main()
