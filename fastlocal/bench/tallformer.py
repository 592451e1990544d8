"""TALLFormer: one end-to-end training step through full backprop, gradient checkpointing and the
long-term memory (the paper's Table 5a), and the temporal consistency module with the down-sampling
stages per ``local_attention`` backend.

One definition, :class:`TALLFormerSuite`, used by ``benchmarks/test_tallformer.py`` and, opt-in, by
``python -m fastlocal bench --ops tallformer`` (whole-model steps: not in the default run).

Configurations (``part``):

``step``      one training step of the ``preset``'s whole model (Video Swin backbone, reduction, TCM,
              THUMOS head) on ``batch`` windows of ``frames`` frames at ``size``^2: forward, the
              released loss on two ground-truth segments per window, backward, SGD (momentum 0.9,
              weight decay 1e-4, the backbone's lr x 0.4). Methods: ``full`` (every chunk back-propagated,
              no recomputation), ``checkpoint`` (every chunk back-propagated, the backbone's blocks
              recomputed in backward), ``memory-<r>`` (the released setting: gradient checkpointing and
              the long-term memory at keep ratio r; the other chunks read from a RAM memory, the kept
              ones written back). ``forward_backward`` only.
``temporal``  the TCM and the self-attention down-sampling stages of the preset (L = ``frames`` / 8
              tokens of 512 channels, ``batch`` windows), training mode: ``forward`` and
              ``forward_backward`` (sum of every level back-propagated), per ``fastlocal[<backend>]`` of
              ``local_attention``; ``fastlocal[reference]`` (PyTorch ops) is the peer.

``fastlocal.models`` is imported when a call is built, so that ``python -m fastlocal bench`` does not
import the model zoo for the default ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch

import fastlocal

from .suite import Suite, backend_absent, backend_method

PARTS = ("step", "temporal")
STEP_METHODS = ("full", "checkpoint", "memory-0.15", "memory-0.4")
BACKENDS = ("cpu", "reference", "cuda", "triton")


@dataclass(frozen=True)
class Config:
    """``part`` of the ``preset`` on ``batch`` windows of ``frames`` frames at ``size`` x ``size``, on ``device``."""

    part: str = "step"
    preset: str = "thumos-swin-t"
    frames: int = 160
    size: int = 112
    batch: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")

    @property
    def name(self) -> str:
        if self.part == "temporal":
            return f"{self.preset}-tcm+tdm-B{self.batch}xL{self.frames // 8}"
        return f"{self.preset}-B{self.batch}x{self.frames}x{self.size}x{self.size}"

    def model(self) -> Any:
        """The preset's :class:`~fastlocal.models.tallformer.TALLFormerConfig` at these frames and size."""
        from fastlocal.models.tallformer import PRESETS

        return PRESETS[self.preset].model.replace(window_frames=self.frames, image_size=self.size,
                                                  short_side=max(self.size, PRESETS[self.preset].model.short_side))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**data)


def keep_ratio(method: str) -> float | None:
    """``memory-<r>`` -> r; None for ``full`` and ``checkpoint``."""
    if method not in STEP_METHODS:
        raise ValueError(f"method must be one of {STEP_METHODS}, got {method!r}")
    return float(method.split("-", 1)[1]) if method.startswith("memory-") else None


