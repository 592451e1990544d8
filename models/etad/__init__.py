"""ETAD, the efficient temporal action detector (Liu et al., CVPR-W 2023), as released
(github sming256/ETAD).

``config.py`` (detector, training, presets), ``model.py`` (the detector), ``proposals.py``
(candidates, detector proposal sampling, matching, regression targets), ``losses.py``
(targets and losses), ``postprocess.py`` (boundary masks, soft-NMS, class assignment).
"""

from .config import LOSS_WEIGHTS, PRESETS, ETADConfig, ETADTrainConfig
from .losses import ETADTargets, boundary_targets, etad_loss, make_targets, stage_loss
from .model import ETAD, ETADOutput, average_stages, pool_proposals, reg_to_anchors
from .postprocess import (
    boundary_mask,
    detections,
    postprocess_video,
    read_classifier_scores,
    select_proposals,
    soft_nms_proposals,
    top_classes,
)
from .proposals import (
    candidate_anchors,
    grid_index,
    match_ground_truth,
    num_candidates,
    regression_targets,
    sample_proposals,
)

__all__ = [
    "ETAD",
    "LOSS_WEIGHTS",
    "PRESETS",
    "ETADConfig",
    "ETADOutput",
    "ETADTargets",
    "ETADTrainConfig",
    "average_stages",
    "boundary_mask",
    "boundary_targets",
    "candidate_anchors",
    "detections",
    "etad_loss",
    "grid_index",
    "make_targets",
    "match_ground_truth",
    "num_candidates",
    "pool_proposals",
    "postprocess_video",
    "read_classifier_scores",
    "reg_to_anchors",
    "regression_targets",
    "sample_proposals",
    "select_proposals",
    "soft_nms_proposals",
    "stage_loss",
    "top_classes",
]
