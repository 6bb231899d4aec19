"""Shared pytest setup: a version header for CI logs and a fixed seed for every test."""
import importlib
import random

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
