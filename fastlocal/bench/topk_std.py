"""VidTr's topK-std pooled temporal attention: benchmark configurations and methods.

One definition, :class:`TopkStd`, shared by ``benchmarks/test_topk_std.py`` and ``python -m fastlocal bench``.
Every method computes :func:`fastlocal.topk_std_attention` for q, k, v ``[B, H, T, D]``
(B folds clips x spatial patches, T counts the class token) keeping ``keep`` rows plus
the class row, and in ``forward_backward`` mode also the gradients of q, k and v.

Methods (``fastlocal[<backend>]``): ``fastlocal[reference]`` is the unfused PyTorch path
(softmax -> std -> sort -> gather -> matmul, the attention matrix written several times);
``cpu``, ``triton`` and ``cuda`` are the fused kernels. Each configuration names its device:
``CONFIGS`` run on the CPU (``cpu`` against ``reference``), ``GPU_CONFIGS``, the same layers,
on CUDA (``cuda`` and ``triton`` against ``reference``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

import fastlocal
from fastlocal._dispatch import triton_interpreted

from .suite import DtypeConfig, Suite, backend_absent, backend_method


@dataclass(frozen=True)
class Config(DtypeConfig):
    """One temporal attention layer: q, k, v ``[B, H, T, D]``, ``keep`` ranked rows kept."""

    label: str
    B: int
    H: int
    T: int
    D: int
    keep: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @property
    def name(self) -> str:
        return self.label if self.device == "cpu" else f"{self.label}-{self.device}"


# VidTr's compact models at 224^2 (14 x 14 patches), 12 heads of 64 channels, batch of 8
# clips: the temporal attention of C-VidTr-S (8 frames + class token, keeps 6) and of
# C-VidTr-L (32 frames + class token, keeps 16).
CONFIGS = (
    Config("C-VidTr-S", B=8 * 196, H=12, T=8 + 1, D=64, keep=6),
    Config("C-VidTr-L", B=8 * 196, H=12, T=32 + 1, D=64, keep=16),
)
GPU_CONFIGS = tuple(dataclasses.replace(c, device="cuda") for c in CONFIGS)
BACKENDS = ("cpu", "reference", "triton", "cuda")


@dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: torch.Tensor
    keep: int


def make_inputs(config: Config, mode: str, seed: int = 0) -> Inputs:
    """Random inputs on ``config.device``; q, k, v require grad only in ``forward_backward``."""
    g = torch.Generator().manual_seed(seed)
    shape = (config.B, config.H, config.T, config.D)

    def leaf(*size: int) -> torch.Tensor:
        t = torch.randn(*size, generator=g, dtype=config.dtype).to(config.device)
        return t.requires_grad_(mode == "forward_backward")

    grad = torch.randn(config.B, config.H, config.keep + 1, config.D, generator=g, dtype=config.dtype)
    return Inputs(leaf(*shape), leaf(*shape), leaf(*shape), grad.to(config.device), config.keep)


def run(backend: str, x: Inputs, mode: str) -> tuple[torch.Tensor, ...]:
    """One call: ``(out,)`` forward, or ``(out, dq, dk, dv)`` for the fixed upstream gradient.

    The selected row indices (integers) are not returned: only floating-point outputs are checked.
    """
    out, _ = fastlocal.topk_std_attention(x.q, x.k, x.v, x.keep, backend=backend)
    if mode == "forward":
        return (out,)
    # autograd.grad instead of .backward(): nothing accumulates in .grad across rounds.
    return (out.detach(), *torch.autograd.grad(out, (x.q, x.k, x.v), x.grad_out))


class TopkStd(Suite):
    """VidTr's fused topK-std attention against the unfused PyTorch path (the reference backend)."""

    op = "topk_std_attention"
    config_type = Config
    configs = CONFIGS
    # C-VidTr-S on one clip's 196 patches instead of a batch of 8 clips.
    quick_configs = (dataclasses.replace(CONFIGS[0], label=f"{CONFIGS[0].label}-1clip", B=196),)
    tiny_configs = tuple(dataclasses.replace(c, label=f"{c.label}-tiny", B=2, D=8) for c in CONFIGS)
    gpu_configs = GPU_CONFIGS
    gpu_quick_configs = tuple(dataclasses.replace(c, device="cuda") for c in quick_configs)
    backends: ClassVar[dict[str, str]] = {backend_method(b): b for b in BACKENDS}
    methods = tuple(backends)
    peers = "fastlocal[reference] (the unfused path: softmax, std, sort, gather, matmul)"

    def is_peer(self, method: str) -> bool:
        return self.backends[method] == "reference"

    def absent(self, method: str, device: str) -> str | None:
        backend = self.backends[method]
        reason = backend_absent("topk_std", backend, device)
        if reason is None and backend == "triton" and triton_interpreted():
            return "runs interpreted here (TRITON_INTERPRET=1): no speed to measure"
        return reason

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        backend, x = self.backends[method], make_inputs(config, mode)
        return lambda: run(backend, x, mode)
