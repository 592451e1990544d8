"""GTA's configs: the architecture (:class:`GTAConfig`), the training (:class:`GTATrainConfig`), the
presets (:data:`PRESETS`, :data:`TINY_PRESETS`) and the paper's Table 1 budgets (:data:`PAPER_BUDGETS`).

GTA (He et al., "GTA: Global Temporal Attention for Video Action Understanding", BMVC 2021) on a
2-D ResNet-50 run over the frames of a clip (R2D-50, TSN: the frame scores' average is the clip's),
with five blocks after residual blocks 1, 3 of res3 and 1, 3, 5 of res4 (the non-local placement,
torchvision's ``layer2.1, layer2.3, layer3.1, layer3.3, layer3.5``). No code is released; the
block's unspecified choices are :class:`fastlocal.nn.GlobalTemporalAttention`'s arguments, here
fields. SlowFast variants (the paper's 3-D backbone, Table 1's 41.4 M models, SlowFast-R101 on
Kinetics) are not part of this work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastlocal.data.something import SomethingSpec
from fastlocal.nn.global_temporal_attention import NORMS, REGION_NORMALIZE, REGION_TRANSFORMS

from ..backbones.resnet import STAGES, ResNet2DConfig
from ..configs import Preset, check_choice, check_fraction, check_positive_ints, replace
from ..engine import TrainConfig

__all__ = [
    "BLOCKS",
    "NON_LOCAL_POSITIONS",
    "PAPER_BUDGETS",
    "PRESETS",
    "TINY_PRESETS",
    "GTAConfig",
    "GTATrainConfig",
]

BLOCKS = ("gta", "nonlocal", "none")
#: after blocks 1, 3 of res3 and 1, 3, 5 of res4 (Wang et al.; PySlowFast ``LOCATION [[], [1, 3], [1, 3, 5], []]``)
NON_LOCAL_POSITIONS = ("layer2.1", "layer2.3", "layer3.1", "layer3.3", "layer3.5")


def _halve(size: int) -> int:
    """Output size of a stride-2 convolution or pooling that pads to keep ceil(size / 2) (every one in a ResNet)."""
    return (size - 1) // 2 + 1


@dataclass
class GTAConfig:
    """R2D-50 (or C2D-50) with temporal blocks.

    Input clips ``[B, 3, frames, image_size, image_size]`` (other sizes work unless
    ``region_transform`` is "static"); ``num_classes`` logits. Backbone: bottleneck ResNet with
    ``layers`` blocks per stage and base ``width`` (ResNet-50: (3, 4, 6, 3), 64), torchvision's layout.
    ``time_pool``: frames max-pooled by this factor after res2 (``layer1``), 1 for R2D (TSN) and 2 for
    PySlowFast's C2D. ``block``: "gta", "nonlocal" (the embedded-Gaussian baseline) or "none", inserted
    after each of ``positions`` (``"layerS.i"``, zero-based, torchvision's stage names).
    ``reduction``: inner width C / reduction (None: 4 for GTA, 2 for non-local, the budget-matching
    widths). GTA's ``groups``, ``regions``, ``spatial_heads``, ``spatial_pool`` (also the non-local
    block's), ``region_transform``, ``region_normalize``, ``norm``: see
    :class:`fastlocal.nn.GlobalTemporalAttention`. ``dropout`` before the classifier (TSN's 0.5).
    """

    num_classes: int = 174
    frames: int = 8
    image_size: int = 224
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64
    time_pool: int = 1
    block: Literal["gta", "nonlocal", "none"] = "gta"
    positions: tuple[str, ...] = NON_LOCAL_POSITIONS
    reduction: int | None = None
    groups: int = 8
    regions: int = 8
    spatial_heads: int = 1
    spatial_pool: int = 2
    region_transform: Literal["input", "static"] = "input"
    region_normalize: Literal["pixels", "regions"] = "pixels"
    norm: Literal["none", "batch"] = "none"
    dropout: float = 0.5

    def __post_init__(self) -> None:
        check_positive_ints(self, ("num_classes", "frames", "image_size", "width", "time_pool", "groups", "regions",
                                   "spatial_heads", "spatial_pool"))
        if self.reduction is not None:
            check_positive_ints(self, ("reduction",))
        check_choice(self, "block", BLOCKS)
        check_choice(self, "region_transform", REGION_TRANSFORMS)
        check_choice(self, "region_normalize", REGION_NORMALIZE)
        check_choice(self, "norm", NORMS)
        check_fraction(self, ("dropout",))
        self.layers = tuple(self.layers) if isinstance(self.layers, list) else self.layers
        try:
            backbone = self.backbone
        except ValueError as exc:
            raise ValueError(f"GTAConfig.layers / width: {exc}") from None
        if isinstance(self.positions, str) or not all(isinstance(p, str) for p in self.positions):
            raise ValueError(f"GTAConfig.positions must be a tuple of 'layerS.i' strings, got {self.positions!r}")
        self.positions = tuple(self.positions)
        valid = backbone.insertion_points()
        bad = [p for p in self.positions if p not in valid]
        if bad or len(set(self.positions)) != len(self.positions):
            raise ValueError(f"GTAConfig.positions {self.positions}: {bad or 'duplicates'} are not distinct "
                             f"insertion points of layers {self.layers} (e.g. 'layer2.1'; block indices from 0)")
        if self.frames % self.time_pool:
            raise ValueError(f"GTAConfig.frames={self.frames} must be a multiple of time_pool={self.time_pool}")
        if self.block == "gta":
            for p in self.positions:
                inner = self.stage_channels(p) // self.inner_reduction
                if inner < 1 or inner % self.groups or inner % self.spatial_heads:
                    raise ValueError(f"GTAConfig: at {p} the inner width {self.stage_channels(p)} // "
                                     f"{self.inner_reduction} = {inner} must be >= 1 and divisible by groups="
                                     f"{self.groups} and spatial_heads={self.spatial_heads}")

    @property
    def backbone(self) -> ResNet2DConfig:
        return ResNet2DConfig(layers=self.layers, width=self.width)

    @property
    def inner_reduction(self) -> int:
        """The block's C / inner-width ratio: ``reduction``, or 4 (GTA) / 2 (non-local) when None."""
        if self.reduction is not None:
            return self.reduction
        return 4 if self.block == "gta" else 2

    def stage_channels(self, position: str) -> int:
        """Channels of the feature map at ``position`` ("layerS.i")."""
        return self.backbone.stage_channels(position.split(".")[0])

    def stage_frames(self, position: str) -> int:
        """T at ``position``: ``frames``, or ``frames // time_pool`` after res2."""
        return self.frames if position.startswith("layer1.") else self.frames // self.time_pool

    def stage_size(self, position: str) -> tuple[int, int]:
        """(H, W) of the feature map at ``position`` for ``image_size`` squared inputs (56 at res2 for 224)."""
        size = _halve(_halve(self.image_size))  # conv1 and maxpool
        for _ in range(STAGES.index(position.split(".")[0])):
            size = _halve(size)
        return size, size

    def replace(self, **changes: Any) -> GTAConfig:
        return replace(self, **changes)


@dataclass
class GTATrainConfig(TrainConfig):
    """Training defaults for the 2-D models on Something-Something, TSM's recipe for an ImageNet-initialised
    R2D-50 (the GTA paper defers its schedule to a supplement that is not available): SGD with momentum
    0.9, lr 0.01 for a batch of 64 clips, weight decay 5e-4, 50 epochs, lr x 0.1 at epochs 20 and 40,
    gradient norm clipped at 20.

    Data (:meth:`something_spec`, a :class:`fastlocal.data.something.SomethingSpec` whose segment count is
    the model's ``frames`` and whose crop its ``image_size``): frames resized to ``frame_size`` (height, width;
    None: as decoded), TSN's multi-scale crop over ``scales`` with ``max_distort``, the horizontal flip rule
    ``flip`` (the paper's "no-left-right"); test views: short side ``test_short_side`` (None: unchanged),
    ``test_clips`` clips x ``test_crops`` (1 centre or 3) crops, the paper's 1 x 1 by default.
    """

    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 50
    batch_size: int = 64
    scheduler: Literal["constant", "plateau", "cosine", "step"] = "step"
    milestones: tuple[int, ...] = (20, 40)
    gamma: float = 0.1
    clip_grad_norm: float | None = 20.0
    frame_size: tuple[int, int] | None = (240, 320)
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    flip: str = "no-left-right"
    test_short_side: int | None = None
    test_clips: int = 1
    test_crops: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frame_size is not None:
            self.frame_size = tuple(self.frame_size)
        self.scales = tuple(self.scales)
        try:  # SomethingSpec's checks, with the smallest crop these fields allow
            self.something_spec(1, 1)
        except ValueError as exc:
            raise ValueError(f"GTATrainConfig: {exc}") from None

    def something_spec(self, frames: int, crop_size: int) -> SomethingSpec:
        """The data pipeline's settings: ``frames`` TSN segments (the model's ``frames``) and square crops
        of ``crop_size`` (its ``image_size``)."""
        return SomethingSpec(num_segments=frames, frame_size=self.frame_size, crop_size=crop_size, scales=self.scales,
                             max_distort=self.max_distort, flip=self.flip, test_short_side=self.test_short_side,
                             test_clips=self.test_clips, test_crops=self.test_crops)


def _preset(name: str, description: str, model: dict[str, Any], train: dict[str, Any] | None = None) -> Preset:
    return Preset(name, GTAConfig(**model), GTATrainConfig(**(train or {})), description)


_SS = "8 frames, 224^2, 174 classes (Something-Something v1)"

PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("r2d50-gta", f"R2D-50 + GTA (paper Table 1: 31.2 M parameters, 50.2 GFLOPs), {_SS}", {}),
    _preset("r2d50", f"R2D-50 / TSN baseline (paper Table 1: 23.9 M, 32.7 GFLOPs), {_SS}", {"block": "none"}),
    _preset("r2d50-nl", f"R2D-50 + 5 non-local blocks (paper Table 1: 31.2 M, 61.1 GFLOPs), {_SS}",
            {"block": "nonlocal"}),
    _preset("r2d50-gta-16f", "R2D-50 + GTA on 16 frames (paper Table 6), 224^2, 174 classes; its temporal matrices "
            "are 16 x 16, so it is a different model from the 8-frame one", {"frames": 16}),
    # The paper's 62 GFLOPs per view (Table 5, 256^2) is closer to this model without the time pooling
    # (65.8 G at 8 x 256^2; 36.9 G with it); likewise C2D + NL: 77 G published, 84.6 G / 41.3 G.
    _preset("c2d50-gta", "C2D-R50 + GTA for Kinetics-400 (paper Table 5): 8 frames, time max-pooled x2 after res2 "
            "(PySlowFast's C2D), so the blocks see 4 frames; 400 classes", {"num_classes": 400, "time_pool": 2}),
)}

