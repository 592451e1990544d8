"""TUT, the Temporal U-Transformer for action segmentation: model, losses and training CLI.

``python -m fastlocal.models.tut train|eval --data DIR --preset salads50 --split 1 --out RUN_DIR``
"""

from .losses import BoundaryTargets, TUTLoss, boundary_targets, compute_loss, tut_loss
from .model import TUT, TUTConfig, TUTOutput, convert_released_state_dict

__all__ = [
    "TUT",
    "BoundaryTargets",
    "TUTConfig",
    "TUTLoss",
    "TUTOutput",
    "boundary_targets",
    "compute_loss",
    "convert_released_state_dict",
    "tut_loss",
]
