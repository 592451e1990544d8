"""Banded attention with relative position bias: configurations and competing methods.

One definition, :class:`LocalAttention`, shared by ``benchmarks/test_local_attention.py`` and
``python -m fastlocal bench``. Every method computes, for q, k, v ``[B, H, T, D]`` and a bias table
``rpb [H, window]``, query i attending keys ``|j - i| <= window // 2`` inside the
sequence (``edge="clip"``) with logits ``q·k * D**-0.5 + rpb[h, j - i + window // 2]``;
only ``natten`` differs (see :class:`Natten`).

Methods:
  ``fastlocal[<backend>]``  :func:`fastlocal.local_attention` with ``backend=``
  ``naive``                 the plain PyTorch a user would write (:func:`naive_local_attention`)
  ``naive+compile``         the same function under ``torch.compile``
  ``flex_attention``        compiled FlexAttention, sliding-window BlockMask + bias score_mod
  ``sdpa_dense``            ``scaled_dot_product_attention`` with a dense [T, T] additive mask
  ``natten``                NATTEN's ``na1d`` when installed
  ``flash_attn``            flash-attn's sliding window (``window_size``) when installed (CUDA,
                            fp16/bf16): no bias, the speed of light for the band without RPB

Each configuration names its device: ``CONFIGS`` run on the CPU, ``GPU_CONFIGS`` on CUDA
(timed with CUDA events, peak memory from ``torch.cuda.max_memory_allocated``).

Modes: ``forward`` (inputs do not require grad) and ``forward_backward`` (gradients of
q, k, v and rpb for a fixed upstream gradient).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import fastlocal

from .suite import DtypeConfig, Suite, backend_absent, backend_method, dtype_name, failure, torch_has_cuda

DENSE_MASK_LIMIT_BYTES = 8 * 2**30


@dataclass(frozen=True)
class Config(DtypeConfig):
    """One problem size: q, k, v ``[B, H, T, D]``, a centred window, rpb ``[H, window]``."""

    B: int
    H: int
    T: int
    D: int
    window: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @property
    def name(self) -> str:
        name = f"B{self.B}-H{self.H}-T{self.T}-D{self.D}-w{self.window}-{dtype_name(self.dtype)}"
        return name if self.device == "cpu" else f"{name}-{self.device}"

    def gflop(self, mode: str) -> float:
        """:func:`useful_gflop` of one call in ``mode`` (gives results their GFLOP/s)."""
        return useful_gflop(self, mode)


# The suite: 4 heads of 32 channels, window 51, T from 2048 to 32768 (about 1 to 18 minutes at 30 fps).
CONFIGS = tuple(Config(B=1, H=4, T=T, D=32, window=51) for T in (2048, 8192, 32768))
# ``python -m fastlocal bench --quick``: the same problems up to T = 8192 (the whole run: ~2.5 minutes on 2 CPU cores).
QUICK_CONFIGS = tuple(c for c in CONFIGS if c.T <= 8192)
# The GPU suite (issue 4): bf16, window 51, T from 4096 to 65536 (2 minutes to 36 minutes at 30 fps).
GPU_CONFIGS = tuple(
    Config(B=B, H=H, T=T, D=D, window=51, dtype=torch.bfloat16, device="cuda")
    for T in (4096, 16384, 65536) for B in (1, 8) for H in (4, 8) for D in (32, 64)
)
# The largest T each method runs in --quick (beyond it, one call alone takes seconds on 2 CPU cores).
QUICK_MAX_T = {"sdpa_dense": 2048, "naive": 2048}


def useful_gflop(config: Config, mode: str = "forward") -> float:
    """Nominal GFLOP of one call: ``4·B·H·T·window·D`` forward (q·k and p·v, 2 FLOP per MAC).

    ``forward_backward`` counts 3x forward: the backward's four products (dv, dp, dq, dk)
    are useful work; recomputing the scores is not. Edge rows are counted as full windows.
    """
    forward = 4 * config.B * config.H * config.T * config.window * config.D / 1e9
    return forward if mode == "forward" else 3 * forward


@dataclass
class Inputs:
    """Everything one call needs, built before timing.

    q, k, v, grad_out: ``[B, H, T, D]``; rpb: ``[H, window]``. ``prepared`` holds what a
    method builds once per shape, as a user would cache it (a BlockMask, band indices).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    rpb: torch.Tensor
    grad_out: torch.Tensor
    window: int
    prepared: dict[str, Any] = field(default_factory=dict)


