"""Evaluation metrics for temporal video models (docs/design.md, "Metrics").

- :mod:`fastlocal.metrics.segmentation`: action segmentation as MS-TCN's ``eval.py``
  (segmental F1@tau, edit score, frame accuracy).
- :mod:`fastlocal.metrics.classification`: video classification, top-k accuracy per clip and
  per video (softmax averaged over views, as VidTr's released evaluation), confusion matrix.
"""

from .classification import (
    ClassificationMetrics,
    average_views,
    confusion_matrix,
    topk_accuracy,
    topk_correct,
)
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
    "ClassificationMetrics",
    "SegmentationMetrics",
    "average_views",
    "confusion_matrix",
    "edit_score",
    "f_score_counts",
    "levenshtein",
    "segmentation_scores",
    "segments",
    "topk_accuracy",
    "topk_correct",
]
