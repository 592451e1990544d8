"""Video backbones shared by the models (``fastlocal.models.backbones``), written with torchvision's
state-dict key names so torchvision-layout checkpoints load from local files, and the end-to-end
snippet encoder that trains them through ``fastlocal.selective`` (ETAD's encoder gradient sampling).
"""

from .r2plus1d import R2Plus1D, R2Plus1DConfig, load_r2plus1d, r2plus1d_18, r2plus1d_34
from .snippets import SnippetEncoder, parameter_groups, sampled_snippets

__all__ = [
    "R2Plus1D",
    "R2Plus1DConfig",
    "SnippetEncoder",
    "load_r2plus1d",
    "parameter_groups",
    "r2plus1d_18",
    "r2plus1d_34",
    "sampled_snippets",
]
