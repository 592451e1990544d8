"""Correctness of ``fastlocal.roi_align_1d`` on every backend, forward and backward.

The oracle is :func:`brute_roi_align`, a plain-Python loop written from docs/design.md
("roi_align_1d"). It encodes ``torchvision.ops.roi_align``'s rule
on a ``[B, C, T, 1]`` input (torchvision cannot be installed here): per RoI, channel,
bin and sample, with its border rule (``t < -1`` or ``t > T`` contributes 0, ``t <= 0``
clamps to 0, ``floor(t) >= T - 1`` reads ``x[T - 1]``), divisor ``max(n, 1)``, and
``aligned`` shifting start/end by -0.5 without clamping the length.

Every backend (``reference``, ``cpu``, ``triton``, ``cuda``) runs each test; gradients
are checked against the reference backend's (autograd through its ``embedding_bag``
formulation). GPU backends are marked ``gpu`` and run on CUDA tensors; ``triton`` runs on
CPU tensors under ``TRITON_INTERPRET=1`` (set by conftest.py without a GPU), at small
sizes. A backend that cannot run here is skipped with the reason. ``cuda`` and ``triton``
have two backward kernels (float atomics; sort-and-reduce under
``torch.use_deterministic_algorithms(True)``): the backward tests run both.
"""

from __future__ import annotations

import contextlib
import importlib
import math

import pytest
import torch
from backends import assert_same_acceptance, assert_same_refusal, backend_params, device_of
from hypothesis import event, given, settings
from hypothesis import strategies as st

import fastlocal
from fastlocal._dispatch import triton_interpreted

RA = importlib.import_module("fastlocal.roi_align_1d")  # fastlocal.roi_align_1d is the function
# float64 backends follow the same formula as the oracle; only summation order and
# (with FASTLOCAL_NATIVE=1) FMA contraction may differ, i.e. a few ulps of O(1) values.
F64 = {"rtol": 1e-12, "atol": 1e-12}


BACKENDS = backend_params("roi_align_1d", RA.IMPLEMENTED, ("reference", "cpu", "triton", "cuda"))
OTHERS = BACKENDS[1:]  # checked against the reference backend
# Backends with a second, deterministic backward kernel (selected by torch's global flag).
TWO_BACKWARDS = ("triton", "cuda")


def small(backend: str, large: int, interpreted: int) -> int:
    """A problem size: ``interpreted`` when the backend runs under Triton's interpreter."""
    return interpreted if backend == "triton" and triton_interpreted() else large


