"""dat_mm: DAT / DAT++ backbones as an OpenMMLab 2.0 plugin.

Requirements and their bounds are in requirements/*.txt (the lowest versions are tested: the
compatibility environment of requirements/compat.txt runs the model code's tests with them);
the exact versions of the project environment are pinned in requirements/constraints.txt
(tools/install/setup_env.sh installs with ``-c`` that file). ``install_requires`` is what the
model code needs (torch, numpy, mmengine); the task stack is the ``openmmlab`` extra (mmcv must
be a build with ops, e.g. OpenMMLab's prebuilt wheels or tools/install/build_mmcv.sh); ONNX export
(tools/deployment/export_onnx.py) the ``onnx`` extra.

Like mmdet and mmpretrain, the package carries its configs, tools and model index in
``dat_mm/.mim`` (copies in a wheel or sdist, links in an editable install), where ``mim`` and
mmengine's ``dat_mm::`` config lookup find them.
"""
import os
import os.path as osp
import re
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
#: What dat_mm/.mim holds: (source in the checkout, files kept).
MIM_ITEMS = ('configs', 'tools', 'model-index.yml')
#: Checkout-only scripts that stay out of the package (they set up and test this checkout).
MIM_EXCLUDE = ('install', 'run_tests.sh', 'quickstart.sh', '__pycache__')


def read_requirements(name):
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    with open(osp.join(HERE, 'dat_mm', '__init__.py')) as f:
        return re.search(r"^__version__ = '([^']+)'", f.read(), re.M).group(1)


def add_mim_extension():
    """Fill dat_mm/.mim: relative links for an editable install, copies for anything built."""
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        mode = 'symlink'
    elif commands & {'sdist', 'bdist_wheel', 'build', 'build_py'}:
        mode = 'copy'
    else:
        return
    mim = osp.join(HERE, 'dat_mm', '.mim')
    os.makedirs(mim, exist_ok=True)
    for item in MIM_ITEMS:
        src, dst = osp.join(HERE, item), osp.join(mim, item)
        if not osp.exists(src):  # building from an sdist: .mim came with it
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*MIM_EXCLUDE))
        else:
            shutil.copyfile(src, dst)


add_mim_extension()
setup(
    name='dat_mm',
    version=read_version(),
    description='DAT / DAT++ (Deformable Attention Transformer) backbones for OpenMMLab 2.0',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    license_files=['LICENSE'],
    keywords='computer vision, vision transformer, deformable attention, openmmlab',
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    packages=find_packages(include=['dat_mm', 'dat_mm.*']),
    package_data={'dat_mm': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                             '.mim/configs/**/*.yml', '.mim/tools/**/*.py',
                             '.mim/tools/**/*.sh']},
    python_requires='>=3.9',
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'openmmlab': read_requirements('openmmlab.txt'),
        'onnx': read_requirements('onnx.txt'),
        'tests': read_requirements('tests.txt'),
    },
    zip_safe=False,
)
