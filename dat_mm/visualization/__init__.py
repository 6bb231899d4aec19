"""See where DAT's deformable attention looks.

* :func:`capture_deformable`: a context manager recording, for chosen deformable blocks, the
  reference points, the deformed sampling positions per offset group and the attention weights
  (:class:`DeformableRecord`) through each block's public ``tap``; nothing is hooked and
  nothing costs when it is not used.
* :mod:`dat_mm.visualization.draw`: draws the records over an image (Pillow);
  ``tools/visualize_deformable.py`` is the command-line tool over both.

Importing this package needs only torch and mmengine (drawing imports Pillow when called).
"""
from .capture import (DeformableCapture, DeformableRecord, capture_deformable,
                      deformable_blocks, find_backbone, select_blocks, to_image_pixels,
                      to_map_pixels)

__all__ = [
    'DeformableCapture', 'DeformableRecord', 'capture_deformable', 'deformable_blocks',
    'find_backbone', 'select_blocks', 'to_image_pixels', 'to_map_pixels'
]
