"""GTA, global temporal attention on R2D-50 (He et al., "GTA: Global Temporal Attention for Video Action
Understanding", BMVC 2021); no code is released.

``config.py`` (architecture, training, presets, the paper's Table 1 budgets), ``model.py`` (the R2D-50 /
C2D-50 classifier), ``non_local.py`` (the embedded-Gaussian non-local baseline block). The GTA block
itself is :class:`fastlocal.nn.GlobalTemporalAttention`. SlowFast variants are not part of this work.
"""

from .config import (
    BLOCKS,
    NON_LOCAL_POSITIONS,
    PAPER_BUDGETS,
    PRESETS,
    TINY_PRESETS,
    GTAConfig,
    GTATrainConfig,
)
from .model import GTA, TemporalMaxPool, load_imagenet
from .non_local import NonLocalBlock

__all__ = [
    "BLOCKS",
    "GTA",
    "NON_LOCAL_POSITIONS",
    "PAPER_BUDGETS",
    "PRESETS",
    "TINY_PRESETS",
    "GTAConfig",
    "GTATrainConfig",
    "NonLocalBlock",
    "TemporalMaxPool",
    "load_imagenet",
]
