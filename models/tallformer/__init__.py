"""TALLFormer (Cheng and Bertasius, ECCV 2022) on THUMOS-14, trained end to end through its
long-term memory.

``config.py`` (architecture, backbone, memory, training, presets), ``model.py`` (the whole
detector: chunked Video Swin, memory step, reduction, TCM, head), ``memory.py`` (the long-term
memory step and the offline pass), ``consistency.py`` (the temporal consistency module on
:class:`fastlocal.nn.LocalAttention`, released-weight conversion), ``head.py`` (reduction
convolutions, self-attention down-sampling stages, FPN, RetinaNet head), ``anchors.py``
(anchors, segment coder, max-IoU assignment), ``losses.py`` (focal and DIoU), ``inference.py``
(test windows, decoding, merging by non-maximum weighting), ``data.py`` (THUMOS frames, engine
task, command line). ``python -m fastlocal.models tallformer init-memory|train|eval|info``.
The ActivityNet (AFSD-based) head is not part of this package.
"""

from collections.abc import Sequence

import torch

from ..registry import ModelSpec
from .anchors import Targets, assign, decode, level_anchors, make_targets, segment_overlaps
from .config import PRESETS, TALLFormerConfig, TALLFormerTrainConfig
from .consistency import (
    TCM_PARAMETERS_L60,
    TemporalConsistencyModule,
    convert_released_tcm_state_dict,
    table_to_released,
)
from .data import CLI, TALLFormerTask, THUMOSWindows, Window, WindowDetections, collate_windows, temporal_random_crop
from .head import (
    FPN,
    ReductionConvs,
    RetinaHead,
    SelfAttnTDM,
    THUMOSHead,
    convert_released_head_state_dict,
    convert_sync_batchnorm,
)
from .inference import NMW, inference_windows, merge_detections, nms_hook, nmw_hook, window_detections
from .losses import TALLFormerLoss, detection_loss, diou_loss, sigmoid_focal_loss
from .memory import encode_video, memory_rows, memory_step
from .model import TALLFormer

#: the paper's THUMOS-14 results (Cheng and Bertasius, ECCV 2022) of each preset's setting
PAPER_RESULTS = {
    "thumos-swin-b": "Table 3 (TALLFormer-12): 59.0 average mAP on THUMOS-14 test (76.1 / 63.1 / 34.2 at tIoU 0.3 / "
                     "0.5 / 0.7), keep ratio 0.15, 12 GB; Table 5a: 59.2 at keep ratio 0.4 (29 GB), out of memory "
                     "at 1.0",
    "thumos-swin-t": "Table 6: 57.0 average mAP on THUMOS-14 test with a Swin-T encoder (72.7 / 69.0 / 60.8 / 48.3 / "
                     "34.3 at tIoU 0.3..0.7); Table 5b: 52.6 at 112 x 112",
}


def published(preset: str) -> Sequence[str]:
    """The paper's result for ``preset``'s setting (``info`` prints it after the measurement)."""
    if preset not in PAPER_RESULTS:
        return [f"paper: no published result ({preset} is not in the paper)"]
    return [f"paper (Cheng and Bertasius, ECCV 2022) {PAPER_RESULTS[preset]}"]


def example(config: TALLFormerConfig) -> tuple[torch.Tensor]:
    """One test window: frames ``[1, 3, window_frames, image_size, image_size]``."""
    return (torch.randn(1, 3, config.window_frames, config.image_size, config.image_size),)


SPEC = ModelSpec(
    name="tallformer",
    summary="TALLFormer: Video Swin trained end to end through a long-term memory, TCM, THUMOS-14 head",
    build=TALLFormer,
    config_class=TALLFormerConfig,
    train_class=TALLFormerTrainConfig,
    presets=PRESETS,
    default_preset="thumos-swin-b",
    example=example,
    example_note="one test window of window_frames frames, every chunk encoded",
    cli=CLI,
    published=published,
    extra_commands=CLI.commands,
)

__all__ = [
    "CLI",
    "FPN",
    "NMW",
    "PAPER_RESULTS",
    "PRESETS",
    "SPEC",
    "TCM_PARAMETERS_L60",
    "ReductionConvs",
    "RetinaHead",
    "SelfAttnTDM",
    "TALLFormer",
    "TALLFormerConfig",
    "TALLFormerLoss",
    "TALLFormerTask",
    "TALLFormerTrainConfig",
    "THUMOSHead",
    "THUMOSWindows",
    "Targets",
    "TemporalConsistencyModule",
    "Window",
    "WindowDetections",
    "assign",
    "collate_windows",
    "convert_released_head_state_dict",
    "convert_released_tcm_state_dict",
    "convert_sync_batchnorm",
    "decode",
    "detection_loss",
    "diou_loss",
    "encode_video",
    "inference_windows",
    "level_anchors",
    "make_targets",
    "memory_rows",
    "memory_step",
    "merge_detections",
    "nms_hook",
    "nmw_hook",
    "segment_overlaps",
    "sigmoid_focal_loss",
    "table_to_released",
    "temporal_random_crop",
    "window_detections",
]
