"""TALLFormer (Cheng and Bertasius, ECCV 2022) on THUMOS-14: the temporal part of the detector.

``config.py`` (architecture, training, presets), ``consistency.py`` (the temporal consistency
module on :class:`fastlocal.nn.LocalAttention`, released-weight conversion), ``head.py``
(reduction convolutions, self-attention down-sampling stages, FPN, RetinaNet head),
``anchors.py`` (anchors, segment coder, max-IoU assignment), ``losses.py`` (focal and DIoU),
``inference.py`` (test windows, decoding, merging by non-maximum weighting). The ActivityNet
(AFSD-based) head is not part of this package.
"""

from .anchors import Targets, assign, decode, level_anchors, make_targets, segment_overlaps
from .config import PRESETS, TALLFormerConfig, TALLFormerTrainConfig
from .consistency import (
    TCM_PARAMETERS_L60,
    TemporalConsistencyModule,
    convert_released_tcm_state_dict,
    table_to_released,
)
from .head import (
    FPN,
    ReductionConvs,
    RetinaHead,
    SelfAttnTDM,
    THUMOSHead,
    convert_released_head_state_dict,
    convert_sync_batchnorm,
)
from .inference import NMW, inference_windows, merge_detections, nmw_hook, window_detections
from .losses import TALLFormerLoss, detection_loss, diou_loss, sigmoid_focal_loss

__all__ = [
    "FPN",
    "NMW",
    "PRESETS",
    "TCM_PARAMETERS_L60",
    "ReductionConvs",
    "RetinaHead",
    "SelfAttnTDM",
    "TALLFormerConfig",
    "TALLFormerLoss",
    "TALLFormerTrainConfig",
    "THUMOSHead",
    "Targets",
    "TemporalConsistencyModule",
    "assign",
    "convert_released_head_state_dict",
    "convert_released_tcm_state_dict",
    "convert_sync_batchnorm",
    "decode",
    "detection_loss",
    "diou_loss",
    "inference_windows",
    "level_anchors",
    "make_targets",
    "merge_detections",
    "nmw_hook",
    "segment_overlaps",
    "sigmoid_focal_loss",
    "table_to_released",
    "window_detections",
]
