"""Evaluation metrics for temporal video models (docs/design.md, "Metrics").

- :mod:`fastlocal.metrics.segmentation`: action segmentation as MS-TCN's ``eval.py``
  (segmental F1@tau, edit score, frame accuracy).
- :mod:`fastlocal.metrics.classification`: video classification, top-k accuracy per clip and
  per video (softmax averaged over views, as VidTr's released evaluation), confusion matrix.
- :mod:`fastlocal.metrics.detection`: temporal action detection mAP and proposal AR@AN, as
  ActivityNet's ``eval_detection.py`` and ``eval_proposal.py``.
"""

from .classification import (
    ClassificationMetrics,
    average_views,
    confusion_matrix,
    topk_accuracy,
    topk_correct,
)
from .detection import (
    ACTIVITYNET_TIOU_THRESHOLDS,
    THUMOS_TIOU_THRESHOLDS,
    DetectionMAP,
    ProposalRecall,
    average_recall,
    detection_map,
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
    "ACTIVITYNET_TIOU_THRESHOLDS",
    "OVERLAPS",
    "THUMOS_TIOU_THRESHOLDS",
    "ClassificationMetrics",
    "DetectionMAP",
    "ProposalRecall",
    "SegmentationMetrics",
    "average_recall",
    "average_views",
    "confusion_matrix",
    "detection_map",
    "edit_score",
    "f_score_counts",
    "levenshtein",
    "segmentation_scores",
    "segments",
    "topk_accuracy",
    "topk_correct",
]
