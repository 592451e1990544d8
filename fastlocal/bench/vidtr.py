"""VidTr end to end: one training step and one inference view of C-VidTr-S (and VidTr-S) per backend.

One definition, :class:`VidTrSuite`, used by ``benchmarks/test_vidtr.py`` and, opt-in, by
``python -m fastlocal bench --ops vidtr`` (a whole 87M-parameter model: not in the default run).

Modes: ``forward`` is one inference view (``[batch, 3, 8, 224, 224]``, eval mode, no autograd);
``forward_backward`` is one training step as released (train mode with dropout, cross-entropy,
backward, SGD with momentum and weight decay). Methods: ``fastlocal[cpu]`` runs the pooling
layers through the fused topK-std kernel, ``fastlocal[reference]`` through the unfused PyTorch
path (the peer); everything else (projections, MLPs, the unpooled attention through
``scaled_dot_product_attention``) is the same code on both. VidTr-S has no pooling layer, so it
runs once (``fastlocal[cpu]``), for its time beside C-VidTr-S's and their multiply-add ratio.

:func:`pooling_share` profiles one step (``torch.profiler``) and returns the share of its time
spent in the topK-std pooling, forward and backward.

``fastlocal.models`` is imported when a call is built, so that ``python -m fastlocal bench``
does not import the model zoo for the default ops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .suite import ModelBackendSuite, classifier_call

POOL_FORWARD = "vidtr.topk_std_pooling.forward"
POOL_BACKWARD = "vidtr.topk_std_pooling.backward"
STEP = "vidtr.call"


@dataclass(frozen=True)
class Config:
    """One view batch: ``batch`` clips of the ``preset``'s frames at ``size`` x ``size`` (None: the preset's
    ``image_size``), 400 classes (Kinetics-400)."""

    preset: str = "c-vidtr-s"
    batch: int = 1
    size: int | None = None

    @property
    def name(self) -> str:
        return f"{self.preset}-B{self.batch}-{self.model().image_size if self.size is None else self.size}px"

    def model(self) -> Any:
        """The preset's :class:`~fastlocal.models.vidtr.VidTrConfig`."""
        from fastlocal.models.vidtr import PRESETS, TINY_PRESETS

        return {**PRESETS, **TINY_PRESETS}[self.preset].model

    def train(self) -> Any:
        """The preset's :class:`~fastlocal.models.vidtr.VidTrTrainConfig` (the step's SGD settings)."""
        from fastlocal.models.vidtr import PRESETS, TINY_PRESETS

        return {**PRESETS, **TINY_PRESETS}[self.preset].train

    def side(self) -> int:
        return self.model().image_size if self.size is None else self.size

    def gflop(self, mode: str) -> float:
        """Nominal GFLOP of one call: 2 x the multiply-adds of the forward (``macs_per_view``, every
        matmul of the released architecture), x3 for a training step (backward ~ 2 forwards)."""
        return 2 * self.batch * _macs(self.preset, self.side()) * (3 if mode == "forward_backward" else 1) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**data)


@functools.cache
def _macs(preset: str, side: int) -> int:
    from fastlocal.models.vidtr import macs_per_view

    return macs_per_view(Config(preset).model(), side, side)


def mac_ratio(a: Config, b: Config) -> float:
    """Multiply-adds of ``a``'s forward over ``b``'s."""
    return (a.batch * _macs(a.preset, a.side())) / (b.batch * _macs(b.preset, b.side()))


def make_call(backend: str, config: Config, mode: str, seed: int = 0) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Build the model (random weights), its SGD optimizer and one view batch; return one call of
    ``mode`` on ``backend`` (the logits, or the step's loss). Not warmed up."""
    from fastlocal.models.vidtr import VidTr

    torch.manual_seed(seed)
    model = VidTr(config.model(), backend=backend)
    g = torch.Generator().manual_seed(seed)
    side = config.side()
    video = torch.randn(config.batch, 3, config.model().frames, side, side, generator=g)
    return classifier_call(model, video, mode, config.model().num_classes, config.train(), g)


@contextmanager
def _marked_pooling() -> Iterator[None]:
    """Mark every topK-std pooling call of VidTr as profiler ranges: its forward, and its backward
    from the gradient reaching its output to the last of q, k, v's gradients."""
    from torch.autograd.profiler import record_function

    import fastlocal.models.vidtr.model as vidtr_model

    pool = vidtr_model.topk_std_attention

    def marked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with record_function(POOL_FORWARD):
            out, index = pool(q, k, v, *args, **kwargs)
        if out.requires_grad:
            backward = record_function(POOL_BACKWARD)
            inputs = [t for t in (q, k, v) if t.requires_grad]
            left = [len(inputs)]

            def enter(grad: torch.Tensor) -> None:
                backward.__enter__()

            def leave(grad: torch.Tensor) -> None:
                left[0] -= 1
                if left[0] == 0:
                    backward.__exit__(None, None, None)

            out.register_hook(enter)
            for t in inputs:
                t.register_hook(leave)
        return out, index

    vidtr_model.topk_std_attention = marked
    try:
        yield
    finally:
        vidtr_model.topk_std_attention = pool


def pooling_share(backend: str, config: Config, mode: str = "forward_backward") -> dict[str, float]:
    """Profile one warm call (``torch.profiler``, CPU): milliseconds of the whole call and of the topK-std
    pooling's forward and backward ranges, and the pooling's ``share`` of the call (0..1). The
    profiler's own overhead is in every figure."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with _marked_pooling():
        call = make_call(backend, config, mode)
        call()  # warm: allocations, thread pools, lazy imports
        with profile(activities=[ProfilerActivity.CPU]) as prof, record_function(STEP):
            call()
    totals = {e.key: e.cpu_time_total / 1e3 for e in prof.key_averages()}
    forward, backward = totals.get(POOL_FORWARD, 0.0), totals.get(POOL_BACKWARD, 0.0)
    return {"call_ms": totals[STEP], "pool_forward_ms": forward, "pool_backward_ms": backward,
            "share": (forward + backward) / totals[STEP]}


C_VIDTR_S = Config("c-vidtr-s")
VIDTR_S = Config("vidtr-s")


class VidTrSuite(ModelBackendSuite):
    """C-VidTr-S end to end, pooling fused (``fastlocal[cpu]``) against unfused (``fastlocal[reference]``);
    VidTr-S beside it."""

    op = "vidtr"
    config_type = Config
    configs = (C_VIDTR_S, VIDTR_S)
    quick_configs = (C_VIDTR_S,)
    tiny_configs = (Config("c-vidtr-tiny"),)
    fused_op = "topk_std"
    peers = "fastlocal[reference] (the pooling layers unfused: softmax, std, sort, gather, matmul)"
    note = ("vidtr: forward is one inference view (no autograd), forward+backward one SGD training step; "
            "GFLOP/s count every matmul of the architecture (macs_per_view); peak MB includes the step's gradients "
            "and momentum buffers")

    def unavailable(self, method: str, config: Config, mode: str) -> str | None:
        if self.backends[method] != "cpu" and not config.model().compact:
            return f"{config.preset} has no pooling layer: every backend runs the same code (timed once, cpu)"
        return super().unavailable(method, config, mode)

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        return make_call(self.backends[method], config, mode)


__all__ = ["C_VIDTR_S", "VIDTR_S", "Config", "VidTrSuite", "mac_ratio", "make_call",
           "pooling_share"]
