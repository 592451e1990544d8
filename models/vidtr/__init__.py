"""VidTr and C-VidTr, video transformers with separable attention and topK-std pooling
(Li et al., "VidTr: Video Transformer Without Convolutions", ICCV 2021), as released in
amazon-science/gluonmm.

``config.py`` (architecture, training, presets, the paper's GFLOPs), ``model.py``,
``weights.py`` (released checkpoints, ImageNet ViT-B/16 inflation), ``flops.py``
(multiply-adds per view).
"""

from .config import PAPER_GFLOPS, PRESETS, LayerGeometry, VidTrConfig, VidTrTrainConfig
from .flops import macs_per_view
from .model import VidTr, resize_patch_grid
from .weights import convert_released_state_dict, inflate_vit_state_dict, load_released_weights, load_vit_weights

__all__ = [
    "PAPER_GFLOPS",
    "PRESETS",
    "LayerGeometry",
    "VidTr",
    "VidTrConfig",
    "VidTrTrainConfig",
    "convert_released_state_dict",
    "inflate_vit_state_dict",
    "load_released_weights",
    "load_vit_weights",
    "macs_per_view",
    "resize_patch_grid",
]
