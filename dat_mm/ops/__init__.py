"""Fast attention paths, registered into :mod:`dat_mm.models.layers.attention_backends`.

One file per backend family; each registers its functions at import, with a ``check`` that
refuses (with a reason, logged at debug level by the chooser) any call it cannot compute
exactly. The reference functions (priority 1000) remain the fallback and the oracle.

============  =========  ========  ====================================================
kind          name       priority  what
============  =========  ========  ====================================================
neighborhood  tiled      100       query tiles against their key halo, batched matmuls
deformable    chunked    100       query chunks, per-chunk bias, recomputing backward
============  =========  ========  ====================================================
"""
from dat_mm.models.layers.attention_backends import register_backend

from .deformable_chunked import check_dmha_chunked, dmha_chunked
from .neighborhood_tiled import check_na2d_tiled, na2d_tiled

register_backend('neighborhood', 'tiled', na2d_tiled, check_na2d_tiled, priority=100)
register_backend('deformable', 'chunked', dmha_chunked, check_dmha_chunked, priority=100)

__all__ = ['dmha_chunked', 'na2d_tiled', 'check_dmha_chunked', 'check_na2d_tiled']
