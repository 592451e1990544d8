"""GTA, global temporal attention on R2D-50 (He et al., "GTA: Global Temporal Attention for Video Action
Understanding", BMVC 2021); no code is released.

``config.py`` (architecture, training, presets, the paper's Table 1 budgets), ``model.py`` (the R2D-50 /
C2D-50 classifier), ``non_local.py`` (the embedded-Gaussian non-local baseline block), ``data.py``
(Something-Something frame folders and the engine task). The GTA block itself is
:class:`fastlocal.nn.GlobalTemporalAttention`. SlowFast variants are not part of this work. Train and evaluate
with ``python -m fastlocal.models gta train|eval|info --preset r2d50-gta --data DIR --out RUN``.
"""

from collections.abc import Sequence

import torch

from ..registry import ModelSpec
from .config import (
    BLOCKS,
    NON_LOCAL_POSITIONS,
    PAPER_BUDGETS,
    PRESETS,
    TINY_PRESETS,
    GTAConfig,
    GTATrainConfig,
)
from .data import CLI, GTATask
from .model import GTA, TemporalMaxPool, load_imagenet
from .non_local import NonLocalBlock


def published(preset: str) -> Sequence[str]:
    """The paper's Table 1 budget of ``preset`` beside this implementation's parameter count."""
    if preset not in PAPER_BUDGETS:
        return [f"paper: no published budget for {preset} (Table 1 gives r2d50, r2d50-nl and r2d50-gta at 8 x 224^2)"]
    gmacs, mparams = PAPER_BUDGETS[preset]
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        params = sum(p.numel() for p in GTA(PRESETS[preset].model).parameters())
    return [f"paper (He et al., BMVC 2021, Table 1; 8 x 224^2, 174 classes): {mparams:g} M parameters, {gmacs:g} "
            f"GFLOPs per clip, its FLOPs being multiply-adds (compare the multiply-adds above); this preset: "
            f"{params / 1e6:.2f} M parameters ({100 * (params / (mparams * 1e6) - 1):+.2f}%)"]


SPEC = ModelSpec(
    name="gta",
    summary="R2D-50 + GTA (global temporal attention), non-local and TSN baselines, Something-Something frames",
    build=GTA,
    config_class=GTAConfig,
    train_class=GTATrainConfig,
    presets={**PRESETS, **TINY_PRESETS},
    default_preset="r2d50-gta",
    example=lambda config: (torch.randn(1, 3, config.frames, config.image_size, config.image_size),),
    example_note="one clip of frames x image_size^2 (8 x 224^2 for the paper's presets)",
    cli=CLI,
    published=published,
)

__all__ = [
    "BLOCKS",
    "GTA",
    "NON_LOCAL_POSITIONS",
    "PAPER_BUDGETS",
    "PRESETS",
    "SPEC",
    "TINY_PRESETS",
    "GTAConfig",
    "GTATask",
    "GTATrainConfig",
    "NonLocalBlock",
    "TemporalMaxPool",
    "load_imagenet",
]
