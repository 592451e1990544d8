"""Soft-NMS and non-maximum weighting of a detector's proposals: configurations and competing methods.

Two definitions, :class:`SoftNms` and :class:`Nmw` (below), shared by ``benchmarks/test_nms_1d.py``
and ``python -m fastlocal bench``.
Every method runs Gaussian soft-NMS (sigma 0.35, no score threshold, the top 100 kept) on
ETAD's post-processing input: the T(T+1)/2 = 8,256 proposals of a T = 128 video (every
start and duration on the grid, jittered as the regression head refines them) with random
scores.

Methods:
  ``fastlocal[<backend>]``  :func:`fastlocal.soft_nms_1d` (one video) or
                            :func:`fastlocal.batched_soft_nms_1d` (several) with ``backend=``;
                            ``reference`` is the PyTorch loop (one round of tensor ops per pick)
  ``numpy-loop``            the loop detectors ship (ETAD, BMN, G-TAD post-processing): one
                            ``numpy`` argmax and IoU / decay sweep per pick, one video at a time

Mode: ``forward`` only (no gradient).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import fastlocal

from ..nms_1d import NMW_IMPLEMENTED, SOFT_NMS_IMPLEMENTED
from .suite import DtypeConfig, Suite, backend_absent, backend_method, dtype_name

SIGMA = 0.35  # ETAD's DETECTION_POST


@dataclass(frozen=True)
class Config(DtypeConfig):
    """``videos`` videos of ``length`` snippets, each with all length * (length + 1) / 2 proposals."""

    label: str
    videos: int
    length: int
    max_output: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @property
    def proposals(self) -> int:
        return self.length * (self.length + 1) // 2

    @property
    def name(self) -> str:
        return (f"{self.label}-B{self.videos}-N{self.proposals}-top{self.max_output}-{dtype_name(self.dtype)}"
                f"{'-cuda' if self.device == 'cuda' else ''}")


CONFIGS = (
    Config("etad", videos=1, length=128, max_output=100),
    Config("etad", videos=16, length=128, max_output=100),
)
GPU_CONFIGS = tuple(dataclasses.replace(c, device="cuda") for c in CONFIGS)


def make_proposals(config: Config, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, N, 2]`` proposals in [0, 1] (start and duration on the grid, jittered by up to half a
    snippet) and ``[B, N]`` scores uniform in [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    t = config.length
    last, start = torch.tril_indices(t, t)  # every start <= last snippet < t
    segments = torch.stack([start, last + 1], dim=1).double() / t
    jitter = (torch.rand(config.videos, segments.shape[0], 2, generator=g, dtype=torch.float64) - 0.5) / t
    segments = (segments + jitter).clamp(0, 1)
    segments = torch.stack([segments.amin(2), segments.amax(2)], dim=2)  # start <= end after the jitter
    scores = torch.rand(config.videos, segments.shape[1], generator=g, dtype=torch.float64)
    return segments.to(config.dtype), scores.to(config.dtype)


def numpy_soft_nms(segments: np.ndarray, scores: np.ndarray, sigma: float, max_output: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS of one video as detectors' post-processing writes it: one numpy sweep per pick."""
    start, end, current = segments[:, 0].copy(), segments[:, 1].copy(), scores.copy()
    index = np.arange(scores.shape[0])
    picked, picked_scores = [], []
    while current.size and len(picked) < max_output:
        best = int(np.argmax(current))
        picked.append(index[best])
        picked_scores.append(current[best])
        s, e = start[best], end[best]
        start, end, current, index = (np.delete(a, best) for a in (start, end, current, index))
        inter = np.clip(np.minimum(e, end) - np.maximum(s, start), 0, None)
        union = (e - s) + (end - start) - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        current = current * np.exp(-(iou * iou) / sigma)
    return np.asarray(picked, dtype=np.int64), np.asarray(picked_scores, dtype=scores.dtype)


class Method:
    """A named way to run soft-NMS over a batch of videos."""

    name: str

    def absent(self, device: str) -> str | None:
        """Why this method has nothing to run on ``device`` here, or None."""
        return None

    def run(self, segments: torch.Tensor, scores: torch.Tensor, max_output: int) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError


