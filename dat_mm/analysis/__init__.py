"""Model analysis: parameter and FLOP counting (see :mod:`dat_mm.analysis.flops`)."""
from .flops import (CATEGORIES, PAPER_GFLOPS, FlopReport, build_from_config, count_config,
                    count_model, count_preset, paper_comparison)

__all__ = ['CATEGORIES', 'PAPER_GFLOPS', 'FlopReport', 'build_from_config', 'count_config',
           'count_model', 'count_preset', 'paper_comparison']
