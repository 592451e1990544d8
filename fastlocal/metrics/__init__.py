"""Evaluation metrics for temporal video models (docs/design.md, "Metrics").

- :mod:`fastlocal.metrics.segmentation`: action segmentation as MS-TCN's ``eval.py``
  (segmental F1@tau, edit score, frame accuracy).
"""

from .segmentation import (
    OVERLAPS,
    SegmentationMetrics,
    edit_score,
    f_score_counts,
    levenshtein,
    segmentation_scores,
    segments,
)

__all__ = [
    "OVERLAPS",
    "SegmentationMetrics",
    "edit_score",
    "f_score_counts",
    "levenshtein",
    "segmentation_scores",
    "segments",
]
