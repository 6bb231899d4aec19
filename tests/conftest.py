"""Shared pytest setup: a version header for CI logs, a fixed seed for every test, and no
mmengine visualizer carried over from one test to the next."""
import importlib
import random
import sys

import numpy as np
import pytest
import torch


def pytest_report_header(config):
    versions = []
    for module in ('torch', 'numpy', 'mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain'):
        try:
            versions.append(f'{module} {importlib.import_module(module).__version__}')
        except Exception as err:  # noqa: BLE001 - the header must never break collection
            versions.append(f'{module} unavailable ({type(err).__name__})')
    return 'dat_mm stack: ' + ', '.join(versions)


@pytest.fixture(autouse=True)
def _fixed_seed():
    """Every test starts from the same RNG state, whatever ran before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@pytest.fixture(autouse=True)
def _no_visualizer_from_earlier_tests():
    """mmengine keeps visualizers in a process-wide table by name, and the OpenMMLab configs all
    name theirs 'visualizer': a Runner built in a later test would get an earlier test's
    instance, whose backends write into that test's work directory (deleted once it passed)."""
    yield
    vis = sys.modules.get('mmengine.visualization')
    if vis is not None:
        for cls in (vis.Visualizer, *_subclasses(vis.Visualizer)):
            cls._instance_dict.clear()
