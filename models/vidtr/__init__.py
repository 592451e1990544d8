"""VidTr and C-VidTr, video transformers with separable attention and topK-std pooling
(Li et al., "VidTr: Video Transformer Without Convolutions", ICCV 2021), as released in
amazon-science/gluonmm.

``config.py`` (architecture, training, presets, the paper's GFLOPs), ``model.py``,
``weights.py`` (released checkpoints, ImageNet ViT-B/16 inflation), ``flops.py``
(multiply-adds per view), ``data.py`` (Kinetics-style data and the engine task). Train and evaluate with
``python -m fastlocal.models vidtr train|eval|info --preset c-vidtr-s --data DIR --out RUN``.
"""

from collections.abc import Sequence

import torch

from ..registry import ModelSpec
from .config import PAPER_GFLOPS, PRESETS, TINY_PRESETS, LayerGeometry, VidTrConfig, VidTrTrainConfig
from .data import CLI, VidTrTask
from .flops import macs_per_view
from .model import VidTr, resize_patch_grid
from .weights import convert_released_state_dict, inflate_vit_state_dict, load_released_weights, load_vit_weights


def published(preset: str) -> Sequence[str]:
    """The paper's GFLOPs of ``preset`` beside the released architecture's multiply-adds, and why they differ."""
    if preset not in PAPER_GFLOPS:
        return [f"paper: no published count ({preset} is not in the paper)"]
    config = PRESETS[preset].model
    macs = macs_per_view(config) / 1e9
    size = f"{config.image_size}x{config.image_size}"
    return [f"paper (Li et al., ICCV 2021, Tables 2-3): {PAPER_GFLOPS[preset]:g} GFLOPs per {size} view; the "
            f"preset's architecture counts {macs:.2f} G multiply-adds per view ({macs / PAPER_GFLOPS[preset]:.2f}x)",
            "  why they differ: the paper's figures are close to the multiply-adds of the MLPs and the patch "
            "embedding alone (8 d^2 per patch token and layer); they leave out the q/k/v and output projections "
            "and the attention, which the count above includes"]


SPEC = ModelSpec(
    name="vidtr",
    summary="VidTr / C-VidTr video transformers (separable attention, topK-std pooling), Kinetics-style lists",
    build=VidTr,
    config_class=VidTrConfig,
    train_class=VidTrTrainConfig,
    presets={**PRESETS, **TINY_PRESETS},
    default_preset="c-vidtr-s",
    example=lambda config: (torch.randn(1, 3, config.frames, config.image_size, config.image_size),),
    example_note="one view of frames x image_size^2 (224^2 for the paper's presets)",
    cli=CLI,
    published=published,
)

__all__ = [
    "PAPER_GFLOPS",
    "PRESETS",
    "SPEC",
    "TINY_PRESETS",
    "LayerGeometry",
    "VidTr",
    "VidTrConfig",
    "VidTrTask",
    "VidTrTrainConfig",
    "convert_released_state_dict",
    "inflate_vit_state_dict",
    "load_released_weights",
    "load_vit_weights",
    "macs_per_view",
    "resize_patch_grid",
]
