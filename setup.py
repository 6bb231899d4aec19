"""dat_mm: DAT / DAT++ backbones as an OpenMMLab 2.0 plugin.

Dependencies are listed by name in requirements/*.txt and pinned in one place,
requirements/constraints.txt (tools/install/setup_env.sh installs with ``-c`` that file).
``install_requires`` is only what the model code needs (torch, numpy, mmengine), so the
backbone runs on a bare machine with torch + mmengine; the task stack is the ``openmmlab``
extra (mmcv must be the wheel with ops built by tools/install/build_mmcv.sh).
"""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    with open(osp.join(HERE, 'dat_mm', '__init__.py')) as f:
        return re.search(r"^__version__ = '([^']+)'", f.read(), re.M).group(1)


setup(
    name='dat_mm',
    version=read_version(),
    description='DAT / DAT++ (Deformable Attention Transformer) backbones for OpenMMLab 2.0',
    packages=find_packages(include=['dat_mm', 'dat_mm.*']),
    python_requires='>=3.9',
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'openmmlab': read_requirements('openmmlab.txt'),
        'tests': read_requirements('tests.txt'),
    },
    zip_safe=False,
)
