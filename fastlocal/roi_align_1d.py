"""``roi_align_1d``: proposal feature extraction over time (G-TAD's Align1D, ETAD)."""

from __future__ import annotations

import torch

from . import _validate as check
from ._dispatch import kernels, resolve_backend
from .reference import roi_align_1d as reference

IMPLEMENTED = ("cuda", "triton", "cpu", "reference")
# Adaptive sampling takes ceil(len / P) samples per bin; beyond this, every backend would
# loop ~len / P times per bin (mirrors kMaxAdaptiveSamples in csrc/common/roi_align_1d_checks.h).
MAX_ADAPTIVE_SAMPLES = 65536
# The same cap on an explicit sampling_ratio: samples per bin, whichever way they are chosen.
MAX_SAMPLING_RATIO = MAX_ADAPTIVE_SAMPLES


def roi_align_1d(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    *,
    sampling_ratio: int = 0,
    aligned: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """Average linearly-interpolated samples of each RoI into ``output_size`` bins.

    Args:
        input: ``[B, C, T]`` features (float16/bfloat16/float32/float64).
        rois: ``[N, 3]`` rows ``(batch_index, start, end)`` in frame units; any float
            dtype (computed in float32, or float64 for float64 input). Batch indices
            must be exact integers in ``[0, B)``, checked on the values as given, before
            any cast (float64 ``1 - 1e-12`` is refused, not rounded to 1); coordinates
            must be finite, also once cast to the computation dtype. Reversed and
            out-of-range RoIs are defined (docs/design.md, "roi_align_1d").
        output_size: P, bins per RoI. The ``[N, C, P]`` output must fit in the memory of
            its device (checked before anything is allocated).
        sampling_ratio: samples per bin, at most ``MAX_SAMPLING_RATIO`` (65536); 0 =
            adaptive ``ceil(roi_length / P)``, which must not exceed
            ``MAX_ADAPTIVE_SAMPLES`` (65536) either.
        aligned: shift by -0.5 (pixel-centre convention) and do not clamp the length to 1.
    Returns:
        ``[N, C, P]`` in ``input.dtype``. Differentiable w.r.t. ``input`` only: ``rois``
        never receive a gradient, on every backend (they are detached, as in
        ``torchvision.ops.roi_align``), even when ``rois.requires_grad``.

    Non-finite input values: a sample at ``t`` reads frame ``floor(t)`` with weight
    ``1 - frac`` and frame ``floor(t) + 1`` with weight ``frac``, and a bin reads a frame
    only through taps of nonzero weight. So a NaN or +-inf in ``input`` reaches exactly
    the bins that sample its frame with a nonzero weight: a sample exactly on frame k
    (``frac == 0``), or past the last frame, does not read frame k + 1 (no ``0 * inf =
    NaN``, unlike torchvision). Backward likewise: a frame gets gradient only from the
    bins that read it with nonzero weight. Every backend follows this.

    The backward of ``cpu`` and ``reference`` is deterministic. ``cuda`` and ``triton``
    accumulate with float atomics unless ``torch.use_deterministic_algorithms(True)`` is
    set; then they sort the taps by input frame and reduce each frame in a fixed order
    (bitwise-reproducible, ``O(N * P * samples)`` extra memory).

    Every value check also runs under ``torch.compile`` (inside the custom op
    ``fastlocal::roi_align_1d_check_rois``, with the eager messages). ``meta`` tensors
    give a ``meta`` output of the right shape, without value checks.

    Matches ``torchvision.ops.roi_align`` on ``input[..., None]`` (``[B, C, T, 1]``) with
    boxes ``(b, 0, start, 1, end)`` (x spans the unit width, y is time) and output
    ``(P, 1)``, for finite input.
    """
    check.tensor("input", input, ndim=3)
    check.tensor("rois", rois, ndim=2)
    if rois.shape[1] != 3:
        raise ValueError(f"rois must have shape [N, 3] (batch_index, start, end), got {tuple(rois.shape)}")
    if input.shape[2] < 1:
        raise ValueError(f"input must have length T >= 1, got shape {tuple(input.shape)}")
    check.integer("output_size", output_size, minimum=1)
    check.integer("sampling_ratio", sampling_ratio, minimum=0)
    if sampling_ratio > MAX_SAMPLING_RATIO:
        raise ValueError(f"sampling_ratio must be <= {MAX_SAMPLING_RATIO} (samples per bin), got {sampling_ratio}")
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be a bool, got {type(aligned).__name__}")
    device = check.same_device(input=input, rois=rois)
    batch, channels = input.shape[0], input.shape[1]
    check.fits_in_memory(f"output_size={output_size}", (rois.shape[0], channels, output_size), input.dtype,
                         device, "an output [N, C, output_size]")
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    rois = rois.detach()  # no gradient to rois, on every backend (see the docstring)
    if device.type == "meta":  # shapes only: no values to check or compute with
        resolve_backend("roi_align_1d", device, backend, IMPLEMENTED)
        return input.new_empty((rois.shape[0], channels, output_size))
    if check.checking_values():
        rois = checked_rois(rois, batch, output_size, sampling_ratio, acc)
    else:  # traced by torch.compile: the same checks, run by the compiled graph
        rois = _check_rois_op(rois, batch, output_size, sampling_ratio, acc == torch.float64)
    name = resolve_backend("roi_align_1d", device, backend, IMPLEMENTED)
    if name == "reference":
        return reference.roi_align_1d(input, rois, output_size, sampling_ratio, aligned)
    return _roi_align_1d(input, rois, output_size, sampling_ratio, aligned, name)


def checked_rois(
    rois: torch.Tensor, batch: int, output_size: int, sampling_ratio: int, dtype: torch.dtype
) -> torch.Tensor:
    """The value checks of ``rois`` (on the values as given, before any cast), then ``rois`` in ``dtype``.

    Raises ``ValueError`` naming ``rois`` for a NaN / inf, a batch index that is not an
    exact integer in ``[0, batch)``, a coordinate that overflows ``dtype``, and (adaptive
    sampling) a RoI needing more than ``MAX_ADAPTIVE_SAMPLES`` samples per bin.
    """
    if rois.numel() == 0:
        return rois.to(dtype)
    if not torch.isfinite(rois).all():
        raise ValueError("rois must be finite (found NaN or inf)")
    index = rois[:, 0].double()  # exact for every float dtype: nothing is rounded before the check
    if not ((index >= 0) & (index < batch) & (index == index.floor())).all():
        raise ValueError(f"rois[:, 0] must be integer batch indices in [0, {batch}), "
                         f"got values in [{index.min().item()}, {index.max().item()}]")
    cast = rois.to(dtype)
    if cast.dtype.itemsize < rois.dtype.itemsize:  # float64 rois for float32 computation
        if not torch.isfinite(cast).all():
            raise ValueError(f"rois must be finite in {dtype} (the computation dtype of this input), got "
                             f"|values| up to {rois.abs().max().item():.6g}")
        if batch > 2**24 and not torch.equal(cast[:, 0].double(), index):  # float32 integers are exact to 2^24
            raise ValueError(f"rois[:, 0] must be batch indices exactly representable in {dtype}")
    if sampling_ratio == 0:
        longest = ((cast[:, 2] - cast[:, 1]) / output_size).max().item()
        if longest > MAX_ADAPTIVE_SAMPLES:
            raise ValueError(f"rois: adaptive sampling (sampling_ratio=0) would take {longest:.3g} samples per bin "
                             f"(limit {MAX_ADAPTIVE_SAMPLES}); pass sampling_ratio > 0 or shorter RoIs")
    return cast


@torch.library.custom_op("fastlocal::roi_align_1d_check_rois", mutates_args=())
def _check_rois_op(
    rois: torch.Tensor, batch: int, output_size: int, sampling_ratio: int, float64: bool
) -> torch.Tensor:
    """:func:`checked_rois` as a graph node: compiled code runs it with the real values.

    Returns a contiguous copy in the computation dtype (a custom op may not return its
    input), which the kernels consume, so the node cannot be dropped from the graph.
    """
    out = checked_rois(rois, batch, output_size, sampling_ratio, torch.float64 if float64 else torch.float32)
    out = out.contiguous()
    return out.clone() if out is rois else out


@_check_rois_op.register_fake
def _(rois, batch, output_size, sampling_ratio, float64):
    return rois.new_empty(rois.shape, dtype=torch.float64 if float64 else torch.float32)


@torch.library.custom_op("fastlocal::roi_align_1d", mutates_args=())
def _roi_align_1d(
    input: torch.Tensor, rois: torch.Tensor, output_size: int, sampling_ratio: int, aligned: bool, backend: str
) -> torch.Tensor:
    return kernels(backend, "roi_align_1d").roi_align_1d_forward(input, rois, output_size, sampling_ratio, aligned)


@_roi_align_1d.register_fake
def _(input, rois, output_size, sampling_ratio, aligned, backend):
    return input.new_empty((rois.shape[0], input.shape[1], output_size))


@torch.library.custom_op("fastlocal::roi_align_1d_backward", mutates_args=())
def _roi_align_1d_backward(
    grad: torch.Tensor, rois: torch.Tensor, batch: int, length: int, sampling_ratio: int, aligned: bool,
    backend: str,
) -> torch.Tensor:
    return kernels(backend, "roi_align_1d").roi_align_1d_backward(
        grad, rois, batch, length, sampling_ratio, aligned
    )


@_roi_align_1d_backward.register_fake
def _(grad, rois, batch, length, sampling_ratio, aligned, backend):
    return grad.new_empty((batch, grad.shape[1], length))


def _setup_context(ctx, inputs, output):
    input, rois, _, sampling_ratio, aligned, backend = inputs
    ctx.save_for_backward(rois)
    ctx.args = (input.shape[0], input.shape[2], sampling_ratio, aligned, backend)


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    grad_input = _roi_align_1d_backward(grad, rois, *ctx.args) if ctx.needs_input_grad[0] else None
    return grad_input, None, None, None, None, None


_roi_align_1d.register_autograd(_backward, setup_context=_setup_context)
