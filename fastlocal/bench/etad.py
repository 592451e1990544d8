"""ETAD in feature mode: one training step, one inference forward and the post-processing of one video,
per backend.

One definition, :class:`ETADSuite`, used by ``benchmarks/test_etad.py`` and, opt-in, by
``python -m fastlocal bench --ops etad`` (whole-model steps: not in the default run).

Configurations (``part``):

``model``  the ``anet-tsp`` detector (10.3 M parameters, 512-d features, T = 128) on a batch of
           random features. ``forward``: inference on every candidate (8,256 per video, three
           cascade stages: 24,768 RoIs per video), eval mode, no autograd. ``forward_backward``:
           one released training step: proposals sampled per video (6%: 495), targets from two
           random ground-truth segments per video, the released loss, backward, AdamW step.
``post``   the released post-processing of one video
           (:func:`fastlocal.models.etad.postprocess.postprocess_video`): boundary masks, Gaussian
           soft-NMS (sigma 0.35) of the 8,256 proposals down to 100, top-2 classes. The model's
           output is random (proposals jittered around the candidates, IoU scores uniform, boundary
           probabilities in [0.5, 1) so that every proposal passes the masks); ``forward`` only.

Methods: ``fastlocal[cpu]`` (the compiled RoI-align and soft-NMS kernels) against
``fastlocal[reference]`` (their PyTorch definitions, the peer); everything else is the same code.

``fastlocal.models`` is imported when a call is built, so that ``python -m fastlocal bench``
does not import the model zoo for the default ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .suite import ModelBackendSuite, backend_absent

PARTS = ("model", "post")
#: the fastlocal op each part's backend choice changes
OP_MODULES = {"model": "roi_align_1d", "post": "nms_1d"}


@dataclass(frozen=True)
class Config:
    """``part`` ("model" or "post") of the ``preset``'s detector on ``batch`` videos (``post``: one)."""

    part: str = "model"
    preset: str = "anet-tsp"
    batch: int = 2

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")

    @property
    def name(self) -> str:
        if self.part == "post":
            return f"{self.preset}-postprocess-1video"
        return f"{self.preset}-B{self.batch}"

    def model(self) -> Any:
        """The preset's :class:`~fastlocal.models.etad.ETADConfig`."""
        from fastlocal.models.etad import PRESETS

        return PRESETS[self.preset].model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**data)


def _ground_truth(batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Two segments per video in [0, 1]: ``[2, 2]`` each, start <= end."""
    return [torch.rand(2, 2, generator=generator).sort(dim=1).values for _ in range(batch)]


def model_call(backend: str, config: Config, mode: str, seed: int = 0) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Build the detector (random weights), its AdamW optimizer and a batch; return one inference
    forward (``forward``) or one training step (``forward_backward``) on ``backend``. Not warmed up."""
    from fastlocal.models.etad import ETAD, PRESETS, candidate_anchors, etad_loss, make_targets
    from fastlocal.models.etad.data import sample_batch_anchors

    torch.manual_seed(seed)
    detector = config.model()
    train = PRESETS[config.preset].train
    model = ETAD(detector, backend=backend)
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(config.batch, detector.in_channels, detector.tscale, generator=g)
    if mode == "forward":
        model.eval()
        anchors = candidate_anchors(detector.tscale, detector.max_duration).expand(config.batch, -1, -1)

        def infer() -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                return tuple(model(features, anchors))

        return infer
    ground_truth = _ground_truth(config.batch, g)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    model.train()

    def step() -> tuple[torch.Tensor, ...]:
        anchors = sample_batch_anchors(detector, config.batch, g)
        targets = make_targets(ground_truth, anchors, detector.tscale)
        optimizer.zero_grad(set_to_none=True)
        loss, _ = etad_loss(model(features, anchors), targets, detector, g)
        loss.backward()
        optimizer.step()
        return (loss.detach(),)

    return step


def post_call(backend: str, config: Config, seed: int = 0) -> Callable[[], tuple[torch.Tensor, ...]]:
    """One video's post-processing of a random model output (module docstring) on ``backend``; returns
    the detections' scores. Not warmed up."""
    from fastlocal.models.etad import candidate_anchors, postprocess_video

    detector = config.model()
    g = torch.Generator().manual_seed(seed)
    anchors = candidate_anchors(detector.tscale, detector.max_duration)
    jitter = (torch.rand(anchors.shape, generator=g) - 0.5) / detector.tscale
    anchors = (anchors + jitter).clamp(0, 1).sort(dim=1).values
    iou = torch.rand(anchors.shape, generator=g)
    tem = 0.5 + 0.5 * torch.rand(2, detector.tscale, generator=g)  # every snippet passes p > max / 2
    classes = [("class_a", 0.9), ("class_b", 0.4)][:detector.class_topk]

    def post() -> tuple[torch.Tensor, ...]:
        entries = postprocess_video(anchors, iou, tem, duration=120.0, classes=classes, sigma=detector.nms_sigma,
                                    max_proposals=detector.max_proposals, drop_last=detector.nms_drop_last,
                                    backend=backend)
        return (torch.tensor([e["score"] for e in entries], dtype=torch.float64),)

    return post


ANET_TSP = Config("model", "anet-tsp", batch=2)
ANET_TSP_POST = Config("post", "anet-tsp", batch=1)


class ETADSuite(ModelBackendSuite):
    """ETAD (anet-tsp) in feature mode: RoI-align and soft-NMS compiled (``fastlocal[cpu]``) against their
    PyTorch definitions (``fastlocal[reference]``)."""

    op = "etad"
    config_type = Config
    configs = (ANET_TSP, ANET_TSP_POST)
    quick_configs = (Config("model", "anet-tsp", batch=1), ANET_TSP_POST)
    tiny_configs = (Config("model", "small", batch=1), Config("post", "small", batch=1))
    fused_op = "roi_align_1d"
    peers = "fastlocal[reference] (RoI-align and soft-NMS in PyTorch ops)"
    note = ("etad: model forward = inference on every candidate proposal (no autograd); model forward+backward = "
            "one AdamW training step on 6% sampled proposals; postprocess = masks, soft-NMS of 8,256 proposals to "
            "100, top-2 classes, one video")

    def unavailable(self, method: str, config: Config, mode: str) -> str | None:
        if config.part == "post" and mode != "forward":
            return "post-processing has no backward"
        if self.device(config) != "cpu":
            return "the model benchmark runs on the CPU only"
        return backend_absent(OP_MODULES[config.part], self.backends[method], "cpu")

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        backend = self.backends[method]
        return post_call(backend, config) if config.part == "post" else model_call(backend, config, mode)


__all__ = ["ANET_TSP", "ANET_TSP_POST", "Config", "ETADSuite", "model_call", "post_call"]
