"""TUT, the Temporal U-Transformer for action segmentation (Du et al., ICME 2023).

``config.py`` (architecture, training, the paper's presets), ``model.py``, ``losses.py``,
``data.py`` (MS-TCN-layout data and the engine task). Train and evaluate with
``python -m fastlocal.models tut train|eval|info --preset salads50 --data DIR --out RUN``.
"""

import torch

from ..registry import ModelSpec
from .config import PRESETS, TUTConfig, TUTTrainConfig
from .data import CLI, TUTTask
from .losses import BoundaryTargets, TUTLoss, boundary_targets, compute_loss, tut_loss
from .model import TUT, TUTOutput, convert_released_state_dict

#: frames of the sample ``info`` measures: a 50Salads video after subsampling (~6.4 min at 15 fps)
EXAMPLE_FRAMES = 5800

SPEC = ModelSpec(
    name="tut",
    summary="Temporal U-Transformer, action segmentation on frame features (MS-TCN layout)",
    build=TUT,
    config_class=TUTConfig,
    train_class=TUTTrainConfig,
    presets=PRESETS,
    default_preset="salads50",
    example=lambda config: (torch.randn(1, EXAMPLE_FRAMES, config.input_dim),),
    example_note=f"one video of {EXAMPLE_FRAMES:,} feature frames",
    cli=CLI,
)

__all__ = [
    "PRESETS",
    "SPEC",
    "TUT",
    "BoundaryTargets",
    "TUTConfig",
    "TUTLoss",
    "TUTOutput",
    "TUTTask",
    "TUTTrainConfig",
    "boundary_targets",
    "compute_loss",
    "convert_released_state_dict",
    "tut_loss",
]
