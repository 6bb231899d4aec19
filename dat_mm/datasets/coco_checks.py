"""Degenerate COCO polygons, dropped on load, the same way for the training / validation data and
for the evaluation ground truth.

Why: pycocotools turns a polygon into a mask with ``frPyObjects``, which fails on a polygon of
one point (``Exception: input type is not supported``), takes a first polygon of four numbers
for a box and then fails with a ``TypeError``, and with a non-finite coordinate can try to
allocate an unbounded mask. mmdet's training pipeline does not notice: ``LoadAnnotations``
silently skips polygons with fewer than 6 or an odd number of coordinates. So a file with such
an annotation trains for hours and then crashes the COCO evaluation. mmdet's ``CocoMetric``
reads its ground truth from the annotation file with its own COCO api object, not from the
dataset, so the check has to be applied to both, with the same rule.

The rule (:func:`drop_degenerate_polygons`, the one function both use): a polygon is valid when
it is a flat list of an even number >= 6 of finite numbers (at least 3 points). Invalid
polygons are removed from their annotation's ``segmentation``. An annotation whose polygons
were all invalid has no mask left, and the annotation is dropped as a whole, from training and
from the evaluation ground truth alike:

* its mask cannot be evaluated (pycocotools needs a mask for every ground truth in segm AP) and
  cannot be trained on (mmdet's own loader already turns it into an ignored instance);
* keeping its box for box AP only would give box AP and mask AP different ground truths, and
  turning it into a crowd (ignore) region would need an invented mask;
* dropping it leaves a valid COCO file that every consumer reads the same way. The price is that
  a detection of that object counts as a false positive; the warning names the annotation ids
  so the file can be fixed.

Left alone: RLE segmentations (dicts), annotations without ``segmentation`` or with an empty
list (box-only COCO files often have ``"segmentation": []``; those stay usable for detection),
and the ``area`` / ``bbox`` fields of annotations that keep at least one polygon.

Each load of an annotation file that contained degenerate polygons logs ONE warning (mmengine's
current logger) that names the file and counts the polygons dropped and the instances that lost
their whole mask. Real COCO files contain none, so they load unchanged and silently.

Importing this module registers :class:`CheckedCocoDataset` in ``mmdet.registry.DATASETS`` and
:class:`CheckedCocoMetric` in ``mmdet.registry.METRICS``; it needs mmdet, so ``import dat_mm``
does not import it. The mmdet configs import it through ``custom_imports``.
"""
import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, List, Optional

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, METRICS
from mmengine.logging import print_log

__all__ = ['is_valid_polygon', 'DegenerateReport', 'drop_degenerate_polygons', 'check_coco_api',
           'CheckedCOCO', 'CheckedCocoDataset', 'CheckedCocoMetric']

MAX_IDS_SHOWN = 10


def is_valid_polygon(polygon: Any) -> bool:
    """Whether ``polygon`` is a flat list of an even number >= 6 of finite numbers."""
    return (isinstance(polygon, (list, tuple)) and len(polygon) >= 6 and len(polygon) % 2 == 0
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                    and math.isfinite(v) for v in polygon))


@dataclass
class DegenerateReport:
    """What :func:`drop_degenerate_polygons` removed from one annotation file.

    ``polygons``: degenerate polygons removed (from kept and dropped annotations alike);
    ``annotations``: annotations that had at least one; ``dropped_ids``: ids of the annotations
    dropped because no valid polygon was left.
    """
    polygons: int = 0
    annotations: int = 0
    dropped_ids: List[Any] = field(default_factory=list)

    @property
    def instances(self) -> int:
        """Number of instances (annotations) dropped for having no valid polygon left."""
        return len(self.dropped_ids)

    def __bool__(self) -> bool:
        return self.polygons > 0

    def message(self, source: str, consumer: str) -> str:
        """The warning text: the file, the counts and what happens to the instances."""
        ids = ', '.join(str(i) for i in self.dropped_ids[:MAX_IDS_SHOWN])
        if self.instances > MAX_IDS_SHOWN:
            ids += ', ...'
        text = (f'{consumer}: {source}: dropped {self.polygons} degenerate polygon(s) from '
                f'{self.annotations} annotation(s) (a polygon needs an even number >= 6 of '
                f'finite coordinates, i.e. at least 3 points); ')
        if self.instances:
            text += (f'{self.instances} instance(s) lost their whole mask and were dropped '
                     f'(from training data and evaluation ground truth alike; annotation ids: '
                     f'{ids}).')
        else:
            text += 'no instance lost its whole mask.'
        return text