def naive_local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor, window: int
) -> torch.Tensor:
    """Banded attention as a user writes it in plain PyTorch: materialise every window.

    q, k, v ``[B, H, T, D]``, rpb ``[H, window]`` -> ``[B, H, T, D]``. Builds
    ``[B, H, T, window, D]`` key and value windows and ``[B, H, T, window]`` scores.
    """
    T, D = q.shape[-2:]
    half = window // 2
    # Zero-pad the sequence so every query has a full window, then view the windows.
    k_windows = F.pad(k, (0, 0, half, half)).unfold(2, window, 1).transpose(-1, -2)
    v_windows = F.pad(v, (0, 0, half, half)).unfold(2, window, 1).transpose(-1, -2)
    scores = torch.einsum("bhtd,bhtwd->bhtw", q, k_windows) * D**-0.5 + rpb[:, None, :]
    key = torch.arange(T, device=q.device)[:, None] + torch.arange(-half, half + 1, device=q.device)
    scores = scores.masked_fill((key < 0) | (key >= T), float("-inf"))  # padding is not a key
    return torch.einsum("bhtw,bhtwd->bhtd", scores.softmax(-1), v_windows)


class Method:
    """A named way to compute the attention above; subclasses define :meth:`forward`."""

    name: str
    compiles = False  # True when the first call compiles: its time says nothing about the speed

    def absent(self, device: str) -> str | None:
        """Why this method has nothing to run on any ``device`` configuration here, or None."""
        return None

    def unavailable(self, config: Config, mode: str) -> str | None:
        """Why this method cannot run ``config`` in ``mode`` (beyond :meth:`absent`), or None when it can."""
        return None

    def make_inputs(self, config: Config, mode: str, seed: int = 0) -> Inputs:
        """Random inputs for ``config``; leaves require grad only in ``forward_backward``."""
        grad = mode == "forward_backward"
        g = torch.Generator().manual_seed(seed)
        shape = (config.B, config.H, config.T, config.D)

        def leaf(*size: int, requires_grad: bool = grad) -> torch.Tensor:
            x = torch.randn(*size, generator=g, dtype=config.dtype).to(config.device)
            return x.requires_grad_(requires_grad)

        x = Inputs(leaf(*shape), leaf(*shape), leaf(*shape), leaf(config.H, config.window),
                   leaf(*shape, requires_grad=False), config.window)
        self.prepare(x)
        return x

    def prepare(self, x: Inputs) -> None:
        """Fill ``x.prepared`` with what this method builds once per shape (nothing by default)."""

    def forward(self, x: Inputs) -> torch.Tensor:
        """``[B, H, T, D]`` attention output."""
        raise NotImplementedError

    def forward_backward(self, x: Inputs) -> tuple[torch.Tensor, ...]:
        """Output and the gradients of q, k, v, rpb for the upstream gradient ``x.grad_out``."""
        out = self.forward(x)
        # autograd.grad instead of .backward(): nothing accumulates in .grad across rounds.
        grads = torch.autograd.grad(out, (x.q, x.k, x.v, x.rpb), x.grad_out)
        return (out.detach(), *grads)

    def run(self, x: Inputs, mode: str) -> tuple[torch.Tensor, ...]:
        """One timed call in ``mode``; returns every tensor it produced."""
        return (self.forward(x),) if mode == "forward" else self.forward_backward(x)