#: Not from the paper: a GTA model small enough to train on a CPU (tests, the synthetic frame folders):
#: a bottleneck ResNet with one block per stage and base width 8, 4 frames of 32^2, blocks after res3
#: and res4 with 4 groups, 4 regions and no key pooling, no dropout; AdamW; frames resized to 36 x 48.
TINY_PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("gta-tiny", "GTA-tiny (not in the paper): a 1-1-1-1 bottleneck ResNet of base width 8 with GTA after "
            "res3 and res4, 4 frames of 32x32, 10 classes; for CPU tests",
            {"num_classes": 10, "frames": 4, "image_size": 32, "layers": (1, 1, 1, 1), "width": 8,
             "positions": ("layer2.0", "layer3.0"), "groups": 4, "regions": 4, "spatial_pool": 1, "dropout": 0.0},
            {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "scheduler": "cosine", "milestones": (),
             "epochs": 20, "batch_size": 8, "clip_grad_norm": None, "frame_size": (36, 48)}),
)}

#: Table 1 of the paper (8 frames, 224^2, SSv1 heads): GFLOPs (multiply-adds) and parameters in millions.
PAPER_BUDGETS: dict[str, tuple[float, float]] = {"r2d50": (32.7, 23.9), "r2d50-nl": (61.1, 31.2),
                                                 "r2d50-gta": (50.2, 31.2)}