class FastLocal(Method):
    """:func:`fastlocal.soft_nms_1d` / :func:`fastlocal.batched_soft_nms_1d` on one backend."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.name = backend_method(backend)

    def absent(self, device: str) -> str | None:
        if self.backend not in SOFT_NMS_IMPLEMENTED:  # backend_absent reads the hard NMS's IMPLEMENTED
            return f"no {self.backend!r} kernel (implemented: {', '.join(SOFT_NMS_IMPLEMENTED)})"
        return backend_absent("nms_1d", self.backend, device)

    def run(self, segments: torch.Tensor, scores: torch.Tensor, max_output: int) -> tuple[torch.Tensor, ...]:
        kwargs = {"sigma": SIGMA, "score_threshold": 0.0, "max_output": max_output, "backend": self.backend}
        if segments.shape[0] == 1:
            return fastlocal.soft_nms_1d(segments[0], scores[0], **kwargs)
        return fastlocal.batched_soft_nms_1d(segments, scores, **kwargs)


class NumpyLoop(Method):
    """:func:`numpy_soft_nms`, one video after the other (CPU only)."""

    name = "numpy-loop"

    def absent(self, device: str) -> str | None:
        return "runs on CPU arrays: python -m fastlocal bench --device cpu" if device != "cpu" else None

    def run(self, segments: torch.Tensor, scores: torch.Tensor, max_output: int) -> tuple[torch.Tensor, ...]:
        out = [numpy_soft_nms(s, c, SIGMA, max_output) for s, c in zip(segments.numpy(), scores.numpy(), strict=True)]
        return tuple(torch.from_numpy(a) for pair in out for a in pair)


METHODS: dict[str, Method] = {m.name: m for m in (FastLocal("cuda"), FastLocal("cpu"), FastLocal("reference"),
                                                   NumpyLoop())}


def run(method: Method, segments: torch.Tensor, scores: torch.Tensor, max_output: int) -> tuple[torch.Tensor, ...]:
    """One timed call; the scores as floating outputs (the harness checks them finite)."""
    out = method.run(segments, scores, max_output)
    return tuple(t for t in out if t.is_floating_point())


class SoftNms(Suite):
    """Soft-NMS of ETAD's 8,256 proposals per video, top 100: fastlocal's kernels against the PyTorch
    reference loop and the numpy loop detectors ship."""

    op = "soft_nms_1d"
    config_type = Config
    configs = CONFIGS
    quick_configs = (CONFIGS[0],)
    tiny_configs = (dataclasses.replace(CONFIGS[0], label="tiny", length=24, max_output=20),)
    gpu_configs = GPU_CONFIGS
    gpu_quick_configs = (GPU_CONFIGS[0],)
    methods = tuple(METHODS)
    modes = ("forward",)
    peers = "fastlocal[reference] (PyTorch loop) and numpy-loop (detectors' post-processing)"

    def is_peer(self, method: str) -> bool:
        return method == "numpy-loop" or method == "fastlocal[reference]"

    def absent(self, method: str, device: str) -> str | None:
        return METHODS[method].absent(device)

    def unavailable(self, method: str, config: Config, mode: str) -> str | None:
        return METHODS[method].absent(config.device)

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        segments, scores = make_proposals(config)
        return functools.partial(run, METHODS[method], segments.to(config.device), scores.to(config.device),
                                 config.max_output)


# ---- non-maximum weighting: TALLFormer's THUMOS-14 post-processing --------------------------------


@dataclass(frozen=True)
class NmwConfig(DtypeConfig):
    """One video's ``anchors`` detections scored for ``classes`` classes, merged by
    :func:`fastlocal.multiclass_nmw_1d` with TALLFormer's settings (score > 0.005, IoU 0.5, at most
    ``max_output``)."""

    label: str
    anchors: int
    classes: int
    max_output: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @property
    def name(self) -> str:
        return f"{self.label}-N{self.anchors}-C{self.classes}-top{self.max_output}-{dtype_name(self.dtype)}"


NMW_CONFIGS = (NmwConfig("thumos", anchors=1000, classes=20, max_output=1200),)


def make_detections(config: NmwConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, 2]`` segments (centres uniform over a 300 s video, lengths 1-30 s, clamped to it) and
    ``[N, C]`` scores ``u**3``, u uniform in [0, 1) (mostly small, as a sigmoid head's; ~83 % above
    the 0.005 threshold)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(config.anchors, generator=g, dtype=torch.float64) * 300
    half = (1 + torch.rand(config.anchors, generator=g, dtype=torch.float64) * 29) / 2
    segments = torch.stack([centre - half, centre + half], dim=1).clamp(0, 300)
    scores = torch.rand(config.anchors, config.classes, generator=g, dtype=torch.float64) ** 3
    return segments.to(config.dtype), scores.to(config.dtype)


def run_nmw(segments: torch.Tensor, scores: torch.Tensor, max_output: int, backend: str) -> tuple[torch.Tensor, ...]:
    """One timed call; the floating outputs (merged segments and their scores)."""
    merged, kept, _ = fastlocal.multiclass_nmw_1d(segments, scores, max_output=max_output, backend=backend)
    return merged, kept


class Nmw(Suite):
    """Non-maximum weighting of 1,000 detections x 20 classes (TALLFormer's THUMOS-14 inference):
    the C++ kernel against the PyTorch reference loop."""

    op = "nmw_1d"
    config_type = NmwConfig
    configs = NMW_CONFIGS
    # --quick: the first 100 picks of the same video (the reference loop costs seconds per 100 picks)
    quick_configs = (NmwConfig("thumos", anchors=1000, classes=20, max_output=100),)
    tiny_configs = (NmwConfig("tiny", anchors=100, classes=4, max_output=100),)
    methods = ("fastlocal[cpu]", "fastlocal[reference]")
    modes = ("forward",)
    peers = "fastlocal[reference] (PyTorch loop, one round of tensor ops per pick)"

    def is_peer(self, method: str) -> bool:
        return method == "fastlocal[reference]"

    def absent(self, method: str, device: str) -> str | None:
        backend = method.removeprefix("fastlocal[").removesuffix("]")
        if backend not in NMW_IMPLEMENTED:  # backend_absent reads the hard NMS's IMPLEMENTED
            return f"no {backend!r} kernel (implemented: {', '.join(NMW_IMPLEMENTED)})"
        return backend_absent("nms_1d", backend, device)

    def build(self, method: str, config: NmwConfig, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        segments, scores = make_detections(config)
        backend = method.removeprefix("fastlocal[").removesuffix("]")
        return functools.partial(run_nmw, segments.to(config.device), scores.to(config.device), config.max_output,
                                 backend)
