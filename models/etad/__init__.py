"""ETAD, the efficient temporal action detector (Liu et al., CVPR-W 2023), as released
(github sming256/ETAD).

``config.py`` (detector, training, presets), ``model.py`` (the detector), ``proposals.py``
(candidates, detector proposal sampling, matching, regression targets), ``losses.py``
(targets and losses), ``postprocess.py`` (boundary masks, soft-NMS, class assignment),
``data.py`` (feature-mode engine task and command line), ``windows.py`` (THUMOS: windows of
128 snippets with stride 64, merged across windows at evaluation), ``e2e.py`` (end-to-end task:
frame folders, snippet encoder with encoder gradient sampling, two learning rates). Train and
evaluate with ``python -m fastlocal.models etad train|eval|info --preset anet-tsp --data DIR --out RUN``
(``--mode e2e --frames DIR`` end to end; ``--preset thumos-tsn`` / ``thumos-i3d`` on windows).
"""

from collections.abc import Sequence

import torch

from ..registry import ModelSpec
from .config import LOSS_WEIGHTS, PRESETS, ETADConfig, ETADTrainConfig
from .data import CLI, ETADTask, VideoPrediction, tiou_thresholds
from .e2e import ETADEndToEnd, ETADEndToEndTask, SnippetDataset, released_e2e_train_config
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
from .windows import ETADWindowTask, WindowDataset, merge_windows, window_starts

#: the paper's results (Liu et al., CVPR-W 2023) of each preset's setting
PAPER_RESULTS = {
    "anet-tsp": "Table 1: 37.78 average mAP on ActivityNet-1.3 validation (TSP features)",
    "anet-tsn": "Table 1: 36.06 average mAP on ActivityNet-1.3 validation (TSN features)",
    "anet-tsm": "Table 3: 35.98 average mAP on ActivityNet-1.3 validation (pre-extracted TSM-R50 features)",
    "thumos-tsn": "Table 2: 68.26 mAP@0.3 on THUMOS-14 test (TSN features)",
    "thumos-i3d": "Table 2: 70.29 mAP@0.3 on THUMOS-14 test (I3D features)",
}


def published(preset: str) -> Sequence[str]:
    """The paper's result for ``preset``'s setting (``info`` prints it after the measurement)."""
    if preset not in PAPER_RESULTS:
        return [f"paper: no published result ({preset} is not in the paper)"]
    return [f"paper (Liu et al., CVPR-W 2023) {PAPER_RESULTS[preset]}; the paper gives no parameter or "
            "multiply-add count"]


def example(config: ETADConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One video at inference: features ``[1, C, T]`` and every candidate proposal ``[1, K, 2]``."""
    anchors = candidate_anchors(config.tscale, config.max_duration)[None]
    return torch.randn(1, config.in_channels, config.tscale), anchors


SPEC = ModelSpec(
    name="etad",
    summary="ETAD temporal action detector on snippet features (ActivityNet layout), soft-NMS post-processing",
    build=ETAD,
    config_class=ETADConfig,
    train_class=ETADTrainConfig,
    presets=PRESETS,
    default_preset="anet-tsp",
    example=example,
    example_note="one video: tscale feature steps and all T(T+1)/2 candidate proposals",
    cli=CLI,
    published=published,
)

__all__ = [
    "CLI",
    "ETAD",
    "LOSS_WEIGHTS",
    "PAPER_RESULTS",
    "PRESETS",
    "SPEC",
    "ETADConfig",
    "ETADEndToEnd",
    "ETADEndToEndTask",
    "ETADOutput",
    "ETADTargets",
    "ETADTask",
    "ETADTrainConfig",
    "ETADWindowTask",
    "SnippetDataset",
    "VideoPrediction",
    "WindowDataset",
    "average_stages",
    "boundary_mask",
    "boundary_targets",
    "candidate_anchors",
    "detections",
    "etad_loss",
    "grid_index",
    "make_targets",
    "match_ground_truth",
    "merge_windows",
    "num_candidates",
    "pool_proposals",
    "postprocess_video",
    "read_classifier_scores",
    "reg_to_anchors",
    "regression_targets",
    "released_e2e_train_config",
    "sample_proposals",
    "select_proposals",
    "soft_nms_proposals",
    "stage_loss",
    "tiou_thresholds",
    "top_classes",
    "window_starts",
]