class FastLocal(Method):
    """:func:`fastlocal.local_attention` on one backend."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.name = backend_method(backend)

    def absent(self, device: str) -> str | None:
        # Read at call time: a kernel that lands later joins the benchmark by itself.
        return backend_absent("local_attention", self.backend, device)

    def forward(self, x: Inputs) -> torch.Tensor:
        return fastlocal.local_attention(x.q, x.k, x.v, x.window, x.rpb, backend=self.backend)


class Naive(Method):
    """:func:`naive_local_attention`, eager or under ``torch.compile``."""

    def __init__(self, compiled: bool) -> None:
        self.compiles = compiled
        self.name = "naive+compile" if compiled else "naive"

    @functools.cached_property
    def fn(self) -> Callable[..., torch.Tensor]:
        # Built on first use: torch.compile imports Dynamo, which costs every importer ~1.5 s.
        # Static shapes: one specialised graph per T, as a fixed-length training run gets.
        return torch.compile(naive_local_attention, dynamic=False) if self.compiles else naive_local_attention

    def forward(self, x: Inputs) -> torch.Tensor:
        return self.fn(x.q, x.k, x.v, x.rpb, x.window)


def _flex_score_mod(rpb: torch.Tensor, half: int) -> Callable[..., torch.Tensor]:
    def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
                  kv_idx: torch.Tensor) -> torch.Tensor:
        # Clamped: partial blocks also evaluate pairs outside the band, which the mask drops.
        return score + rpb[h, (kv_idx - q_idx + half).clamp(0, 2 * half)]

    return score_mod


class FlexAttention(Method):
    """Compiled ``torch.nn.attention.flex_attention``: sliding-window BlockMask, bias in score_mod."""

    name = "flex_attention"
    compiles = True

    def absent(self, device: str) -> str | None:
        try:
            import torch.nn.attention.flex_attention
        except ImportError as exc:
            return f"torch {torch.__version__} has no flex_attention ({exc})"
        return None

    def unavailable(self, config: Config, mode: str) -> str | None:
        # Forward is expected to work; a failure there is a real error, not a skip.
        refusal = self.backward_refusal if mode == "forward_backward" else None
        return refusal and f"flex_attention refuses {mode}: {refusal}"

    @functools.cached_property
    def backward_refusal(self) -> str | None:
        """What a tiny forward + backward raises (CPU refuses backward), or None."""
        from torch.nn.attention.flex_attention import flex_attention

        # Eager, not self.fn: after a compiled call raises, later compiled calls silently run the
        # unfused path (dense T x T scores: 25x slower at T = 2048, out of memory at T = 32768).
        q = torch.randn(1, 1, 128, 16, requires_grad=True)
        return failure(lambda: flex_attention(q, q, q).sum().backward())

    @functools.cached_property
    def fn(self) -> Callable[..., torch.Tensor]:
        from torch.nn.attention.flex_attention import flex_attention

        return torch.compile(flex_attention, dynamic=False)

    @functools.cached_property
    def make_block_mask(self) -> Callable[..., Any]:
        from torch.nn.attention.flex_attention import create_block_mask

        # Compiled: eager create_block_mask evaluates the mask on all T x T pairs (~17 GB at T = 32768).
        return torch.compile(create_block_mask, dynamic=False)

    def prepare(self, x: Inputs) -> None:
        half, T = x.window // 2, x.q.shape[2]

        def in_band(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
            return (q_idx - kv_idx).abs() <= half

        x.prepared["block_mask"] = self.make_block_mask(in_band, B=None, H=None, Q_LEN=T, KV_LEN=T,
                                                        device=x.q.device)

    def forward(self, x: Inputs) -> torch.Tensor:
        score_mod = _flex_score_mod(x.rpb, x.window // 2)
        return self.fn(x.q, x.k, x.v, score_mod=score_mod, block_mask=x.prepared["block_mask"])


class SdpaDense(Method):
    """``F.scaled_dot_product_attention`` with a dense ``[H, T, T]`` additive mask.

    The mask holds the bias inside the band and -inf outside; it is rebuilt from rpb
    in every call, because rpb is a trained parameter. The band's index table is built
    once per shape.
    """

    name = "sdpa_dense"

    def unavailable(self, config: Config, mode: str) -> str | None:
        size = config.H * config.T**2 * config.dtype.itemsize
        if size > DENSE_MASK_LIMIT_BYTES:
            limit = DENSE_MASK_LIMIT_BYTES / 2**30
            return f"dense [H, T, T] mask would take {size / 2**30:.1f} GiB (limit {limit:.0f} GiB)"
        return None

    def prepare(self, x: Inputs) -> None:
        T, half = x.q.shape[2], x.window // 2
        offset = torch.arange(T)[None, :] - torch.arange(T)[:, None]  # j - i
        x.prepared["bias_index"] = (offset + half).clamp(0, x.window - 1)
        x.prepared["outside"] = offset.abs() > half

    def forward(self, x: Inputs) -> torch.Tensor:
        mask = x.rpb[:, x.prepared["bias_index"]].masked_fill(x.prepared["outside"], float("-inf"))
        return F.scaled_dot_product_attention(x.q, x.k, x.v, attn_mask=mask)


class Natten(Method):
    """NATTEN's ``natten.functional.na1d`` (layout ``[B, T, H, D]``).

    Not the same function: NATTEN shifts edge windows inward (``edge="shift"``) and its
    current releases take no relative position bias, so only its speed and memory compare.
    """

    name = "natten"

    def __init__(self) -> None:
        self._tiny_failures: dict[str, str | None] = {}  # mode -> what a tiny call raised

    def absent(self, device: str) -> str | None:
        try:
            import natten.functional  # noqa: F401
        except ImportError:
            return "not installed"
        return None

    def unavailable(self, config: Config, mode: str) -> str | None:
        if mode not in self._tiny_failures:
            x = self.make_inputs(Config(B=1, H=1, T=128, D=16, window=3, device=config.device), mode)
            self._tiny_failures[mode] = failure(lambda: self.run(x, mode))
        error = self._tiny_failures[mode]
        return error and f"natten.functional.na1d fails on {config.device}: {error}"

    def forward(self, x: Inputs) -> torch.Tensor:
        import natten.functional

        q, k, v = (t.transpose(1, 2) for t in (x.q, x.k, x.v))
        return natten.functional.na1d(q, k, v, kernel_size=x.window).transpose(1, 2)

    def forward_backward(self, x: Inputs) -> tuple[torch.Tensor, ...]:
        out = self.forward(x)
        grads = torch.autograd.grad(out, (x.q, x.k, x.v), x.grad_out)  # rpb is unused
        return (out.detach(), *grads)


class FlashAttn(Method):
    """flash-attn's ``flash_attn_func`` with ``window_size=(w//2, w//2)`` (layout ``[B, T, H, D]``).

    No relative position bias (flash-attn has none): the speed of light for the band alone.
    """

    name = "flash_attn"

    def absent(self, device: str) -> str | None:
        if not torch_has_cuda():
            return f"not available (torch {torch.__version__} has no CUDA)"
        if device != "cuda":
            return "runs on CUDA tensors: python -m fastlocal bench --device cuda"
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return "not installed"
        return None

    def unavailable(self, config: Config, mode: str) -> str | None:
        if config.dtype not in (torch.float16, torch.bfloat16):
            return "flash-attn runs in fp16/bf16 only"
        return None

    def forward(self, x: Inputs) -> torch.Tensor:
        from flash_attn import flash_attn_func

        half = x.window // 2
        q, k, v = (t.transpose(1, 2) for t in (x.q, x.k, x.v))
        return flash_attn_func(q, k, v, window_size=(half, half)).transpose(1, 2)

    def forward_backward(self, x: Inputs) -> tuple[torch.Tensor, ...]:
        out = self.forward(x)
        grads = torch.autograd.grad(out, (x.q, x.k, x.v), x.grad_out)  # no bias
        return (out.detach(), *grads)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (FastLocal("cuda"), FastLocal("triton"), FastLocal("cpu"), FastLocal("reference"),
              Naive(compiled=False), Naive(compiled=True), FlexAttention(), SdpaDense(), Natten(), FlashAttn())
}


class LocalAttention(Suite):
    """Banded attention with RPB: fastlocal's backends against naive PyTorch (eager and compiled),
    compiled FlexAttention, dense-mask SDPA, NATTEN and flash-attn's sliding window."""

    op = "local_attention"
    config_type = Config
    configs = CONFIGS
    quick_configs = QUICK_CONFIGS
    tiny_configs = tuple(Config(B=1, H=4, T=T, D=32, window=51) for T in (64, 128))
    gpu_configs = GPU_CONFIGS
    # One head layout of the GPU suite, its two shorter lengths.
    gpu_quick_configs = tuple(c for c in GPU_CONFIGS if c.B == 1 and c.H == 4 and c.D == 32 and c.T <= 16384)
    methods = tuple(METHODS)
    peers = "every method but fastlocal[...]"

    def is_peer(self, method: str) -> bool:
        return not isinstance(METHODS[method], FastLocal)

    def absent(self, method: str, device: str) -> str | None:
        return METHODS[method].absent(device)

    def unavailable(self, method: str, config: Config, mode: str) -> str | None:
        return METHODS[method].absent(config.device) or METHODS[method].unavailable(config, mode)

    def quick_skip(self, method: str, config: Config) -> str | None:
        limit = QUICK_MAX_T.get(method)
        if limit is None or limit >= config.T:
            return None
        return f"--quick runs {method} only up to T={limit} (seconds per call beyond); run without --quick"

    def compiles(self, method: str) -> bool:
        return METHODS[method].compiles

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        m = METHODS[method]
        return functools.partial(m.run, m.make_inputs(config, mode), mode)

    def size(self, config: Config) -> int:
        return config.T

    def series(self, config: Config) -> str:
        device = "" if config.device == "cpu" else f" {config.device}"
        return f"B={config.B} H={config.H} D={config.D} window={config.window} {dtype_name(config.dtype)}{device}"
