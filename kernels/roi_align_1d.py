"""Triton kernels of ``roi_align_1d`` (backend ``triton``): forward and backward.

Semantics as ``csrc/cpu/roi_align_1d.cpp`` (docs/design.md,
"roi_align_1d"): bin p of RoI ``(b, start, end)`` averages ``count`` linearly interpolated
samples at ``t = start + p * bin + (i + 0.5) * bin / count`` with torchvision's border
rule. Every kernel evaluates the samples with :func:`_sample`, divisions IEEE-rounded and
no FMA contraction (``enable_fp_fusion=False``), so sample positions and weights are
those of the CPU kernel. A tap of weight 0 (the right tap of a sample exactly on a frame,
or past the last frame) is neither read nor scattered to, as ``fastlocal.roi_align_1d``
defines for non-finite input (the CPU kernel still reads it; see
tests/test_roi_align_1d.py::test_zero_weight_taps_read_nothing). Bins are tiled in blocks
of at most ``MAX_BLOCK_P``.
Inputs of any strides; float16 / bfloat16 / float32 accumulate in float32, float64 in
float64 (RoIs come in that accumulation type, see ``fastlocal/roi_align_1d.py``).

Backward, two schemes:

* default: one program per (RoI block, channel block) adds ``grad * w`` to the two frames
  of each sample with float atomics into a zeroed accumulation-type buffer (summation
  order varies from run to run);
* deterministic (``torch.are_deterministic_algorithms_enabled()``): sort-and-reduce. A
  first kernel writes every sample's two taps as (key = b * T + frame, weight), the slot
  giving the source (RoI, bin); a stable sort by key groups the taps of each input frame
  in a fixed order (their slot order); in a second kernel each gradient element (b, c, t)
  is one lane of a (frame block, channel block) program, which sums its frame's taps'
  ``w * grad[n, c, p]`` one after the other in that order and stores the gradient once.
  No atomics: bitwise-reproducible run to run. Extra memory is ``O(N * P * max_count)``
  taps, independent of C.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastlocal.reference._dtypes import acc_dtype

_BLOCK_C = 32  # channels per program
_BLOCK_F = 16  # input frames per program of the deterministic reduction
# Bins per program at most: larger P is tiled over programs (a [BLOCK_R, BLOCK_C, BLOCK_P]
# tile must stay under Triton's 2^20 elements per tensor, i.e. P <= 32768 untiled).
MAX_BLOCK_P = 1024


@triton.jit
def _div(a, b, F64: tl.constexpr):
    """IEEE round-to-nearest division (float32 ``/`` may compile to an approximate one)."""
    if F64:
        return a / b
    else:
        return tl.math.fdiv(a, b, ieee_rounding=True)


@triton.jit
def _rois(rois_ptr, r, rmask, B, P, SR, ALIGNED: tl.constexpr, F64: tl.constexpr):
    """RoIs r (a vector): (batch, start, bin, count, 1 / max(count, 1)); count <= 0 means no
    samples, and masked-out RoIs get count 0."""
    b = tl.load(rois_ptr + 3 * r, mask=rmask, other=0).to(tl.int64)
    b = tl.minimum(tl.maximum(b, 0), B - 1)  # checked by the caller; keeps loads in bounds regardless
    start = tl.load(rois_ptr + 3 * r + 1, mask=rmask, other=0)
    end = tl.load(rois_ptr + 3 * r + 2, mask=rmask, other=0)
    if ALIGNED:
        start = start - 0.5
        length = (end - 0.5) - start
    else:
        length = tl.maximum(end - start, 1.0)
    bin = _div(length, P, F64)
    count = tl.where(SR > 0, SR, tl.ceil(bin).to(tl.int32))
    count = tl.where(rmask, count, 0)
    inv = _div(tl.full(length.shape, 1.0, length.dtype), tl.maximum(count, 1).to(length.dtype), F64)
    return b, start, bin, count, inv


@triton.jit
def _sample(start, bin, count, inv, p, i, T, F64: tl.constexpr):
    """Sample i of RoIs x bins (``[R, 1]`` RoI vectors, ``[1, P]`` bins): (used, lo, hi, w_lo,
    w_hi) as ``[R, P]``, with 0 <= lo <= hi <= T - 1. Callers read (or scatter to) a tap only
    where it is used and its weight is nonzero: ``w_hi`` is 0 for a sample exactly on a frame
    or past the last one, and that frame must not be read (0 * inf = NaN)."""
    pf = p.to(start.dtype)
    # Samples i >= count are unused; max(count, 1) only keeps their t finite.
    t = (start + pf * bin) + _div((i + 0.5) * bin, tl.maximum(count, 1).to(start.dtype), F64)
    used = (t >= -1.0) & (t <= T) & (i < count)
    t = tl.maximum(t, 0.0)
    lo = tl.floor(t).to(tl.int64)
    at_end = lo >= T - 1
    lo = tl.where(at_end, T - 1, lo)
    hi = tl.where(at_end, T - 1, lo + 1)
    frac = tl.where(at_end, 0.0, t - lo.to(t.dtype))
    return used, lo, hi, (1.0 - frac) * inv, frac * inv


@triton.jit
def _forward_kernel(x_ptr, rois_ptr, out_ptr, N, B, C, T, P, P_BLOCKS, SR, sxb, sxc, sxt, ALIGNED: tl.constexpr,
                    F64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (RoI block x bin block, channel block): a [BLOCK_R, BLOCK_C, BLOCK_P] tile of the output."""
    pid = tl.program_id(0)
    r = (pid // P_BLOCKS).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = (pid % P_BLOCKS).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    rmask = r < N
    b, start, bin, count, inv = _rois(rois_ptr, r, rmask, B, P, SR, ALIGNED, F64)
    rows = x_ptr + b[:, None, None] * sxb + c[None, :, None].to(tl.int64) * sxc
    cp = (c < C)[None, :, None] & (p < P)[None, None, :]
    acc = tl.zeros((BLOCK_R, BLOCK_C, BLOCK_P), start.dtype)
    for i in range(0, tl.max(count)):
        used, lo, hi, w_lo, w_hi = _sample(start[:, None], bin[:, None], count[:, None], inv[:, None], p[None, :],
                                           i, T, F64)
        m = cp & used[:, None, :]
        # A tap of weight 0 reads nothing (x stays 0 there): inf / NaN in its frame stays out.
        x_lo = tl.load(rows + lo[:, None, :] * sxt, mask=m & (w_lo != 0)[:, None, :], other=0.0).to(acc.dtype)
        x_hi = tl.load(rows + hi[:, None, :] * sxt, mask=m & (w_hi != 0)[:, None, :], other=0.0).to(acc.dtype)
        acc += tl.where(m, w_lo[:, None, :] * x_lo + w_hi[:, None, :] * x_hi, 0.0)
    out = out_ptr + (r[:, None, None] * C + c[None, :, None]) * P + p[None, None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=cp & rmask[:, None, None])


@triton.jit
def _backward_atomic_kernel(g_ptr, rois_ptr, dx_ptr, N, B, C, T, P, P_BLOCKS, SR, sgn, sgc, sgp,
                            ALIGNED: tl.constexpr, F64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_P: tl.constexpr):
    """Program (RoI block x bin block, channel block): scatter its grad tile with float atomics."""
    pid = tl.program_id(0)
    r = (pid // P_BLOCKS).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = (pid % P_BLOCKS).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    rmask = r < N
    b, start, bin, count, inv = _rois(rois_ptr, r, rmask, B, P, SR, ALIGNED, F64)
    cp = (c < C)[None, :, None] & (p < P)[None, None, :] & rmask[:, None, None]
    g = tl.load(g_ptr + r[:, None, None] * sgn + c[None, :, None].to(tl.int64) * sgc + p[None, None, :] * sgp,
                mask=cp, other=0.0).to(dx_ptr.dtype.element_ty)
    rows = dx_ptr + (b[:, None, None] * C + c[None, :, None]) * T
    for i in range(0, tl.max(count)):
        used, lo, hi, w_lo, w_hi = _sample(start[:, None], bin[:, None], count[:, None], inv[:, None], p[None, :],
                                           i, T, F64)
        m = cp & used[:, None, :]
        tl.atomic_add(rows + lo[:, None, :], w_lo[:, None, :] * g, mask=m & (w_lo != 0)[:, None, :], sem="relaxed")
        tl.atomic_add(rows + hi[:, None, :], w_hi[:, None, :] * g, mask=m & (w_hi != 0)[:, None, :], sem="relaxed")


@triton.jit
def _taps_kernel(rois_ptr, key_ptr, w_ptr, N, B, T, P, P_BLOCKS, SR, MAX_COUNT, ALIGNED: tl.constexpr,
                 F64: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    """Taps of RoI n: slot ((n * P + p) * MAX_COUNT + i) * 2 + {0: lo, 1: hi} gets
    (b * T + frame, weight); unused slots and taps of weight 0 keep the caller's sentinel
    key B * T. Program: RoI block x bin block."""
    pid = tl.program_id(0)
    r = (pid // P_BLOCKS).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    p = (pid % P_BLOCKS).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    rmask = r < N
    b, start, bin, count, inv = _rois(rois_ptr, r, rmask, B, P, SR, ALIGNED, F64)
    for i in range(0, tl.minimum(tl.max(count), MAX_COUNT)):
        used, lo, hi, w_lo, w_hi = _sample(start[:, None], bin[:, None], count[:, None], inv[:, None], p[None, :],
                                           i, T, F64)
        m = used & (p < P)[None, :]
        slot = ((r[:, None] * P + p[None, :]) * MAX_COUNT + i) * 2
        frame = b[:, None] * T
        tl.store(key_ptr + slot, frame + lo, mask=m & (w_lo != 0))
        tl.store(w_ptr + slot, w_lo, mask=m & (w_lo != 0))
        tl.store(key_ptr + slot + 1, frame + hi, mask=m & (w_hi != 0))
        tl.store(w_ptr + slot + 1, w_hi, mask=m & (w_hi != 0))


@triton.jit
def _reduce_kernel(g_ptr, src_ptr, w_ptr, offsets_ptr, dx_ptr, F, C, T, P, sgn, sgc, sgp,
                   BLOCK_F: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx[b, c, t] = sum of w * grad[n, c, p] over the taps of frame f = b * T + t, one tap
    after the other in sorted order; program (frame block, channel block)."""
    f = tl.program_id(0).to(tl.int64) * BLOCK_F + tl.arange(0, BLOCK_F)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    fmask = f < F
    cmask = c < C
    k0 = tl.load(offsets_ptr + f, mask=fmask, other=0)
    taps = tl.load(offsets_ptr + f + 1, mask=fmask, other=0) - k0
    acc = tl.zeros((BLOCK_F, BLOCK_C), w_ptr.dtype.element_ty)
    for k in range(0, tl.max(taps)):
        km = k < taps
        src = tl.load(src_ptr + k0 + k, mask=km, other=0)
        w = tl.load(w_ptr + k0 + k, mask=km, other=0.0)
        g = tl.load(g_ptr + (src // P)[:, None] * sgn + c[None, :].to(tl.int64) * sgc + (src % P)[:, None] * sgp,
                    mask=km[:, None] & cmask[None, :], other=0.0)
        acc += w[:, None] * g.to(acc.dtype)
    out = dx_ptr + ((f // T)[:, None] * C + c[None, :]) * T + (f % T)[:, None]
    tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=fmask[:, None] & cmask[None, :])


def _launch_args(rois: torch.Tensor, output_size: int, aligned: bool) -> dict:
    block_p = min(triton.next_power_of_2(output_size), MAX_BLOCK_P)
    return {
        "ALIGNED": aligned,
        "F64": rois.dtype == torch.float64,
        "BLOCK_P": block_p,
        "BLOCK_R": min(16, max(1, 128 // block_p)),  # RoIs per program: ~128 bins
        "enable_fp_fusion": False,  # the CPU kernel's rounding: no contracted multiply-adds
    }


def _check(rois: torch.Tensor, dtype: torch.dtype) -> None:
    if rois.dtype != acc_dtype(dtype):
        raise TypeError(f"rois must be {acc_dtype(dtype)} for {dtype} input, got {rois.dtype}")


def roi_align_1d_forward(
    input: torch.Tensor, rois: torch.Tensor, output_size: int, sampling_ratio: int, aligned: bool
) -> torch.Tensor:
    """``[B, C, T]`` x ``[N, 3]`` (checked by ``fastlocal.roi_align_1d``) -> ``[N, C, P]``."""
    _check(rois, input.dtype)
    B, C, T = input.shape
    N = rois.shape[0]
    out = torch.empty((N, C, output_size), dtype=input.dtype, device=input.device)
    if N == 0 or C == 0:
        return out
    rois = rois.contiguous()
    args = _launch_args(rois, output_size, aligned)
    p_blocks = triton.cdiv(output_size, args["BLOCK_P"])
    grid = (triton.cdiv(N, args["BLOCK_R"]) * p_blocks, triton.cdiv(C, _BLOCK_C))
    _forward_kernel[grid](input, rois, out, N, B, C, T, output_size, p_blocks, sampling_ratio, *input.stride(),
                          BLOCK_C=_BLOCK_C, **args)
    return out


def roi_align_1d_backward(
    grad: torch.Tensor, rois: torch.Tensor, batch: int, length: int, sampling_ratio: int, aligned: bool
) -> torch.Tensor:
    """Gradient of the input, ``[batch, C, length]`` in ``grad``'s dtype (see the module docstring)."""
    _check(rois, grad.dtype)
    N, C, P = grad.shape
    acc = acc_dtype(grad.dtype)
    if N == 0 or C == 0:
        return torch.zeros((batch, C, length), dtype=grad.dtype, device=grad.device)
    rois = rois.contiguous()
    args = _launch_args(rois, P, aligned)
    p_blocks = triton.cdiv(P, args["BLOCK_P"])
    roi_blocks = triton.cdiv(N, args["BLOCK_R"]) * p_blocks  # x bin blocks
    if not torch.are_deterministic_algorithms_enabled():
        dx = torch.zeros((batch, C, length), dtype=acc, device=grad.device)
        _backward_atomic_kernel[(roi_blocks, triton.cdiv(C, _BLOCK_C))](
            grad, rois, dx, N, batch, C, length, P, p_blocks, sampling_ratio, *grad.stride(), BLOCK_C=_BLOCK_C,
            **args
        )
        return dx.to(grad.dtype)

    # Deterministic: sort-and-reduce (module docstring).
    if sampling_ratio > 0:
        max_count = sampling_ratio
    else:  # the kernels' count, ceil(len / P), with the same IEEE operations
        shift = 0.5 if aligned else 0.0
        length_ = (rois[:, 2] - shift) - (rois[:, 1] - shift)
        if not aligned:
            length_ = length_.clamp(min=1.0)
        max_count = max(int(torch.ceil(length_ / P).max().item()), 1)
    sentinel = batch * length
    keys = torch.full((N * P * max_count * 2,), sentinel, dtype=torch.int64, device=grad.device)
    weights = torch.zeros(keys.shape, dtype=acc, device=grad.device)
    _taps_kernel[(roi_blocks,)](rois, keys, weights, N, batch, length, P, p_blocks, sampling_ratio, max_count,
                                **args)
    keys, order = torch.sort(keys, stable=True)
    source = order // (max_count * 2)  # n * P + p
    weights = weights[order]
    frames = torch.arange(sentinel + 1, dtype=torch.int64, device=grad.device)
    offsets = torch.searchsorted(keys, frames)  # taps of frame f: [offsets[f], offsets[f + 1])
    dx = torch.empty((batch, C, length), dtype=grad.dtype, device=grad.device)
    _reduce_kernel[(triton.cdiv(sentinel, _BLOCK_F), triton.cdiv(C, _BLOCK_C))](
        grad, source, weights, offsets, dx, sentinel, C, length, P, *grad.stride(), BLOCK_F=_BLOCK_F,
        BLOCK_C=_BLOCK_C, enable_fp_fusion=False,
    )
    return dx