@contextlib.contextmanager
def deterministic(enabled: bool):
    """``torch.use_deterministic_algorithms(enabled)`` inside the block only."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def backward_modes(backend: str) -> tuple[bool, ...]:
    """The deterministic-flag settings that select different backward kernels of ``backend``."""
    return (False, True) if backend in TWO_BACKWARDS else (False,)


def _interp(row: list[float], t: float) -> float:
    """torchvision's 1-D linear interpolation of ``row`` at ``t`` (its border rule), reading a
    frame only with a nonzero weight (frame lo + 1 is not read when t is exactly on frame lo)."""
    T = len(row)
    if t < -1.0 or t > T:
        return 0.0
    t = max(t, 0.0)
    lo = math.floor(t)
    if lo >= T - 1:
        return row[T - 1]
    frac = t - lo
    value = (1.0 - frac) * row[lo]
    return value + frac * row[lo + 1] if frac != 0 else value


def brute_roi_align(
    x: torch.Tensor, rois: torch.Tensor, P: int, sampling_ratio: int, aligned: bool
) -> torch.Tensor:
    """Loop oracle: ``[B, C, T]`` x ``[N, 3]`` -> ``[N, C, P]`` float64."""
    xs = x.double().tolist()
    C = x.shape[1]
    out = []
    for b, start, end in rois.double().tolist():
        if aligned:
            start, end = start - 0.5, end - 0.5
        length = end - start
        if not aligned:
            length = max(length, 1.0)
        bin_size = length / P
        n = sampling_ratio if sampling_ratio > 0 else math.ceil(length / P)
        roi_out = []
        for c in range(C):
            row = xs[int(b)][c]
            bins = []
            for p in range(P):
                total = 0.0
                for i in range(n):  # n <= 0 (reversed aligned RoI): no sample at all
                    total += _interp(row, start + p * bin_size + (i + 0.5) * bin_size / n)
                bins.append(total / max(n, 1))
            roi_out.append(bins)
        out.append(roi_out)
    return torch.tensor(out, dtype=torch.float64).reshape(len(out), C, P)


def special_rois(B: int, T: int) -> torch.Tensor:
    """Fractional, zero-length, reversed, partly/fully outside and border-exact RoIs."""
    rows = [
        (0, 1.3, 4.7), (1 % B, 0.25, T - 0.25), (B - 1, 0.0, float(T)),  # fractional / whole
        (0, 3.0, 3.0), (0, 0.0, 0.0), (1 % B, T - 0.5, T - 0.5), (B - 1, T, T),  # zero length
        (0, 6.2, 2.1), (1 % B, 1.0, 0.5), (B - 1, T + 1.0, -2.0),  # reversed
        (0, -2.5, 3.2), (1 % B, T - 2.5, T + 2.0), (B - 1, -1.5, T + 1.5),  # partly outside
        (0, -8.0, -3.0), (1 % B, T + 1.5, T + 10.0), (B - 1, -1.2, -1.05), (0, T + 0.2, T + 0.9),  # outside
        (0, -1.5, -0.5), (1 % B, T - 0.5, T + 0.5), (B - 1, -0.5, 0.5),  # samples exactly at -1, T, 0
        (0, 0.7, 2.0 * T),  # long: many adaptive samples per bin
    ]
    return torch.tensor(rows, dtype=torch.float64)


def run(x, rois, P, sr=0, aligned=False, backend="cpu"):
    """``fastlocal.roi_align_1d`` on the backend's device, with positional defaults, for brevity.

    CPU tensors go to the backend's device and the result comes back to the CPU; both
    copies are differentiable, so gradients land in the CPU leaf ``x``.
    """
    dev = device_of(backend)
    out = fastlocal.roi_align_1d(x.to(dev), rois.to(dev), P, sampling_ratio=sr, aligned=aligned, backend=backend)
    return out.cpu()


def input_grad(x, rois, P, sr, aligned, backend, grad) -> torch.Tensor:
    """d(sum(out * grad)) / dx on ``backend``, as a CPU tensor."""
    leaf = x.detach().clone().requires_grad_()
    run(leaf, rois, P, sr, aligned, backend).backward(grad)
    return leaf.grad


# Hand-computed cases on x = [1, 2, 5, 10, 17] (x[k] = k^2 + 1, T = 5, not linear so
# that averaging positions and averaging values differ).
HAND_X = [1.0, 2.0, 5.0, 10.0, 17.0]
HAND_CASES = [
    # roi (0, 1, 3), P=2, sr=2: bin 0 samples t=1.25 -> 2+0.25*3=2.75 and t=1.75 -> 4.25,
    # mean 3.5; bin 1: t=2.25 -> 5+0.25*5=6.25, t=2.75 -> 8.75, mean 7.5.
    ((1.0, 3.0), 2, 2, False, [3.5, 7.5]),
    # aligned: start 0.5, end 2.5, len 2, P=1, n=ceil(2)=2 samples at t=1.0, 2.0 -> (2+5)/2.
    ((1.0, 3.0), 1, 0, True, [3.5]),
    # zero-length, not aligned: len clamped to 1, n=1, t=2.5+0.5=3.0 -> x[3]=10.
    ((2.5, 2.5), 1, 0, False, [10.0]),
    # zero-length, aligned: len 0, n=ceil(0)=0 samples -> divisor max(0,1) -> 0.
    ((2.5, 2.5), 1, 0, True, [0.0]),
    # zero-length, aligned, sr=3: bin 0, all samples at t=2.0 -> x[2]=5.
    ((2.5, 2.5), 1, 3, True, [5.0]),
    # right border: (4, 6), P=2, sr=1: t=4.5 -> floor 4 >= T-1 -> x[4]=17; t=5.5 > T -> 0.
    ((4.0, 6.0), 2, 1, False, [17.0, 0.0]),
    # left border: (-2, 0), P=2, sr=1: t=-1.5 < -1 -> 0; t=-0.5 clamps to 0 -> x[0]=1.
    ((-2.0, 0.0), 2, 1, False, [0.0, 1.0]),
    # exactly t=-1 is inside (clamped to 0): (-1.5, -0.5), P=1, sr=1 -> t=-1.0 -> x[0]=1.
    ((-1.5, -0.5), 1, 1, False, [1.0]),
    # exactly t=T is inside (reads x[T-1]): (4.5, 5.5), P=1, sr=1 -> t=5.0 -> x[4]=17.
    ((4.5, 5.5), 1, 1, False, [17.0]),
    # reversed, not aligned: len max(-2,1)=1, n=1, t=3.5 -> 10+0.5*7=13.5.
    ((3.0, 1.0), 1, 0, False, [13.5]),
    # reversed, aligned, adaptive: len -2, n=ceil(-2)=-2 -> no samples -> 0.
    ((3.0, 1.0), 1, 0, True, [0.0]),
    # reversed, aligned, sr=1: start 2.5, bin -2, t=2.5+0.5*(-2)=1.5 -> 2+0.5*3=3.5.
    ((3.0, 1.0), 1, 1, True, [3.5]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("roi", "P", "sr", "aligned", "expected"), HAND_CASES)
def test_hand_computed(backend, roi, P, sr, aligned, expected):
    x = torch.tensor([[HAND_X, [10 * v for v in HAND_X]]], dtype=torch.float64)  # B=1, C=2
    rois = torch.tensor([[0.0, *roi]], dtype=torch.float64)
    out = run(x, rois, P, sr, aligned, backend)
    want = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(out[0, 0], want, **F64)
    torch.testing.assert_close(out[0, 1], 10 * want, **F64)
    torch.testing.assert_close(brute_roi_align(x, rois, P, sr, aligned)[0, 0], want, **F64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_adaptive_and_batches(backend):
    # Two batches; RoI (b=1, 0, 5), P=2 adaptive: len 5, bin 2.5, n=ceil(2.5)=3, samples
    # at 5/12, 15/12, 25/12 in bin 0 -> 1+5/12, 2+3*(3/12), 5+5*(1/12) = (17+33+65)/12,
    # mean 115/36; bin 1 at 35/12, 45/12, 55/12 -> 5+5*(11/12), 10+7*(9/12), 17 (floor 4
    # = T-1) = (115+183+204)/12, mean 251/18.
    x = torch.tensor([[[0.0] * 5], [HAND_X]], dtype=torch.float64)
    rois = torch.tensor([[1.0, 0.0, 5.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    out = run(x, rois, 2, backend=backend)
    torch.testing.assert_close(out[0, 0], torch.tensor([115 / 36, 251 / 18], dtype=torch.float64), **F64)
    torch.testing.assert_close(out[1], torch.zeros(1, 2, dtype=torch.float64))  # batch 0 is all zeros


@pytest.mark.parametrize("backend", BACKENDS)
def test_length_one_input(backend):
    # T=1: every sample in [-1, 1] reads x[0]; beyond 1 contributes 0.
    x = torch.tensor([[[7.0]]], dtype=torch.float64)
    rois = torch.tensor([[0, 0.0, 1.0], [0, 0.5, 1.5], [0, -3.0, 3.0]], dtype=torch.float64)
    out = run(x, rois, 2, 1, False, backend)
    # (0,1): t=0.25, 0.75 -> 7, 7. (0.5,1.5): t=0.75 -> 7, t=1.25 > T -> 0.
    # (-3,3): bin 3, t=-1.5 -> 0, t=1.5 -> 0.
    want = torch.tensor([[7.0, 7.0], [7.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out[:, 0], want, **F64)
    for P, sr, aligned in [(1, 0, False), (3, 0, True), (4, 2, False), (2, 3, True)]:
        want = brute_roi_align(x, rois, P, sr, aligned)
        torch.testing.assert_close(run(x, rois, P, sr, aligned, backend), want, **F64)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sr", [0, 1, 2, 5])
@pytest.mark.parametrize("P", [1, 3, 7])
def test_special_rois_match_oracle(backend, aligned, sr, P):
    B, C, T = 3, 2, 10
    x = torch.randn(B, C, T, dtype=torch.float64, generator=torch.Generator().manual_seed(P * 10 + sr))
    rois = special_rois(B, T)
    want = brute_roi_align(x, rois, P, sr, aligned)
    torch.testing.assert_close(run(x, rois, P, sr, aligned, backend), want, **F64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_rois_several_batches(backend):
    g = torch.Generator().manual_seed(0)
    B, C, T, N = 4, 3, 17, 40
    x = torch.randn(B, C, T, dtype=torch.float64, generator=g)
    ends = torch.rand(N, 2, dtype=torch.float64, generator=g) * (T + 6) - 3
    rois = torch.cat([torch.randint(0, B, (N, 1), generator=g).double(), ends], dim=1)
    for P, sr, aligned in [(5, 0, False), (5, 0, True), (4, 3, False), (1, 1, True)]:
        want = brute_roi_align(x, rois, P, sr, aligned)
        torch.testing.assert_close(run(x, rois, P, sr, aligned, backend), want, **F64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_frames_reach_only_the_bins_that_read_them(backend):
    x = torch.zeros(1, 1, 6, dtype=torch.float64)
    x[0, 0, 0] = math.inf
    # (3, 4) never samples frame 0; (0, 1) does, with weight > 0; the long RoI's samples
    # beyond T are unused and must not read anything either.
    rois = torch.tensor([[0, 3.0, 4.0], [0, 0.0, 1.0], [0, 4.0, 20.0]], dtype=torch.float64)
    out = run(x, rois, 2, 0, False, backend)
    assert torch.equal(out[0], torch.zeros(1, 2, dtype=torch.float64))
    assert torch.equal(out[1], torch.full((1, 2), math.inf, dtype=torch.float64))
    assert torch.equal(out[2], torch.zeros(1, 2, dtype=torch.float64))


# Every backend, cuda included (csrc/cuda/roi_align_1d.cu skips w_hi = 0 taps in the forward
# and both backwards; compile-checked here, run only where there is a GPU), must pass.
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_zero_weight_taps_read_nothing(backend, bad):
    """A bin reads a frame only through a tap of nonzero weight (the op's docstring)."""
    # Past the last frame a sample reads x[T - 1] with weight 1 (and nothing with weight 0):
    # the bin is inf, not NaN as torchvision's dense 1 * inf + 0 * inf gives.
    x = torch.zeros(1, 1, 6, dtype=torch.float64)
    x[0, 0, 5] = bad
    out = run(x, torch.tensor([[0, 4.0, 8.0]], dtype=torch.float64), 2, 1, False, backend)
    torch.testing.assert_close(out, torch.tensor([[[bad, 0.0]]], dtype=torch.float64), equal_nan=True)
    x = torch.zeros(1, 1, 6, dtype=torch.float64)
    x[0, 0, 3] = bad
    # aligned (2, 6), P=4, sr=1: samples exactly on frames 2, 3, 4, 5; bin 0 reads frame 3
    # with weight 0 only, bin 1 with weight 1.
    out = run(x, torch.tensor([[0, 2.0, 6.0]], dtype=torch.float64), 4, 1, True, backend)
    torch.testing.assert_close(out, torch.tensor([[[0.0, bad, 0.0, 0.0]]], dtype=torch.float64), equal_nan=True)
    # A sample at t = -1 is clamped onto frame 0: frame 1 has weight 0.
    x = torch.zeros(1, 1, 6, dtype=torch.float64)
    x[0, 0, 1] = bad
    out = run(x, torch.tensor([[0, -1.5, -0.5]], dtype=torch.float64), 1, 1, False, backend)
    assert torch.equal(out, torch.zeros(1, 1, 1, dtype=torch.float64))
    # Backward: frame 3 gets gradient from bin 1 only; bin 0's non-finite gradient stays out.
    for mode in backward_modes(backend):
        with deterministic(mode):
            grad = torch.tensor([[[bad, 1.0, 2.0, 3.0]]], dtype=torch.float64)
            got = input_grad(torch.zeros(1, 1, 6, dtype=torch.float64), torch.tensor([[0, 2.0, 6.0]],
                             dtype=torch.float64), 4, 1, True, backend, grad)
            want = torch.tensor([[[0.0, 0.0, bad, 1.0, 2.0, 3.0]]], dtype=torch.float64)
            torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_roi_list(backend):
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    rois = torch.zeros(0, 3, dtype=torch.float64)
    out = run(x, rois, 4, backend=backend)
    assert out.shape == (0, 3, 4) and out.dtype == torch.float64
    out.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    g = torch.Generator().manual_seed(1)
    B, C, T = 2, 3, 9
    rois = special_rois(B, T)
    # [B, T, C] transposed, and every second frame of a longer sequence.
    transposed = torch.randn(B, T, C, dtype=torch.float64, generator=g).transpose(1, 2)
    strided = torch.randn(B, C, 2 * T, dtype=torch.float64, generator=g)[..., ::2]
    wide = torch.zeros(rois.shape[0], 6, dtype=torch.float64)
    wide[:, ::2] = rois
    rois_nc = wide[:, ::2]  # non-contiguous rois too
    for x in (transposed, strided):
        assert not x.is_contiguous()
        want = brute_roi_align(x, rois, 4, 0, False)
        torch.testing.assert_close(run(x, rois_nc, 4, 0, False, backend), want, **F64)
        want = brute_roi_align(x, rois, 4, 2, True)
        torch.testing.assert_close(run(x, rois, 4, 2, True, backend), want, **F64)
        # Backward from a non-contiguous grad equals the contiguous result.
        xg = x.clone().requires_grad_()
        grad = torch.randn(rois.shape[0], 4, C, dtype=torch.float64, generator=g).transpose(1, 2)
        run(xg, rois, 4, 0, False, backend).backward(grad)
        xc = x.contiguous().requires_grad_()
        run(xc, rois, 4, 0, False, backend).backward(grad.contiguous())
        torch.testing.assert_close(xg.grad, xc.grad, **F64)


# Low precision: the backends compute in float32 from the rounded input and rois, then
# round once to the output dtype. So the error vs float64 on the same rounded values is
# the final rounding (<= 2^-11 relative for float16, 2^-8 for bfloat16; rtol = 2x that)
# plus float32 arithmetic on O(1) values with O(10) terms (~1e-6, hence atol).
LOW_PRECISION = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 2 * 2**-11, "atol": 1e-5},
    torch.bfloat16: {"rtol": 2 * 2**-8, "atol": 1e-5},
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(LOW_PRECISION))
def test_low_precision_vs_float64(backend, dtype):
    g = torch.Generator().manual_seed(2)
    B, C, T, N = 2, 4, 20, 30
    x = torch.randn(B, C, T, generator=g).to(dtype)
    ends = torch.rand(N, 2, generator=g) * (T + 4) - 2
    # rois are computed in float32 for non-float64 input: the oracle gets the same values.
    rois = torch.cat([torch.randint(0, B, (N, 1), generator=g).float(), ends], dim=1)
    for P, sr, aligned in [(6, 0, False), (3, 2, True)]:
        out = run(x, rois, P, sr, aligned, backend)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), brute_roi_align(x.double(), rois.double(), P, sr, aligned),
                                   **LOW_PRECISION[dtype])
        xg = x.clone().requires_grad_()
        run(xg, rois, P, sr, aligned, backend).sum().backward()
        x64 = x.double().requires_grad_()
        run(x64, rois.double(), P, sr, aligned, backend).sum().backward()
        assert xg.grad.dtype == dtype
        # Gradients sum up to ~N*P/T weights per frame (values ~10): scale atol with them.
        tol = LOW_PRECISION[dtype]
        torch.testing.assert_close(xg.grad.double(), x64.grad, rtol=tol["rtol"], atol=10 * tol["atol"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("sr", "aligned"), [(0, False), (2, True), (1, False), (0, True)])
def test_gradcheck(backend, sr, aligned):
    g = torch.Generator().manual_seed(3)
    B, C = small(backend, 2, 1), small(backend, 2, 1)  # each input element costs two forward calls
    x = torch.randn(B, C, 7, dtype=torch.float64, generator=g, requires_grad=True)
    # Full Jacobian on a few RoIs (one backward per output element, so few outputs)...
    few = special_rois(B, 7)[[0, 7, 10, 11, 17, 18]]  # fractional, reversed, both borders, exact -1 and T
    # ...and random projections of it on all the special RoIs.
    every = special_rois(B, 7)
    for mode in backward_modes(backend):
        with deterministic(mode):
            assert torch.autograd.gradcheck(lambda t: run(t, few, 2, sr, aligned, backend), (x,))
            if small(backend, 1, 0):  # under Triton's interpreter, the few RoIs only (time)
                assert torch.autograd.gradcheck(lambda t: run(t, every, 3, sr, aligned, backend), (x,),
                                                fast_mode=True)


@pytest.mark.parametrize("backend", OTHERS)
def test_backward_matches_reference(backend):
    g = torch.Generator().manual_seed(4)
    B, C, T, N = 3, 5, 23, small(backend, 60, 20)
    x = torch.randn(B, C, T, dtype=torch.float64, generator=g)
    ends = torch.rand(N, 2, dtype=torch.float64, generator=g) * (T + 6) - 3
    rois = torch.cat([torch.randint(0, B, (N, 1), generator=g).double(), ends], dim=1)
    grad = torch.randn(N, C, 4, dtype=torch.float64, generator=g)
    for sr, aligned in [(0, False), (3, True)]:
        want = input_grad(x, rois, 4, sr, aligned, "reference", grad)
        for mode in backward_modes(backend):
            with deterministic(mode):
                torch.testing.assert_close(input_grad(x, rois, 4, sr, aligned, backend, grad), want, **F64)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("C", [8, 41, 64])
def test_float32_backward_matches_float64_reference(backend, C):
    """float32 with P a multiple of 4 and channel blocks of 4 (the CPU kernel transposes the
    gradient in 4 x 4 register blocks) and ragged channel counts (the scalar tail)."""
    g = torch.Generator().manual_seed(C)
    B, T, N, P = 2, 29, small(backend, 50, 12), 16
    x = torch.randn(B, C, T, dtype=torch.float64, generator=g)
    ends = torch.rand(N, 2, dtype=torch.float64, generator=g) * (T + 6) - 3
    rois = torch.cat([torch.randint(0, B, (N, 1), generator=g).double(), ends], dim=1)
    grad = torch.randn(N, C, P, dtype=torch.float64, generator=g)
    want = input_grad(x, rois, P, 0, False, "reference", grad)
    got = input_grad(x.float(), rois.float(), P, 0, False, backend, grad.float())
    # float32 sums of at most N * P * (taps per bin) terms of size ~1: 1e-4 relative is ~100 ulp of headroom.
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] == "cpu"])
def test_cpu_baseline_isa_matches_avx2(backend, monkeypatch):
    """The backward's channel loops are compiled for AVX2 + FMA and for baseline x86-64 and
    picked at run time; FASTLOCAL_CPU_ISA=baseline forces the portable build, which would
    otherwise never run on an AVX2 machine. They differ only by FMA rounding."""
    g = torch.Generator().manual_seed(12)
    B, C, T, N, P = 2, 37, 50, 400, 16  # float32, P % 4 == 0, ragged C: both transpose paths
    x = torch.randn(B, C, T, generator=g)
    ends = torch.rand(N, 2, generator=g) * (T + 6) - 3
    rois = torch.cat([torch.randint(0, B, (N, 1), generator=g).float(), ends], dim=1)
    grad = torch.randn(N, C, P, generator=g)
    native = input_grad(x, rois, P, 0, False, backend, grad)
    monkeypatch.setenv("FASTLOCAL_CPU_ISA", "baseline")
    baseline = input_grad(x, rois, P, 0, False, backend, grad)
    torch.testing.assert_close(baseline, native, rtol=1e-5, atol=1e-5)


