"""ETAD's configs: the detector (:class:`ETADConfig`), its feature-mode training
(:class:`ETADTrainConfig`) and the presets (:data:`PRESETS`).

The defaults are the released code (github sming256/ETAD, ``configs/anet/feature_anet_tsp.py``,
``lib/models/detector/*``, ``lib/loss/model_loss.py``). Where the paper and the code disagree:

``loss_weights``  "released" (default): TEM x1, IoU classification x1, IoU regression **x5**,
                  boundary regression x10, proposal boundary classification **x0.5**
                  (``0.5 * (BCE_s + BCE_e)``); "paper" (Eq. 1 and Sec. 4.2:
                  lambda_a = lambda_b = lambda_c = 1, lambda_d = 10): IoU regression x1 and
                  boundary classification x1. See :data:`LOSS_WEIGHTS`.
``nms_drop_last`` False (default): soft-NMS emits up to ``max_proposals`` proposals. True
                  reproduces the released loop (``while len(scores) > 1``), which never emits
                  the last remaining proposal.

Inference follows the code (stage-averaged anchors and IoU scores, score =
iou_cls * iou_reg), not the paper's last-stage boundaries scored by p_s * p_e * p_iou.

The released repository has ActivityNet configs only. The THUMOS presets take what the
paper says (Sec. 4.2: sliding windows of 128 snippets with stride 64, cut by
:mod:`fastlocal.models.etad.windows` after G-TAD's THUMOS loader, lr 1e-3, batch 16, AdamW,
6 epochs) and G-TAD's 2048-d TSN features / MR's 2048-d I3D features, which the paper uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ..configs import Preset, check_choice, check_positive_ints, replace
from ..engine import TrainConfig

SAMPLING_STRATEGIES = ("random", "grid", "block")

#: loss term -> weight, for each ``ETADConfig.loss_weights`` choice (see the module docstring)
LOSS_WEIGHTS: dict[str, dict[str, float]] = {
    "released": {"tem": 1.0, "iou_cls": 1.0, "iou_reg": 5.0, "boundary_reg": 10.0, "boundary_cls": 0.5},
    "paper": {"tem": 1.0, "iou_cls": 1.0, "iou_reg": 1.0, "boundary_reg": 10.0, "boundary_cls": 1.0},
}


def _check_unit(obj: Any, name: str, *, low_open: bool, high_open: bool) -> None:
    """``ValueError`` unless ``obj.<name>`` is a finite number in (0, 1) with the given open ends."""
    value = getattr(obj, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        raise ValueError(f"{type(obj).__name__}.{name} must be in {'(' if low_open else '['}0, 1"
                         f"{')' if high_open else ']'}, got {value!r}")


@dataclass
class ETADConfig:
    """ETAD's detector, proposal sampling, losses and post-processing.

    Architecture: ``in_channels`` C of the snippet features; ``tscale`` T, the number of
    snippets a video (ActivityNet) or window (THUMOS) is resized to; ``max_duration`` the
    longest candidate proposal in snippets (None = T: all T(T+1)/2 candidates);
    ``hidden_dim`` (256) the width of the aggregation, TEM and stage convolutions, the PEM
    reducing it to ``hidden_dim // 2``; ``mid_dim`` (512) and ``fc_dim`` (128) the PEM's
    fully connected widths; ``roi_size`` (24) RoI-align bins per extended proposal, a
    quarter of them on each side feeding the start / end regressors; ``extend_ratio``
    (0.5) how much of its length a proposal is extended by on each side before pooling;
    ``stages`` the cascade's boundary-regression IoU thresholds (one stage each);
    ``conv_groups`` (4) and ``norm_groups`` (16) of the grouped convolutions and GroupNorms.

    Proposal sampling in training: ``proposal_ratio`` (0.06) of the candidates by
    ``proposal_sampling`` ("random", "grid" or "block").

    Losses: ``iou_positive`` (0.9) the IoU above which a proposal is a positive of the IoU
    classification (all stages); ``iou_high`` / ``iou_low`` (0.7 / 0.3) the sets of the IoU
    regression; ``loss_weights`` "released" or "paper" (:data:`LOSS_WEIGHTS`).

    Post-processing: Gaussian soft-NMS with ``nms_sigma`` (0.35) keeping ``max_proposals``
    (100), ``nms_drop_last`` (released quirk, module docstring), each proposal paired with
    the ``class_topk`` (2) best classes of a video-level classifier.
    """

    in_channels: int = 512
    tscale: int = 128
    max_duration: int | None = None
    hidden_dim: int = 256
    mid_dim: int = 512
    fc_dim: int = 128
    roi_size: int = 24
    extend_ratio: float = 0.5
    stages: tuple[float, ...] = (0.7, 0.8, 0.9)
    conv_groups: int = 4
    norm_groups: int = 16
    proposal_ratio: float = 0.06
    proposal_sampling: Literal["random", "grid", "block"] = "random"
    iou_positive: float = 0.9
    iou_high: float = 0.7
    iou_low: float = 0.3
    loss_weights: Literal["released", "paper"] = "released"
    nms_sigma: float = 0.35
    max_proposals: int = 100
    nms_drop_last: bool = False
    class_topk: int = 2

    def __post_init__(self) -> None:
        check_positive_ints(self, ("in_channels", "tscale", "hidden_dim", "mid_dim", "fc_dim", "roi_size",
                                   "conv_groups", "norm_groups", "max_proposals", "class_topk"))
        if self.max_duration is not None:
            check_positive_ints(self, ("max_duration",))
            if self.max_duration > self.tscale:
                raise ValueError(f"ETADConfig.max_duration must be <= tscale={self.tscale}, got {self.max_duration}")
        if self.in_channels % self.conv_groups:
            raise ValueError(f"ETADConfig.in_channels={self.in_channels} must be divisible by "
                             f"conv_groups={self.conv_groups}")
        # the PEM works on hidden_dim // 2 channels, grouped and group-normalised like the rest
        unit = 2 * math.lcm(self.conv_groups, self.norm_groups)
        if self.hidden_dim % unit:
            raise ValueError(f"ETADConfig.hidden_dim={self.hidden_dim} must be divisible by {unit} "
                             f"(2 x lcm(conv_groups, norm_groups))")
        if self.roi_size % 4:
            raise ValueError(f"ETADConfig.roi_size must be divisible by 4 (a quarter of the bins per boundary), "
                             f"got {self.roi_size}")
        value = self.extend_ratio
        if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"ETADConfig.extend_ratio must be a finite number >= 0, got {value!r}")
        self.stages = tuple(self.stages)
        if not self.stages:
            raise ValueError("ETADConfig.stages must name at least one stage threshold, got ()")
        for i, threshold in enumerate(self.stages):
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold < 1:
                raise ValueError(f"ETADConfig.stages[{i}] must be an IoU threshold in [0, 1), got {threshold!r}")
        self.stages = tuple(float(s) for s in self.stages)
        _check_unit(self, "proposal_ratio", low_open=True, high_open=False)
        for name in ("iou_positive", "iou_high", "iou_low"):
            _check_unit(self, name, low_open=False, high_open=True)
        if not self.iou_low < self.iou_high:
            raise ValueError(f"ETADConfig.iou_low={self.iou_low} must be below iou_high={self.iou_high}")
        check_choice(self, "proposal_sampling", SAMPLING_STRATEGIES)
        check_choice(self, "loss_weights", tuple(LOSS_WEIGHTS))
        if isinstance(self.nms_sigma, bool) or not isinstance(self.nms_sigma, int | float) or not (
                math.isfinite(self.nms_sigma) and self.nms_sigma > 0):
            raise ValueError(f"ETADConfig.nms_sigma must be a finite number > 0, got {self.nms_sigma!r}")
        if not isinstance(self.nms_drop_last, bool):
            raise ValueError(f"ETADConfig.nms_drop_last must be a bool, got {self.nms_drop_last!r}")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def duration(self) -> int:
        """The longest candidate proposal in snippets (``max_duration``, default ``tscale``)."""
        return self.tscale if self.max_duration is None else self.max_duration

    @property
    def weights(self) -> dict[str, float]:
        """The loss weights ``loss_weights`` selects."""
        return dict(LOSS_WEIGHTS[self.loss_weights])

    def replace(self, **changes: Any) -> ETADConfig:
        return replace(self, **changes)


@dataclass
class ETADTrainConfig(TrainConfig):
    """ETAD's feature-mode training as released: AdamW (weight decay 1e-4), lr 1e-3, batches
    of 16 videos, 6 epochs, the lr times 0.1 after epoch 5 (``StepLR(step_size=5)``)."""

    batch_size: int = 16
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 6
    scheduler: Literal["constant", "plateau", "cosine", "step"] = "step"
    milestones: tuple[int, ...] = (5,)
    gamma: float = 0.1


def _preset(name: str, description: str, model: dict[str, Any], train: dict[str, Any] | None = None) -> Preset:
    return Preset(name, ETADConfig(**model), ETADTrainConfig(**(train or {})), description)


#: ActivityNet-1.3 with each feature width the paper uses, THUMOS-14, and a CPU-sized model.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("anet-tsp", "ActivityNet-1.3, 512-d TSP features resized to 128 snippets (released "
            "feature_anet_tsp.py; paper Table 1: 37.78 average mAP)", {"in_channels": 512}),
    _preset("anet-tsn", "ActivityNet-1.3, 400-d TSN features resized to 128 snippets (paper Table 1: 36.06)",
            {"in_channels": 400}),
    _preset("anet-tsm", "ActivityNet-1.3, 2048-d TSM-R50 features resized to 128 snippets (paper Table 3: 35.98)",
            {"in_channels": 2048}),
    _preset("thumos-tsn", "THUMOS-14, 2048-d TSN features (G-TAD's), windows of 128 snippets with stride 64 "
            "(paper Table 2: 68.26 mAP@0.3); no released config", {"in_channels": 2048}),
    _preset("thumos-i3d", "THUMOS-14, 2048-d I3D features (MR's, 7.5 fps), windows of 128 snippets with stride 64 "
            "(paper Table 2: 70.29 mAP@0.3); no released config", {"in_channels": 2048}),
    _preset("small", "a CPU-sized detector for tests and the synthetic dataset (not from the paper)",
            {"in_channels": 32, "tscale": 32, "hidden_dim": 64, "mid_dim": 64, "fc_dim": 32, "roi_size": 8,
             "proposal_ratio": 0.2, "max_proposals": 50},
            {"batch_size": 8, "lr": 2e-3, "epochs": 20, "milestones": (15,)}),
)}
