"""RoI-align-1D: configurations and competing methods.

One definition, :class:`RoiAlign`, shared by ``benchmarks/test_roi_align_1d.py`` and ``python -m fastlocal bench``.
Every method computes ``fastlocal.roi_align_1d(x, rois, P, sampling_ratio=0)`` on the
proposals of a detector:

* ``etad``: ETAD's RoI layer: 16 videos, C = 256, T = 128, 6% of the T(T-1)/2 = 8,128
  proposals of each video sampled (488 per video, 7,808 RoIs), output size 32.
* ``gtad``: G-TAD's dense proposal map (``GraphAlign`` in frostinassiky/gtad
  ``gtad_lib/models.py``): its default batch of 8 videos, C = 256 (``h_dim_1d``), T = 100,
  every proposal ``s < e`` (T(T-1)/2 = 4,950 per video, 39,600 RoIs) extended by half its
  length ``e - s + 1`` on both sides, output size 16 (``resolution``), adaptive sampling
  (``goi_samp = 0``).

Methods:
  ``fastlocal[<backend>]``  :func:`fastlocal.roi_align_1d` with ``backend=``; ``reference`` is
                            the unfused PyTorch path (sampling plan + ``embedding_bag``)
  ``gather``                the obvious plain-PyTorch formulation (:func:`gather_roi_align_1d`):
                            both frames of every sample gathered for every channel

Modes: ``forward`` (the input does not require grad) and ``forward_backward`` (gradient of
the input for a fixed upstream gradient).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

import fastlocal

from .suite import DtypeConfig, Suite, backend_absent, backend_method, dtype_name

GATHER_LIMIT_BYTES = 4 * 2**30  # largest [N, P, n, C] gather the ``gather`` method may build


@dataclass(frozen=True)
class Config(DtypeConfig):
    """A batch of videos ``[videos, channels, length]`` and the RoIs of its proposals."""

    label: str
    videos: int
    channels: int
    length: int
    output_size: int
    proposal_fraction: float  # of the length * (length - 1) / 2 proposals s < e of each video
    context: float = 0.0  # each proposal extended by context * (e - s + 1) on both sides
    sampling_ratio: int = 0
    dtype: torch.dtype = torch.float32

    @property
    def proposals_per_video(self) -> int:
        return round(self.proposal_fraction * self.length * (self.length - 1) / 2)

    @property
    def num_rois(self) -> int:
        return self.videos * self.proposals_per_video

    @property
    def name(self) -> str:
        return (f"{self.label}-B{self.videos}-C{self.channels}-T{self.length}-N{self.num_rois}-P{self.output_size}"
                f"-{dtype_name(self.dtype)}")


CONFIGS = (
    Config("etad", videos=16, channels=256, length=128, output_size=32, proposal_fraction=0.06),
    Config("gtad", videos=8, channels=256, length=100, output_size=16, proposal_fraction=1.0, context=0.5),
)


@dataclass
class Inputs:
    """Features ``x [B, C, T]``, RoIs ``[N, 3]`` and the upstream gradient ``[N, C, P]``."""

    x: torch.Tensor
    rois: torch.Tensor
    grad_out: torch.Tensor
    output_size: int
    sampling_ratio: int


def make_rois(config: Config, generator: torch.Generator) -> torch.Tensor:
    """``[N, 3]`` float32 RoIs: per video, the chosen proposals ``s < e``, with their context."""
    start, end = torch.triu_indices(config.length, config.length, 1).float()
    rows = []
    for video in range(config.videos):
        pick = torch.randperm(start.numel(), generator=generator)[: config.proposals_per_video].sort().values
        s, e = start[pick], end[pick]
        margin = config.context * (e - s + 1)
        rows.append(torch.stack([torch.full_like(s, video), s - margin, e + margin], dim=1))
    return torch.cat(rows)


def gather_roi_align_1d(x: torch.Tensor, rois: torch.Tensor, output_size: int, sampling_ratio: int = 0
                        ) -> torch.Tensor:
    """RoI-align-1D (``aligned=False``) as a user writes it in plain PyTorch.

    Computes every sample position ``[N, P, n]`` (n the largest sample count, shorter RoIs
    masked), gathers both neighbouring frames of each for every channel (two
    ``[N, P, n, C]`` tensors) and averages the interpolations.
    """
    T = x.shape[2]
    start = rois[:, 1]
    length = (rois[:, 2] - start).clamp(min=1.0)
    bin_size = length / output_size
    count = torch.full_like(length, sampling_ratio) if sampling_ratio > 0 else torch.ceil(bin_size)
    n = int(count.max().item())
    p = torch.arange(output_size, dtype=x.dtype).view(1, -1, 1)
    i = torch.arange(n, dtype=x.dtype).view(1, 1, -1)
    t = start.view(-1, 1, 1) + p * bin_size.view(-1, 1, 1) + (i + 0.5) * (bin_size / count).view(-1, 1, 1)
    weight = ((i < count.view(-1, 1, 1)) & (t >= -1) & (t <= T)) / count.view(-1, 1, 1)
    t = t.clamp(min=0, max=T - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=T - 1)
    frac = t - lo
    frames = x.transpose(1, 2)[rois[:, 0].long()]  # [N, T, C] view of each RoI's video
    batch = torch.arange(rois.shape[0]).view(-1, 1, 1)
    values = (1 - frac)[..., None] * frames[batch, lo] + frac[..., None] * frames[batch, hi]  # [N, P, n, C]
    return (values * weight[..., None]).sum(2).transpose(1, 2)


class Method:
    """A named way to compute RoI-align-1D; subclasses define :meth:`forward`."""

    name: str

    def absent(self) -> str | None:
        """Why this method has nothing to run here (this suite's configurations are on the CPU), or None."""
        return None

    def unavailable(self, config: Config, mode: str) -> str | None:
        """Why this method cannot run ``config`` in ``mode`` (beyond :meth:`absent`), or None when it can."""
        return None

    def make_inputs(self, config: Config, mode: str, seed: int = 0) -> Inputs:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(config.videos, config.channels, config.length, generator=g, dtype=config.dtype)
        rois = make_rois(config, g)
        grad_out = torch.randn(rois.shape[0], config.channels, config.output_size, generator=g, dtype=config.dtype)
        return Inputs(x.requires_grad_(mode == "forward_backward"), rois, grad_out, config.output_size,
                      config.sampling_ratio)

    def forward(self, x: Inputs) -> torch.Tensor:
        raise NotImplementedError

    def run(self, x: Inputs, mode: str) -> tuple[torch.Tensor, ...]:
        """One timed call in ``mode``; returns every tensor it produced."""
        out = self.forward(x)
        if mode == "forward":
            return (out,)
        # autograd.grad instead of .backward(): nothing accumulates in .grad across rounds.
        (grad,) = torch.autograd.grad(out, x.x, x.grad_out)
        return out.detach(), grad


class FastLocal(Method):
    """:func:`fastlocal.roi_align_1d` on one backend."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.name = backend_method(backend)

    def absent(self) -> str | None:
        return backend_absent("roi_align_1d", self.backend, "cpu")

    def forward(self, x: Inputs) -> torch.Tensor:
        return fastlocal.roi_align_1d(x.x, x.rois, x.output_size, sampling_ratio=x.sampling_ratio,
                                      backend=self.backend)


class Gather(Method):
    """:func:`gather_roi_align_1d`."""

    name = "gather"

    def unavailable(self, config: Config, mode: str) -> str | None:
        rois = make_rois(config, torch.Generator().manual_seed(0))
        longest = ((rois[:, 2] - rois[:, 1]).clamp(min=1) / config.output_size).ceil().max().item()
        n = config.sampling_ratio or int(longest)
        size = config.num_rois * config.output_size * n * config.channels * config.dtype.itemsize
        if size > GATHER_LIMIT_BYTES:
            return (f"each [N, P, n, C] gather would take {size / 2**30:.1f} GiB "
                    f"(limit {GATHER_LIMIT_BYTES / 2**30:.0f} GiB)")
        return None

    def forward(self, x: Inputs) -> torch.Tensor:
        return gather_roi_align_1d(x.x, x.rois, x.output_size, x.sampling_ratio)


METHODS: dict[str, Method] = {m.name: m for m in (FastLocal("cpu"), FastLocal("reference"), Gather())}


class RoiAlign(Suite):
    """RoI-align-1D: fastlocal's kernel against the reference (sampling plan + ``embedding_bag``) and
    the plain-PyTorch gather, at ETAD's RoI layer and G-TAD's dense proposal map."""

    op = "roi_align_1d"
    config_type = Config
    configs = CONFIGS
    # ETAD's RoI layer on one video instead of 16 (the suite's calls take seconds on 2 cores).
    quick_configs = (dataclasses.replace(CONFIGS[0], videos=1),)
    tiny_configs = tuple(dataclasses.replace(c, videos=1, channels=8, length=24) for c in CONFIGS)
    methods = tuple(METHODS)
    peers = "gather (plain PyTorch)"

    def is_peer(self, method: str) -> bool:
        return not isinstance(METHODS[method], FastLocal)

    def absent(self, method: str, device: str) -> str | None:
        return METHODS[method].absent()

    def unavailable(self, method: str, config: Config, mode: str) -> str | None:
        return METHODS[method].absent() or METHODS[method].unavailable(config, mode)

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        m = METHODS[method]
        return functools.partial(m.run, m.make_inputs(config, mode), mode)