def test_cpu_backward_is_deterministic():
    g = torch.Generator().manual_seed(5)
    B, C, T, N = 2, 64, 200, 3000
    x = torch.randn(B, C, T, generator=g)
    ends = torch.rand(N, 2, generator=g) * T
    rois = torch.cat([torch.randint(0, B, (N, 1), generator=g).float(), ends.sort(dim=1).values], dim=1)
    grad = torch.randn(N, C, 8, generator=g)

    def backward() -> torch.Tensor:
        return input_grad(x, rois, 8, 0, False, "cpu", grad)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, second = backward(), backward()
        torch.set_num_threads(1)
        single = backward()
    finally:
        torch.set_num_threads(threads)
    # Float32 sums of ~3000 overlapping RoIs: any change of order would show in the bits.
    assert torch.equal(first, second)
    assert torch.equal(first, single)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("sr", [0, 2])
def test_deterministic_mode_gradients_are_bitwise_reproducible(backend, sr):
    # Many RoIs overlap every frame: float32 sums in a varying order would differ in the bits.
    g = torch.Generator().manual_seed(8)
    B, C, T, N = 2, small(backend, 64, 2), small(backend, 200, 16), small(backend, 3000, 60)
    x = torch.randn(B, C, T, generator=g)
    ends = torch.rand(N, 2, generator=g) * (T + 4) - 2
    rois = torch.cat([torch.randint(0, B, (N, 1), generator=g).float(), ends], dim=1)
    grad = torch.randn(N, C, 8, generator=g)
    with deterministic(True):
        runs = [input_grad(x, rois, 8, sr, False, backend, grad) for _ in range(3)]
    assert runs[0].abs().sum() > 0
    assert all(torch.equal(runs[0], again) for again in runs[1:])
    # The deterministic kernel computes the same gradient as the default one.
    want = input_grad(x, rois, 8, sr, False, "reference", grad)
    torch.testing.assert_close(runs[0], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", OTHERS)
def test_many_rois_match_reference(backend):
    # 100k RoIs (300 under Triton's interpreter), including reversed and out-of-range ones.
    g = torch.Generator().manual_seed(6)
    B, C, T, N, P = 2, 4, small(backend, 256, 32), small(backend, 100_000, 300), 8
    x = torch.randn(B, C, T, generator=g)
    start = torch.rand(N, generator=g) * (T + 20) - 10
    length = torch.rand(N, generator=g) * 36 - 4  # includes reversed RoIs; n = ceil(len/P) <= 4
    rois = torch.stack([torch.randint(0, B, (N,), generator=g).float(), start, start + length], dim=1)
    grad = torch.randn(N, C, P, generator=g)
    want_out = run(x, rois, P, 0, False, "reference")
    want_grad = input_grad(x, rois, P, 0, False, "reference", grad)
    # Same float32 arithmetic up to summation order.
    torch.testing.assert_close(run(x, rois, P, 0, False, backend), want_out, rtol=1e-5, atol=1e-5)
    for mode in backward_modes(backend):
        with deterministic(mode):
            # Each frame gathers ~N*P*n/(B*T) ~ 5e3 float32 contributions of weight <= 1/n.
            torch.testing.assert_close(input_grad(x, rois, P, 0, False, backend, grad), want_grad,
                                       rtol=1e-4, atol=1e-3)


@st.composite
def roi_problems(draw):
    """A random [B, C, T] input, [N, 3] RoIs (some on the quarter grid to hit borders), P, sr, aligned."""
    B = draw(st.integers(1, 3))
    C = draw(st.integers(1, 3))
    T = draw(st.integers(1, 12))
    N = draw(st.integers(0, 6))
    P = draw(st.integers(1, 5))
    sr = draw(st.integers(0, 3))
    aligned = draw(st.booleans())
    coord = st.one_of(
        st.floats(-4.0, T + 4.0, allow_nan=False, allow_infinity=False),
        st.integers(-16, 4 * T + 16).map(lambda q: q / 4),  # exact borders: -1, 0, T, integers
    )
    rows = [(draw(st.integers(0, B - 1)), draw(coord), draw(coord)) for _ in range(N)]
    seed = draw(st.integers(0, 2**31 - 1))
    x = torch.randn(B, C, T, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    rois = torch.tensor(rows, dtype=torch.float64).reshape(N, 3)
    return x, rois, P, sr, aligned


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(problem=roi_problems(), deterministic_mode=st.booleans())
def test_hypothesis_sweep(backend, problem, deterministic_mode):
    """Forward against the loop oracle, backward against the reference backend."""
    x, rois, P, sr, aligned = problem
    torch.testing.assert_close(run(x, rois, P, sr, aligned, backend), brute_roi_align(x, rois, P, sr, aligned),
                               **F64)
    grad = torch.randn(rois.shape[0], x.shape[1], P, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(rois.shape[0] * 31 + P))
    want = input_grad(x, rois, P, sr, aligned, "reference", grad)
    with deterministic(deterministic_mode and backend in TWO_BACKWARDS):
        torch.testing.assert_close(input_grad(x, rois, P, sr, aligned, backend, grad), want, **F64)


# ---- hardening (issue 21): checks on the values as given, no gradient to rois, bounded work ----------


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_index_is_checked_before_the_cast(backend):
    """float64 rois for float32 input are cast to float32 after the checks: 1 - 1e-12 is not 1."""
    x = torch.randn(2, 3, 10)
    rois = torch.tensor([[1 - 1e-12, 1.0, 5.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rois\[:, 0\] must be integer batch indices in \[0, 2\)"):
        run(x, rois, 4, 0, False, backend)
    # Exact integers still pass, and a coordinate that overflows float32 is refused by name.
    assert run(x, torch.tensor([[1.0, 1.0, 5.0]], dtype=torch.float64), 4, 0, False, backend).shape == (1, 3, 4)
    with pytest.raises(ValueError, match=r"rois must be finite in torch.float32"):
        run(x, torch.tensor([[0.0, 1.0, 1e300]], dtype=torch.float64), 4, 1, False, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rois_get_no_gradient(backend):
    """The contract: gradient w.r.t. input only. rois that require grad are detached, on every backend."""
    x = torch.randn(2, 3, 10, dtype=torch.float64, requires_grad=True)
    rois = special_rois(2, 10).requires_grad_()
    run(x, rois, 4, 0, False, backend).sum().backward()
    assert x.grad is not None and rois.grad is None
    # Only rois require grad: the output is a constant.
    assert not run(x.detach(), rois, 4, 0, False, backend).requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_ratio_is_capped(backend):
    x = torch.randn(1, 2, 10)
    rois = torch.tensor([[0.0, 1.0, 5.0]])
    with pytest.raises(ValueError, match=rf"sampling_ratio must be <= {RA.MAX_SAMPLING_RATIO}"):
        run(x, rois, 4, 2**40, False, backend)
    with pytest.raises(ValueError, match=r"sampling_ratio must be <= 65536"):
        run(x, rois, 4, RA.MAX_SAMPLING_RATIO + 1, False, backend)
    assert RA.MAX_SAMPLING_RATIO == RA.MAX_ADAPTIVE_SAMPLES == 65536
    if backend != "triton":  # 65536 samples per bin is a long loop under Triton's interpreter
        out = run(x.double(), rois.double(), 1, RA.MAX_SAMPLING_RATIO, False, backend)
        torch.testing.assert_close(out, brute_roi_align(x, rois, 1, RA.MAX_SAMPLING_RATIO, False), **F64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_that_cannot_fit_is_refused_before_allocating(backend, monkeypatch):
    x = torch.randn(2, 3, 10)
    rois = torch.tensor([[0.0, 1.0, 5.0], [1.0, 0.0, 9.0]])

    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated before refusing")

    with monkeypatch.context() as m:  # nothing of the output's size may be allocated first
        for name in ("empty", "zeros", "full"):
            m.setattr(torch, name, no_allocation)
        with pytest.raises(ValueError, match=r"output_size=1099511627776 asks for .*\[2, 3, 1099511627776\]"):
            run(x, rois, 2**40, 1, False, backend)
    # Just within the limit of a (patched) 1 KiB device: served; one element more: refused.
    monkeypatch.setattr(fastlocal._validate, "_memory_bytes", lambda device_type, index: 1024)
    assert run(x, rois, 1024 // (2 * 3 * 4), 1, False, backend).shape == (2, 3, 42)
    with pytest.raises(ValueError, match=r"output_size=43 asks for .* more than the 9.537e-07 GiB"):
        run(x, rois, 43, 1, False, backend)
    # No RoI, no output element: any output_size.
    assert run(x, rois[:0], 2**40, 1, False, backend).shape == (0, 3, 2**40)


def test_reference_builds_its_plan_in_bounded_chunks(monkeypatch):
    """The reference's sampling plan is built a chunk of bins at a time: same result and gradient."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 12, dtype=torch.float64, generator=g)
    rois = special_rois(2, 12)
    grad = torch.randn(rois.shape[0], 3, 5, dtype=torch.float64, generator=g)
    for sr, aligned in [(0, False), (3, True)]:
        whole = run(x, rois, 5, sr, aligned, "reference")
        whole_grad = input_grad(x, rois, 5, sr, aligned, "reference", grad)
        with monkeypatch.context() as m:
            m.setattr(importlib.import_module("fastlocal.reference.roi_align_1d"), "PLAN_TAPS", 7)
            torch.testing.assert_close(run(x, rois, 5, sr, aligned, "reference"), whole, rtol=0, atol=0)
            torch.testing.assert_close(input_grad(x, rois, 5, sr, aligned, "reference", grad), whole_grad, **F64)
        torch.testing.assert_close(whole, brute_roi_align(x, rois, 5, sr, aligned), **F64)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.values[0] == "triton"])
def test_triton_tiles_long_outputs(backend, monkeypatch):
    """P beyond MAX_BLOCK_P is split over programs (P > 32768 in one tile exceeds Triton's tensor size)."""
    kernels = importlib.import_module("fastlocal.kernels.roi_align_1d")
    monkeypatch.setattr(kernels, "MAX_BLOCK_P", 2)  # P = 7: four bin blocks, the last one ragged
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 3, 12, dtype=torch.float64, generator=g)
    rois = special_rois(2, 12)[:8]
    grad = torch.randn(rois.shape[0], 3, 7, dtype=torch.float64, generator=g)
    for sr, aligned in [(0, False), (2, True)]:
        torch.testing.assert_close(run(x, rois, 7, sr, aligned, backend), brute_roi_align(x, rois, 7, sr, aligned),
                                   **F64)
        want = input_grad(x, rois, 7, sr, aligned, "reference", grad)
        for mode in backward_modes(backend):
            with deterministic(mode):
                torch.testing.assert_close(input_grad(x, rois, 7, sr, aligned, backend, grad), want, **F64)


def test_meta_tensors_give_the_output_shape():
    out = fastlocal.roi_align_1d(torch.empty(2, 3, 10, device="meta"), torch.empty(5, 3, device="meta"), 7)
    assert out.device.type == "meta" and out.shape == (5, 3, 7) and out.dtype == torch.float32


# ---- differential sweep: valid and invalid calls, every backend against the reference ----------------

DIFF_TOL = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 2 * 2**-11, "atol": 1e-5},
    torch.bfloat16: {"rtol": 2 * 2**-8, "atol": 1e-5},
}
FLOATS = list(DIFF_TOL)
HUGE = 2**40


@st.composite
def roi_calls(draw):
    """One ``roi_align_1d`` call, valid or not: (kwargs, names that must be blamed, names that may be).

    Draws dtypes, layouts (contiguous, transposed, strided, stride-0 expanded views of input
    and rois), NaN / +-inf frames, batch indices in and out of range or fractional (including
    float64 ``1 - 1e-12``), non-finite and huge coordinates, and huge ``output_size`` /
    ``sampling_ratio``. Problems stay tiny: Triton's interpreter runs them too.
    """
    must, may = set(), set()
    rare = st.integers(0, 15).map(lambda k: k == 0)  # True one time in 16
    dtype = draw(st.sampled_from(FLOATS))
    B, C, T = draw(st.integers(1, 3)), draw(st.integers(0, 3)), draw(st.integers(1, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    layout = draw(st.sampled_from(["contiguous", "transposed", "strided", "expanded"]))
    if layout == "transposed":
        x = torch.randn(B, T, C, generator=g).to(dtype).transpose(1, 2)
    elif layout == "strided":
        x = torch.randn(B, C, 2 * T, generator=g).to(dtype)[..., ::2]
    elif layout == "expanded":
        x = torch.randn(1, C, T, generator=g).to(dtype).expand(B, C, T)
    else:
        x = torch.randn(B, C, T, generator=g).to(dtype)
    if C and draw(st.booleans()):  # NaN / +-inf frames
        x = x.clone() if layout == "expanded" else x  # writable
        for _ in range(draw(st.integers(1, 3))):
            x[draw(st.integers(0, B - 1)), draw(st.integers(0, C - 1)), draw(st.integers(0, T - 1))] = draw(
                st.sampled_from([math.inf, -math.inf, math.nan]))

    rois_dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    N = draw(st.integers(0, 5))
    coord = st.one_of(
        st.floats(-4.0, T + 4.0, allow_nan=False, allow_infinity=False),
        st.integers(-16, 4 * T + 16).map(lambda q: q / 4),  # exact borders and integer samples
    )
    rows = []
    for _ in range(N):
        kind = draw(st.sampled_from(["ok"] * 20 + ["bad_batch", "bad_coord", "huge_coord"]))
        b, start, end = draw(st.integers(0, B - 1)), draw(coord), draw(coord)
        if kind == "bad_batch":
            b = draw(st.sampled_from([-1.0, float(B), 0.5, math.nan, 1 - 1e-12]))
            if b == 1 - 1e-12 and rois_dtype != torch.float64:
                may.add("rois")  # rounds to 1.0 when the tensor is built: valid iff B > 1
            else:
                must.add("rois")
        elif kind == "bad_coord":
            bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            start, end = (bad, end) if draw(st.booleans()) else (start, bad)
            must.add("rois")
        elif kind == "huge_coord":  # may overflow the dtype, or exceed the adaptive sample cap
            end = draw(st.sampled_from([1e5, 1e30, 1e300]))
            may.add("rois")
        rows.append((b, start, end))
    rois = torch.tensor(rows, dtype=torch.float64).reshape(N, 3)
    if not torch.isfinite(rois.to(rois_dtype)).all():  # a finite coordinate that overflows rois' own dtype
        must.add("rois")
    rois = rois.to(rois_dtype)
    rois_layout = draw(st.sampled_from(["contiguous", "strided", "expanded"]))
    if rois_layout == "strided":
        wide = torch.zeros(N, 6, dtype=rois_dtype)
        wide[:, ::2] = rois
        rois = wide[:, ::2]
    elif rois_layout == "expanded" and N:
        rois = rois[:1].expand(N, 3)
        must.discard("rois")
        may.add("rois")  # only the first row remains

    output_size = HUGE if draw(rare) else draw(st.integers(1, 6))
    if output_size == HUGE and N and C:
        must.add("output_size")
    sampling_ratio = draw(st.sampled_from([-1, HUGE])) if draw(rare) else draw(st.integers(0, 3))
    if sampling_ratio in (-1, HUGE):
        must.add("sampling_ratio")
    aligned = draw(st.booleans())
    kwargs = {"input": x, "rois": rois, "output_size": output_size, "sampling_ratio": sampling_ratio,
              "aligned": aligned}
    return kwargs, must, may


def _outcome(backend: str, kwargs: dict) -> tuple[torch.Tensor | None, Exception | None]:
    dev = device_of(backend)
    args = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    try:
        return fastlocal.roi_align_1d(**args, backend=backend).cpu(), None
    except Exception as exc:  # compared below: same type and message on every backend
        return None, exc


def _check_against_reference(backend: str, call) -> None:
    kwargs, must, may = call
    want, want_exc = _outcome("reference", kwargs)
    got, got_exc = _outcome(backend, kwargs)
    if want_exc is not None:
        event(f"refused: {type(want_exc).__name__}")
        assert_same_refusal(backend, want_exc, got_exc, must | may)
        return
    assert_same_acceptance(backend, got_exc, must)
    x = kwargs["input"]
    event("served" + ("" if torch.isfinite(x).all() else ", NaN / inf in input"))
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, equal_nan=True, **DIFF_TOL[want.dtype])


@pytest.mark.parametrize("backend", OTHERS)
def test_differential_sweep(backend):
    """Random valid and invalid calls: every backend returns the reference's result (NaN and inf
    pattern included, tolerance by dtype) or raises the reference's exception (type and message,
    which names the offending argument). Deterministic examples (hypothesis's "ci" profile);
    fewer and smaller under Triton's interpreter."""
    interpreted = backend == "triton" and triton_interpreted()

    @settings(settings.get_profile("ci"), max_examples=150 if interpreted else 400)
    @given(call=roi_calls())
    def sweep(call):
        _check_against_reference(backend, call)

    sweep()
