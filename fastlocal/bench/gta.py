"""GTA: one training step of R2D-50, R2D-50 + non-local and R2D-50 + GTA side by side, and the GTA block
alone against its plain PyTorch transcription.

One definition, :class:`GTASuite`, used by ``benchmarks/test_gta.py`` and, opt-in, by
``python -m fastlocal bench --ops gta`` (whole ResNet-50 steps: not in the default run).

Configurations (``part``):

``model``   the ``preset``'s classifier (``r2d50``, ``r2d50-nl``, ``r2d50-gta``; 174 classes) on ``batch``
            clips of ``frames`` x ``size``^2. ``forward``: inference on one batch (eval mode, no autograd).
            ``forward_backward``: one training step as :class:`~fastlocal.models.gta.GTATrainConfig` (train
            mode with dropout and batch norm statistics, cross-entropy, backward, SGD with momentum 0.9 and
            weight decay 5e-4). One method (``fastlocal``): the three models are compared with each other.
``module``  r2d50-gta's block at ``position`` (``layer2.1``: res3, 512 channels, 28^2 at 224; ``layer3.1``:
            res4, 1024 channels, 14^2) on the feature map of ``batch`` clips. ``fastlocal``:
            :class:`fastlocal.nn.GlobalTemporalAttention` (batched matmuls, ``scaled_dot_product_attention``);
            ``transcription`` (the peer):
            :func:`fastlocal.reference.global_temporal_attention.global_temporal_attention`, Eq. 1-8 written out
            (loops over heads and groups, an einsum per temporal matrix). ``forward_backward``
            back-propagates the sum of the output to the input and the weights.

``fastlocal.models`` is imported when a call is built, so that ``python -m fastlocal bench`` does not
import the model zoo for the default ops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .suite import Suite, classifier_call

PARTS = ("model", "module")
MODEL_PRESETS = ("r2d50", "r2d50-nl", "r2d50-gta")
METHODS = ("fastlocal", "transcription")


@dataclass(frozen=True)
class Config:
    """``part`` ("model" or "module") of ``preset`` on ``batch`` clips of ``frames`` x ``size``^2 (None: the
    preset's); ``position``: which block a ``module`` configuration runs."""

    part: str = "model"
    preset: str = "r2d50-gta"
    batch: int = 1
    size: int | None = None
    frames: int | None = None
    position: str = "layer2.1"

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")
        if self.part == "module" and self.model().block != "gta":
            raise ValueError(f"a module configuration needs a GTA preset, got {self.preset!r}")

    def model(self) -> Any:
        """The preset's :class:`~fastlocal.models.gta.GTAConfig` at ``size`` and ``frames``."""
        from fastlocal.models.configs import replace
        from fastlocal.models.gta import PRESETS, TINY_PRESETS

        config = {**PRESETS, **TINY_PRESETS}[self.preset].model
        changes = {k: v for k, v in (("image_size", self.size), ("frames", self.frames)) if v is not None}
        return replace(config, **changes) if changes else config

    @property
    def name(self) -> str:
        c = self.model()
        clip = f"B{self.batch}x{c.frames}f-{c.image_size}px"
        if self.part == "module":
            h, w = c.stage_size(self.position)
            return f"{self.preset}-block-{self.position}-C{c.stage_channels(self.position)}-{h}x{w}-{clip}"
        return f"{self.preset}-{clip}"

    def gflop(self, mode: str) -> float:
        """Nominal GFLOP of one call: 2 x the forward's multiply-adds (``FlopCounterMode``), x3 for a training
        step (the backward ~ 2 forwards)."""
        return 2 * self.batch * _macs(self) * (3 if mode == "forward_backward" else 1) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**data)


def gta_block(config: Config) -> Any:
    """r2d50-gta's block at ``config.position`` (random weights)."""
    from fastlocal.models.gta import GTA

    return GTA(config.model()).temporal_blocks()[config.position]


def _module_input(config: Config, generator: torch.Generator) -> torch.Tensor:
    """The block's input for ``batch`` clips: ``[batch * T, C, H, W]``."""
    c = config.model()
    return torch.randn(config.batch * c.stage_frames(config.position), c.stage_channels(config.position),
                       *c.stage_size(config.position), generator=generator)


