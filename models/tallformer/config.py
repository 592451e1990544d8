"""TALLFormer's configs: the temporal part of the detector (:class:`TALLFormerConfig`), its
training (:class:`TALLFormerTrainConfig`) and the presets (:data:`PRESETS`).

The defaults are the released THUMOS-14 configuration (github klauscc/TALLFormer,
``configs/trainval/thumos/1.0.0-vswin_b_256x256-12GB.py``, the vedatad code path): reduction
convolutions 1024 -> 512 (frame stride 8), the temporal consistency module (3 pre-LN layers,
16 heads, MLP x4, drop path 0.1, a relative position bias over the whole 60-token window),
the self-attention temporal down-sampling stages (band windows 7, 7, 5, 5), an FPN of 256
channels, a RetinaNet head with 5 anchors per position, sigmoid focal and DIoU losses and
max-IoU assignment at 0.6 / 0.4; the backbone (Video Swin-B, drop path 0.2, 2 frozen stages,
gradient checkpointing, 32-frame chunks on 224 x 224 crops of 256 x 256 frames) and the
long-term memory (keep ratio 0.15). ``feature_dim`` is what the backbone gives per feature step
(Swin-B 1024, Swin-T 768) and must equal the backbone's output channels when the
whole model is built. The ActivityNet (AFSD-based) head is not part of this package.

Where the paper and the code disagree, the code wins: the paper's appendix describes
k3/s2 convolutions for the temporal down-sampling, the code uses self-attention stages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ..backbones.video_swin import VideoSwinConfig
from ..configs import Preset, check_choice, check_fraction, check_positive_ints, replace
from ..engine import TrainConfig

#: frames per token after the backbone (temporal patch 2) and the two stride-2 reduction convs
FRAME_STRIDE = 8


def _check_unit_interval(obj: Any, names: tuple[str, ...], *, open_low: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > 0 if open_low else value >= 0) and value <= 1
        if not ok:
            raise ValueError(f"{type(obj).__name__}.{name} must be in {'(' if open_low else '['}0, 1], got {value!r}")


@dataclass
class TALLFormerConfig:
    """TALLFormer's temporal model, losses and inference on THUMOS-14.

    Input: ``feature_dim`` channels per backbone step (2 frames), ``window_frames`` frames
    per training / test window (480 = 32 s at 15 fps), so the temporal consistency module
    sees ``L = window_frames // 8`` tokens (:attr:`max_seq_len`).

    Model: ``dim`` the width of the reduction convolutions, the TCM and the down-sampling
    stages; TCM ``tcm_layers``, ``tcm_heads``, ``tcm_mlp_ratio``, ``tcm_drop_path``;
    down-sampling ``tdm_heads``, ``tdm_windows`` (one band window per stage, odd),
    ``tdm_dropout`` (positional encoding, attention probabilities, FFN and residuals), FFN
    width ``tdm_mlp_ratio * dim``; ``fpn_channels``; RetinaNet ``head_convs`` stacked
    convolutions of ``head_channels``; ``num_classes``.

    Anchors: level l has stride ``8 * 2**l`` frames (:attr:`strides`, one level per stage
    plus the TCM output) and ``scales_per_octave`` anchors of length
    ``stride * octave_base_scale * 2**(i / scales_per_octave)`` centred on ``t * stride``.

    Training targets and losses: max-IoU assignment, positive at IoU >= ``pos_iou``,
    negative below ``neg_iou``, each ground truth also taking its best anchors when their IoU
    is >= ``min_pos_iou`` (released: 0); sigmoid focal loss (``focal_gamma``,
    ``focal_alpha``) weighted ``cls_weight`` and DIoU loss (``diou_eps``) weighted
    ``reg_weight``, both averaged over the positives.

    Inference: windows overlapping by ``test_overlap``, the ``nms_pre`` best anchors per
    level, score threshold ``score_threshold``, non-maximum weighting at IoU ``nmw_iou``,
    at most ``max_per_video`` detections; ``merge``: ``"nmw"`` (released, ``fastlocal.nmw_1d``)
    or ``"nms"`` (per-class greedy NMS through ``fastlocal.nms_1d``, at the same IoU).

    Backbone (:attr:`backbone_config`): a Video Swin with patch (2, 4, 4), ``backbone_embed_dim``,
    ``backbone_depths``, ``backbone_heads``, ``backbone_window``, ``backbone_drop_path``,
    ``frozen_stages`` and ``gradient_checkpointing``, encoding ``chunk_frames``-frame chunks
    (``window_frames`` must be whole chunks); frames are resized to a short side of
    ``short_side`` and cropped to ``image_size`` (random crop and flip in training, centre crop
    otherwise). Long-term memory: each training step encodes ``keep_ratio`` of a window's chunks
    with gradient (``fastlocal.selective.sample_indices``: 0.15 of 15 chunks is 2) and reads the
    others from the memory; 1 encodes them all (no memory needed).
    """

    num_classes: int = 20
    feature_dim: int = 1024
    window_frames: int = 480
    dim: int = 512
    tcm_layers: int = 3
    tcm_heads: int = 16
    tcm_mlp_ratio: int = 4
    tcm_drop_path: float = 0.1
    tdm_heads: int = 8
    tdm_windows: tuple[int, ...] = (7, 7, 5, 5)
    tdm_mlp_ratio: int = 4
    tdm_dropout: float = 0.1
    fpn_channels: int = 256
    head_convs: int = 4
    head_channels: int = 256
    octave_base_scale: float = 2.0
    scales_per_octave: int = 5
    pos_iou: float = 0.6
    neg_iou: float = 0.4
    min_pos_iou: float = 0.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    cls_weight: float = 1.0
    reg_weight: float = 1.0
    diou_eps: float = 1e-6
    test_overlap: float = 0.25
    nms_pre: int = 1000
    score_threshold: float = 0.005
    nmw_iou: float = 0.5
    max_per_video: int = 1200
    merge: Literal["nmw", "nms"] = "nmw"
    backbone_embed_dim: int = 128
    backbone_depths: tuple[int, ...] = (2, 2, 18, 2)
    backbone_heads: tuple[int, ...] = (4, 8, 16, 32)
    backbone_window: tuple[int, int, int] = (8, 7, 7)
    backbone_drop_path: float = 0.2
    frozen_stages: int = 2
    gradient_checkpointing: bool = True
    chunk_frames: int = 32
    short_side: int = 256
    image_size: int = 224
    keep_ratio: float = 0.15

    def __post_init__(self) -> None:
        self.tdm_windows = tuple(self.tdm_windows)
        self.backbone_depths = tuple(self.backbone_depths)
        self.backbone_heads = tuple(self.backbone_heads)
        self.backbone_window = tuple(self.backbone_window)
        check_positive_ints(self, ("num_classes", "feature_dim", "window_frames", "dim", "tcm_layers", "tcm_heads",
                                   "tcm_mlp_ratio", "tdm_heads", "tdm_mlp_ratio", "fpn_channels", "head_channels",
                                   "scales_per_octave", "nms_pre", "max_per_video"))
        check_positive_ints(self, ("head_convs",), minimum=0)
        if self.window_frames % FRAME_STRIDE:
            raise ValueError(f"TALLFormerConfig.window_frames must be a multiple of {FRAME_STRIDE} (frames per TCM "
                             f"token), got {self.window_frames}")
        for name in ("tcm_heads", "tdm_heads"):
            if self.dim % getattr(self, name):
                raise ValueError(f"TALLFormerConfig.dim={self.dim} must be divisible by {name}={getattr(self, name)}")
        if self.dim % 2:
            raise ValueError(f"TALLFormerConfig.dim must be even (sinusoidal positional encoding), got {self.dim}")
        if not self.tdm_windows or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 or w % 2 == 0
                                       for w in self.tdm_windows):
            raise ValueError(f"TALLFormerConfig.tdm_windows must be a non-empty tuple of odd ints >= 1, "
                             f"got {self.tdm_windows!r}")
        check_fraction(self, ("tcm_drop_path", "tdm_dropout"))
        _check_unit_interval(self, ("pos_iou", "neg_iou", "min_pos_iou", "focal_alpha", "score_threshold"))
        _check_unit_interval(self, ("nmw_iou",), open_low=True)
        if self.neg_iou > self.pos_iou:
            raise ValueError(f"TALLFormerConfig.neg_iou={self.neg_iou} must be <= pos_iou={self.pos_iou}")
        if not 0.0 <= self.test_overlap < 1.0:
            raise ValueError(f"TALLFormerConfig.test_overlap must be in [0, 1), got {self.test_overlap!r}")
        for name in ("octave_base_scale", "cls_weight", "reg_weight", "diou_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"TALLFormerConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.octave_base_scale <= 0:
            raise ValueError(f"TALLFormerConfig.octave_base_scale must be > 0, got {self.octave_base_scale!r}")
        if isinstance(self.focal_gamma, bool) or not isinstance(self.focal_gamma, int | float) or self.focal_gamma < 0:
            raise ValueError(f"TALLFormerConfig.focal_gamma must be >= 0, got {self.focal_gamma!r}")
        check_choice(self, "merge", ("nmw", "nms"))
        check_positive_ints(self, ("chunk_frames", "short_side", "image_size"))
        if self.chunk_frames % 2 or self.window_frames % self.chunk_frames:
            raise ValueError(f"TALLFormerConfig.chunk_frames must be even (temporal patch 2) and divide "
                             f"window_frames={self.window_frames}, got {self.chunk_frames}")
        if self.image_size > self.short_side:
            raise ValueError(f"TALLFormerConfig.image_size={self.image_size} must be <= short_side={self.short_side}")
        _check_unit_interval(self, ("keep_ratio",), open_low=True)
        self.backbone_config  # noqa: B018  (validates the backbone fields)

    @property
    def backbone_config(self) -> VideoSwinConfig:
        """The Video Swin of the backbone (no head; patch (2, 4, 4))."""
        try:
            return VideoSwinConfig(embed_dim=self.backbone_embed_dim, depths=self.backbone_depths,
                                   num_heads=self.backbone_heads, window_size=self.backbone_window,
                                   drop_path=self.backbone_drop_path, frozen_stages=self.frozen_stages,
                                   gradient_checkpointing=self.gradient_checkpointing)
        except ValueError as exc:
            raise ValueError(f"TALLFormerConfig backbone_* fields: {exc}") from None

    @property
    def chunks_per_window(self) -> int:
        """Chunks of a training window (released: 480 / 32 = 15)."""
        return self.window_frames // self.chunk_frames

    @property
    def max_seq_len(self) -> int:
        """L: tokens of one window in the TCM (its bias table has 2L - 1 entries per head)."""
        return self.window_frames // FRAME_STRIDE

    @property
    def num_levels(self) -> int:
        """Pyramid levels: the TCM output and one per down-sampling stage."""
        return len(self.tdm_windows) + 1

    @property
    def strides(self) -> tuple[int, ...]:
        """Frames per position at each pyramid level (released: 8, 16, 32, 64, 128); also the
        anchors' base sizes."""
        return tuple(FRAME_STRIDE * 2**level for level in range(self.num_levels))

    @property
    def num_anchors(self) -> int:
        """Anchors per position."""
        return self.scales_per_octave

    def replace(self, **changes: Any) -> TALLFormerConfig:
        return replace(self, **changes)


