"""Video backbones shared by the models (``fastlocal.models.backbones``), written with torchvision's
state-dict key names so torchvision-layout checkpoints load from local files, and the end-to-end
snippet encoder that trains them through ``fastlocal.selective`` (ETAD's encoder gradient sampling).
"""

from .chunks import ChunkEncoder
from .r2plus1d import R2Plus1D, R2Plus1DConfig, load_r2plus1d, r2plus1d_18, r2plus1d_34
from .resnet import ResNet2D, ResNet2DConfig, load_resnet
from .snippets import SnippetEncoder, parameter_groups, sampled_snippets
from .video_swin import (
    DropPath,
    VideoSwin,
    VideoSwinConfig,
    load_video_swin,
    mmaction_to_torchvision,
    shifted_window_attention_mask,
    swin3d_b,
    swin3d_s,
    swin3d_t,
)

__all__ = [
    "ChunkEncoder",
    "DropPath",
    "R2Plus1D",
    "R2Plus1DConfig",
    "ResNet2D",
    "ResNet2DConfig",
    "SnippetEncoder",
    "VideoSwin",
    "VideoSwinConfig",
    "load_r2plus1d",
    "load_resnet",
    "load_video_swin",
    "mmaction_to_torchvision",
    "parameter_groups",
    "r2plus1d_18",
    "r2plus1d_34",
    "sampled_snippets",
    "shifted_window_attention_mask",
    "swin3d_b",
    "swin3d_s",
    "swin3d_t",
]