def drop_degenerate_polygons(coco: dict) -> DegenerateReport:
    """Remove degenerate polygons, in place, from a COCO annotation dict (the loaded json).

    Every ``segmentation`` that is a non-empty list of polygons is filtered with
    :func:`is_valid_polygon`; a flat list of numbers (not nested in a list of polygons) counts as
    one degenerate polygon. An annotation left with no polygon is removed from
    ``coco['annotations']``. RLE dicts, missing and empty segmentations are left as they are.
    Returns what was removed; an unchanged dict gives an empty (falsy) report.
    """
    report = DegenerateReport()
    anns = coco.get('annotations')
    if not anns:
        return report
    kept = []
    for ann in anns:
        segm = ann.get('segmentation')
        if isinstance(segm, list) and segm:
            if any(isinstance(p, (list, tuple)) for p in segm):
                valid = [p for p in segm if is_valid_polygon(p)]
                bad = len(segm) - len(valid)
            else:
                valid, bad = [], 1
            if bad:
                report.polygons += bad
                report.annotations += 1
                if not valid:
                    report.dropped_ids.append(ann.get('id'))
                    continue
                ann['segmentation'] = valid
        kept.append(ann)
    if report:
        coco['annotations'] = kept
    return report


def check_coco_api(api: COCO, source: str, consumer: str) -> DegenerateReport:
    """Apply :func:`drop_degenerate_polygons` to a loaded COCO api object and re-index it.

    ``api`` is a pycocotools / mmdet ``COCO`` built from ``source``; if anything was dropped,
    its index is rebuilt (``createIndex``, and mmdet's snake-case aliases of it) and one warning
    naming ``source`` and ``consumer`` goes to mmengine's current logger.
    """
    report = drop_degenerate_polygons(api.dataset)
    if report:
        api.createIndex()
        if hasattr(api, 'img_ann_map'):
            api.img_ann_map = api.imgToAnns
            api.cat_img_map = api.catToImgs
        print_log(report.message(source, consumer), logger='current', level=logging.WARNING)
    return report


class CheckedCOCO(COCO):
    """mmdet's COCO api, with degenerate polygons dropped right after the file is loaded.

    ``degenerate_report`` says what was dropped. Used as :class:`CheckedCocoDataset`'s
    ``COCOAPI`` (the class mmdet's CocoDataset builds its annotation index with).
    """

    def __init__(self, annotation_file: Optional[str] = None):
        super().__init__(annotation_file)
        self.degenerate_report = DegenerateReport()
        if annotation_file is not None:
            self.degenerate_report = check_coco_api(self, str(annotation_file),
                                                    'CheckedCocoDataset')


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` that drops degenerate polygons (and instances left without a
    valid polygon) on load, with one warning per annotation file; see
    :mod:`dat_mm.datasets.coco_checks` for the rule and why. Otherwise identical."""

    COCOAPI = CheckedCOCO


@METRICS.register_module()
class CheckedCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` whose ground truth from ``ann_file`` is cleaned with the same rule
    as :class:`CheckedCocoDataset` (so evaluation no longer crashes in pycocotools on a
    degenerate polygon, and scores exactly the instances the dataset kept). Without
    ``ann_file`` the ground truth comes from the dataset's instances, which a
    ``CheckedCocoDataset`` has already cleaned. Otherwise identical."""

    def __init__(self, ann_file: Optional[str] = None, *args, **kwargs) -> None:
        super().__init__(ann_file, *args, **kwargs)
        self.degenerate_report = DegenerateReport()
        if self._coco_api is not None:
            self.degenerate_report = check_coco_api(self._coco_api, str(ann_file),
                                                    'CheckedCocoMetric')