@functools.cache
def _macs(config: Config) -> int:
    """Multiply-adds of one clip's forward (fake tensors: no memory, no compute)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from fastlocal.models.cli import multiply_adds
    from fastlocal.models.gta import GTA

    one = Config(**{**config.to_dict(), "batch": 1})
    c = one.model()
    with FakeTensorMode():
        if config.part == "model":
            return multiply_adds(GTA(c).eval(), (torch.empty(1, 3, c.frames, c.image_size, c.image_size),))[0]
        return multiply_adds(gta_block(one).eval(), (_module_input(one, torch.Generator()),))[0]


def model_call(config: Config, mode: str, seed: int = 0) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Build the classifier (random weights), its SGD optimizer and a batch; return one inference forward
    (``forward``) or one training step (``forward_backward``). Not warmed up."""
    from fastlocal.models.gta import GTA, PRESETS, TINY_PRESETS

    torch.manual_seed(seed)
    c = config.model()
    model = GTA(c)
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(config.batch, 3, c.frames, c.image_size, c.image_size, generator=g)
    train = {**PRESETS, **TINY_PRESETS}[config.preset].train
    return classifier_call(model, video, mode, c.num_classes, train, g)


def module_call(method: str, config: Config, mode: str, seed: int = 0) -> Callable[[], tuple[torch.Tensor, ...]]:
    """The block at ``config.position`` through ``method`` ("fastlocal" or "transcription"), same weights and
    input for both; ``forward_backward`` returns the gradients of the input and of every weight."""
    from fastlocal.reference.global_temporal_attention import global_temporal_attention

    torch.manual_seed(seed)
    block = gta_block(config).eval()
    x = _module_input(config, torch.Generator().manual_seed(seed))
    run = block if method == "fastlocal" else functools.partial(global_temporal_attention, block)
    if mode == "forward":

        def forward() -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                return (run(x),)

        return forward
    x.requires_grad_(True)
    params = [p for p in block.parameters() if p.requires_grad]

    def forward_backward() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(run(x).sum(), [x, *params])

    return forward_backward


R2D50 = Config("model", "r2d50")
R2D50_NL = Config("model", "r2d50-nl")
R2D50_GTA = Config("model", "r2d50-gta")
BLOCK_RES3 = Config("module", "r2d50-gta", position="layer2.1")
BLOCK_RES4 = Config("module", "r2d50-gta", position="layer3.1")


class GTASuite(Suite):
    """R2D-50, + non-local, + GTA (8 x 224^2, batch 1) step by step; the GTA block against its transcription."""

    op = "gta"
    config_type = Config
    configs = (R2D50, R2D50_NL, R2D50_GTA, BLOCK_RES3, BLOCK_RES4)
    quick_configs = tuple(Config(c.part, c.preset, size=112, position=c.position) for c in configs)
    tiny_configs = (Config("model", "gta-tiny"), Config("module", "gta-tiny", position="layer2.0"))
    methods = METHODS
    peers = "transcription (the GTA block's Eq. 1-8 written out in PyTorch; the models have no peer)"
    note = ("gta: model forward = inference on one batch (no autograd), forward+backward = one SGD training step; "
            "module = r2d50-gta's block alone on its stage's feature map; GFLOP/s from FlopCounterMode's multiply-adds "
            "(x3 for a step); peak MB includes the step's gradients and momentum buffers")
    rounds = 3
    warm_calls = (2, 4)

    def is_peer(self, method: str) -> bool:
        return method == "transcription"

    def absent(self, method: str, device: str) -> str | None:
        return "the GTA benchmark runs on the CPU only" if device != "cpu" else None

    def unavailable(self, method: str, config: Config, mode: str) -> str | None:
        if config.part == "model" and method == "transcription":
            return "the transcription is of the GTA block alone (see the module rows)"
        return super().unavailable(method, config, mode)

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        return model_call(config, mode) if config.part == "model" else module_call(method, config, mode)


__all__ = ["BLOCK_RES3", "BLOCK_RES4", "METHODS", "MODEL_PRESETS", "R2D50", "R2D50_GTA", "R2D50_NL", "Config",
           "GTASuite", "gta_block", "model_call", "module_call"]
