"""Every op's comparison as a :class:`~fastlocal.bench.suite.Suite`: what ``python -m fastlocal bench`` runs.

Each suite is a thin adapter over the op's benchmark module (the one definition of its
configurations and methods, shared with ``benchmarks/test_<op>.py``): it names the
``--quick`` and ``--tiny`` members, the peers, and how to build one call.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from . import local_attention, roi_align_1d, selective, topk_std
from .memory import PeakMemory
from .suite import Suite


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class LocalAttention(Suite):
    """:mod:`fastlocal.bench.local_attention`: banded attention with RPB against naive, compiled, Flex, SDPA."""

    op = local_attention.OP
    configs = local_attention.CONFIGS
    quick_configs = local_attention.QUICK_CONFIGS
    tiny_configs = tuple(dataclasses.replace(local_attention.CONFIGS[0], T=T) for T in (64, 128))
    gpu_configs = local_attention.GPU_CONFIGS
    # One head layout of the GPU suite, its two shorter lengths.
    gpu_quick_configs = tuple(c for c in gpu_configs if c.B == 1 and c.H == 4 and c.D == 32 and c.T <= 16384)
    methods = tuple(local_attention.METHODS)
    peers = "every method but fastlocal[...]"

    def is_peer(self, method: str) -> bool:
        return local_attention.is_peer(method)

    def unavailable(self, method: str, config: Any, mode: str) -> str | None:
        return local_attention.METHODS[method].unavailable(config, mode)

    def quick_skip(self, method: str, config: Any) -> str | None:
        return local_attention.quick_skip(method, config)

    def compiles(self, method: str) -> bool:
        return local_attention.METHODS[method].compiles

    def call(self, method: str, config: Any, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        m = local_attention.METHODS[method]
        return functools.partial(m.run, m.make_inputs(config, mode), mode)

    def peak_memory(self, method: str, config: Any, mode: str) -> PeakMemory:
        return local_attention.peak_memory(method, config, mode)

    def size(self, config: Any) -> int:
        return config.T

    def series(self, config: Any) -> str:
        device = "" if config.device == "cpu" else f" {config.device}"
        return f"B={config.B} H={config.H} D={config.D} window={config.window} {_dtype_name(config.dtype)}{device}"


class RoiAlign(Suite):
    """:mod:`fastlocal.bench.roi_align_1d`: ETAD's and G-TAD's RoI layers against the plain-PyTorch gather."""

    op = roi_align_1d.OP
    configs = roi_align_1d.CONFIGS
    # ETAD's RoI layer on one video instead of 16 (the suite's calls take seconds on 2 cores).
    quick_configs = (dataclasses.replace(configs[0], videos=1),)
    tiny_configs = tuple(dataclasses.replace(c, videos=1, channels=8, length=24) for c in configs)
    methods = tuple(roi_align_1d.METHODS)
    peers = "gather (plain PyTorch)"

    def is_peer(self, method: str) -> bool:
        return not isinstance(roi_align_1d.METHODS[method], roi_align_1d.FastLocal)

    def unavailable(self, method: str, config: Any, mode: str) -> str | None:
        return roi_align_1d.METHODS[method].unavailable(config, mode)

    def call(self, method: str, config: Any, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        m = roi_align_1d.METHODS[method]
        return functools.partial(m.run, m.make_inputs(config, mode), mode)

    def peak_memory(self, method: str, config: Any, mode: str) -> PeakMemory:
        return roi_align_1d.peak_memory(method, config, mode)


class TopkStd(Suite):
    """:mod:`fastlocal.bench.topk_std`: VidTr's fused topK-std attention against the unfused path.

    The module builds each backend's inputs on that backend's device; its configurations
    are run here as the CPU suite, so CUDA backends are reported as skipped.
    """

    op = topk_std.OP
    configs = topk_std.CONFIGS
    # C-VidTr-S on one clip's 196 patches instead of a batch of 8 clips.
    quick_configs = (dataclasses.replace(configs[0], name=f"{configs[0].name}-1clip", B=196),)
    tiny_configs = tuple(dataclasses.replace(c, name=f"{c.name}-tiny", B=2, D=8) for c in configs)
    backends: ClassVar[dict[str, str]] = {topk_std.method_name(b): b for b in topk_std.BACKENDS}
    methods = tuple(backends)
    peers = "fastlocal[reference] (the unfused path: softmax, std, sort, gather, matmul)"

    def is_peer(self, method: str) -> bool:
        return self.backends[method] == "reference"

    def unavailable(self, method: str, config: Any, mode: str) -> str | None:
        backend = self.backends[method]
        reason = topk_std.unavailable(backend)
        if reason is None and topk_std.device_for(backend).type != "cpu":
            return f"{backend!r} runs on CUDA tensors; this suite has CPU configurations only"
        return reason

    def call(self, method: str, config: Any, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        backend = self.backends[method]
        x = topk_std.make_inputs(config, backend, mode)
        # The selected row indices are integers: only the floating-point outputs are checked.
        return lambda: tuple(t for t in topk_std.timed_call(backend, x, mode) if t.is_floating_point())

    def peak_memory(self, method: str, config: Any, mode: str) -> PeakMemory:
        return topk_std.peak_memory(self.backends[method], config, mode)


class Selective(Suite):
    """:mod:`fastlocal.bench.selective`: one training step of a clip encoder, full backprop against
    checkpointing, ETAD's selective backprop and TALLFormer's long memory."""

    op = "selective"
    configs = (selective.CONFIG,)
    # 8 clips of 8x32x32 (16 tokens) through 2 blocks of the same width: one step of the suite's
    # 32 clips of 196 tokens through 12 blocks takes ~7.5 s on 2 cores, per method and round.
    quick_configs = (dataclasses.replace(selective.CONFIG, clips=8, size=32, depth=2),)
    tiny_configs = (dataclasses.replace(selective.CONFIG, clips=4, frames=2, size=16, tubelet=(2, 8, 8), dim=16,
                                        depth=1, heads=2),)
    methods = selective.METHODS
    modes = ("forward_backward",)
    peers = "full (backprop through every clip) and checkpoint (per-clip activation checkpointing)"
    note = ("selective: forward+backward is one training step (encode the clips, classify, backward, AdamW); "
            "peak MB is the whole step's, parameters and optimizer state included")
    # --quick keeps one ratio of each mode: ETAD's and TALLFormer's 0.1.
    quick_methods = ("full", "checkpoint", "selective-0.1", "tallformer-0.1")

    def is_peer(self, method: str) -> bool:
        return method in ("full", "checkpoint")

    def quick_skip(self, method: str, config: Any) -> str | None:
        if method in self.quick_methods:
            return None
        return "--quick runs one sampling ratio (0.1); run without --quick for the others"

    def call(self, method: str, config: Any, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        step = selective.make_step(method, config.to_dict())
        return lambda: (step(),)

    def peak_memory(self, method: str, config: Any, mode: str) -> PeakMemory:
        return selective.peak_memory(method, config)


SUITES: dict[str, Suite] = {s.op: s for s in (LocalAttention(), RoiAlign(), TopkStd(), Selective())}
