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
            must be integers in ``[0, B)``; coordinates must be finite. Reversed and
            out-of-range RoIs are defined (docs/design.md, "roi_align_1d").
        output_size: P, bins per RoI.
        sampling_ratio: samples per bin; 0 = adaptive ``ceil(roi_length / P)``.
        aligned: shift by -0.5 (pixel-centre convention) and do not clamp the length to 1.
    Returns:
        ``[N, C, P]`` in ``input.dtype``. Differentiable w.r.t. ``input``.

    The backward of ``cpu`` and ``reference`` is deterministic. ``cuda`` and ``triton``
    accumulate with float atomics unless ``torch.use_deterministic_algorithms(True)`` is
    set; then they sort the taps by input frame and reduce each frame in a fixed order
    (bitwise-reproducible, ``O(N * P * samples)`` extra memory).

    Matches ``torchvision.ops.roi_align`` on ``input[..., None]`` with boxes
    ``(b, start, 0, end, 1)`` and output ``(P, 1)``.
    """
    check.tensor("input", input, ndim=3)
    check.tensor("rois", rois, ndim=2)
    if rois.shape[1] != 3:
        raise ValueError(f"rois must have shape [N, 3] (batch_index, start, end), got {tuple(rois.shape)}")
    if input.shape[2] < 1:
        raise ValueError(f"input must have length T >= 1, got shape {tuple(input.shape)}")
    check.integer("output_size", output_size, minimum=1)
    check.integer("sampling_ratio", sampling_ratio, minimum=0)
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be a bool, got {type(aligned).__name__}")
    device = check.same_device(input=input, rois=rois)
    rois = rois.to(torch.float64 if input.dtype == torch.float64 else torch.float32)
    if check.checking_values() and rois.numel():
        if not torch.isfinite(rois).all():
            raise ValueError("rois must be finite (found NaN or inf)")
        batch = rois[:, 0]
        if not ((batch >= 0) & (batch < input.shape[0]) & (batch == batch.floor())).all():
            raise ValueError(f"rois[:, 0] must be integer batch indices in [0, {input.shape[0]}), "
                             f"got values in [{batch.min().item()}, {batch.max().item()}]")
        longest = ((rois[:, 2] - rois[:, 1]) / output_size).max().item()
        if sampling_ratio == 0 and longest > MAX_ADAPTIVE_SAMPLES:
            raise ValueError(f"rois: adaptive sampling (sampling_ratio=0) would take {longest:.3g} samples per bin "
                             f"(limit {MAX_ADAPTIVE_SAMPLES}); pass sampling_ratio > 0 or shorter RoIs")
    name = resolve_backend("roi_align_1d", device, backend, IMPLEMENTED)
    if name == "reference":
        return reference.roi_align_1d(input, rois, output_size, sampling_ratio, aligned)
    return _roi_align_1d(input, rois, output_size, sampling_ratio, aligned, name)


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