@dataclass
class TALLFormerTrainConfig(TrainConfig):
    """TALLFormer's training as far as the shared engine expresses it: SGD (lr 0.01, momentum
    0.9, weight decay 1e-4), 4 GPUs x 4 videos, cosine decay. The released schedule restarts
    the cosine every 100 epochs (warm-up 500 iterations, 1,000 epochs), which the engine does
    not express; the backbone's lr is ``lr * backbone_lr_scale`` (released 0.4)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 16
    scheduler: Literal["constant", "plateau", "cosine", "step"] = "cosine"
    epochs: int = 100
    backbone_lr_scale: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.backbone_lr_scale
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"TALLFormerTrainConfig.backbone_lr_scale must be a finite number >= 0, got {value!r}")


def _preset(name: str, description: str, model: dict[str, Any], train: dict[str, Any]) -> Preset:
    return Preset(name, TALLFormerConfig(**model), TALLFormerTrainConfig(**train), description)


#: ``thumos-swin-b`` (the paper's TALLFormer-12), ``thumos-swin-t`` (Swin-T's 768-d features,
#: the CPU test and benchmark configuration) and ``tiny`` (unit tests only).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("thumos-swin-b", "THUMOS-14 with Video Swin-B features (1024-d), released 12 GB config, paper Table 3",
            {}, {}),
    _preset("thumos-swin-t", "THUMOS-14 with Video Swin-T features (768-d), paper Table 6; CPU tests and benchmarks",
            {"feature_dim": 768, "backbone_embed_dim": 96, "backbone_depths": (2, 2, 6, 2),
             "backbone_heads": (3, 6, 12, 24)}, {}),
    _preset("tiny", "a tiny model for unit tests (not from the paper)",
            {"num_classes": 3, "feature_dim": 16, "window_frames": 64, "dim": 16, "tcm_layers": 2, "tcm_heads": 4,
             "tcm_mlp_ratio": 2, "tdm_heads": 2, "tdm_mlp_ratio": 2, "fpn_channels": 8, "head_convs": 2,
             "head_channels": 8, "scales_per_octave": 3, "backbone_embed_dim": 8, "backbone_depths": (1, 1),
             "backbone_heads": (1, 2), "backbone_window": (4, 4, 4), "backbone_drop_path": 0.1, "frozen_stages": 0,
             "gradient_checkpointing": False, "chunk_frames": 16, "short_side": 32, "image_size": 32,
             "keep_ratio": 0.25},
            {"lr": 0.01, "batch_size": 2, "epochs": 2}),
)}