def make_step(method: str, config: Config, *, seed: int = 0) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Build the model, its memory (random features), the windows and the optimizer; return one
    training step (module docstring). Not warmed up."""
    from fastlocal.models.tallformer import TALLFormer, detection_loss, level_anchors, make_targets
    from fastlocal.selective import LongMemory

    ratio = keep_ratio(method)
    device = torch.device(config.device)
    model_config = config.model().replace(gradient_checkpointing=method != "full", keep_ratio=ratio or 1.0)
    torch.manual_seed(seed)
    memory = None
    keys = [f"video{i}" for i in range(config.batch)]
    if ratio is not None:
        memory = LongMemory("cuda" if device.type == "cuda" else "ram")
        for key in keys:  # the memory of a video twice the window's length; the windows start at frame 0
            memory.init(key, torch.randn(config.frames, model_config.feature_dim))
    model = TALLFormer(model_config, memory, generator=torch.Generator().manual_seed(seed)).to(device).train()
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(config.batch, 3, config.frames, config.size, config.size, generator=g).to(device)
    segments = [torch.rand(2, 2, generator=g).sort(dim=1).values.to(device) * config.frames
                for _ in range(config.batch)]
    labels = [torch.randint(model_config.num_classes, (2,), generator=g).to(device) for _ in range(config.batch)]
    backbone = {id(p) for p in model.encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in backbone and p.requires_grad]},
              {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": 0.01 * 0.4}]
    optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.9, weight_decay=1e-4)
    offsets = [0] * config.batch

    def step() -> tuple[torch.Tensor, ...]:
        optimizer.zero_grad(set_to_none=True)
        cls_scores, seg_preds = model(video, keys, offsets)
        anchors = torch.cat(level_anchors(model_config, [c.shape[-1] for c in cls_scores], device=device))
        targets = make_targets(anchors, segments, labels, model_config)
        loss = detection_loss(cls_scores, seg_preds, anchors, targets, model_config).loss
        loss.backward()
        optimizer.step()
        return (loss.detach(),)

    return step


def make_temporal(backend: str, config: Config, mode: str, *, seed: int = 0) -> Callable[[], tuple[torch.Tensor, ...]]:
    """The preset's TCM and down-sampling stages on random ``[batch, L, dim]`` tokens under ``backend``."""
    from fastlocal.models.tallformer import SelfAttnTDM, TemporalConsistencyModule

    model_config = config.model()
    torch.manual_seed(seed)
    device = torch.device(config.device)
    tcm = TemporalConsistencyModule(model_config).to(device).train()
    tdm = SelfAttnTDM(model_config).to(device).train()
    x = torch.randn(config.batch, model_config.max_seq_len, model_config.dim, device=device,
                    requires_grad=mode == "forward_backward")

    def call() -> tuple[torch.Tensor, ...]:
        with fastlocal.use_backend(backend), torch.set_grad_enabled(mode == "forward_backward"):
            levels = tdm(tcm(x))
            if mode == "forward_backward":
                x.grad = None
                sum(level.sum() for level in levels).backward()
                return (x.grad,)
        return tuple(level.detach() for level in levels)

    return call


STEP = Config("step", "thumos-swin-t", frames=160, size=112, batch=1)
TEMPORAL = Config("temporal", "thumos-swin-t", frames=480, batch=4)


class TALLFormerSuite(Suite):
    """TALLFormer: a training step by full backprop, checkpointing and the long-term memory (0.15, 0.4); the
    TCM and down-sampling stages per ``local_attention`` backend."""

    op = "tallformer"
    config_type = Config
    configs = (STEP, TEMPORAL)
    quick_configs = (STEP, Config("temporal", "thumos-swin-t", frames=480, batch=1))
    tiny_configs = (Config("step", "tiny", frames=64, size=16, batch=2), Config("temporal", "tiny", frames=64, batch=2))
    gpu_configs = (Config("step", "thumos-swin-t", frames=480, size=224, batch=1, device="cuda"),
                   Config("temporal", "thumos-swin-b", frames=480, batch=4, device="cuda"))
    gpu_quick_configs = (Config("step", "thumos-swin-t", frames=160, size=112, batch=1, device="cuda"),
                         Config("temporal", "thumos-swin-t", frames=480, batch=1, device="cuda"))
    backends: ClassVar[dict[str, str]] = {backend_method(b): b for b in BACKENDS}
    methods = STEP_METHODS + tuple(backends)
    peers = ("full / checkpoint (every chunk back-propagated) for the training step; fastlocal[reference] "
             "(local attention in PyTorch ops) for the TCM and down-sampling stages")
    note = ("tallformer: step = one SGD training step of the whole model (forward, loss, backward, update), peak MB "
            "the whole step's; memory-r = gradient checkpointing + long-term memory at keep ratio r; tcm+tdm = the "
            "temporal consistency module and the down-sampling stages, training mode")
    rounds = 3
    warm_calls = (2, 3)

    def is_peer(self, method: str) -> bool:
        return method in ("full", "checkpoint", backend_method("reference"))

    def absent(self, method: str, device: str) -> str | None:
        if method in self.backends:
            return backend_absent("local_attention", self.backends[method], device)
        return None

    def unavailable(self, method: str, config: Config, mode: str) -> str | None:
        if config.part == "step" and method not in STEP_METHODS:
            return "the training step compares full backprop, checkpointing and the memory"
        if config.part == "temporal" and method in STEP_METHODS:
            return "the temporal part compares local_attention backends"
        if config.part == "step" and mode != "forward_backward":
            return "a training step only"
        return self.absent(method, self.device(config))

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        if config.part == "step":
            return make_step(method, config)
        return make_temporal(self.backends[method], config, mode)


__all__ = ["BACKENDS", "STEP", "STEP_METHODS", "TEMPORAL", "Config", "TALLFormerSuite", "keep_ratio", "make_step",
           "make_temporal"]
