"""local_attention with windows wider than the sequence, up to 2**64 (issue 21): exactly full
attention (or the clipped band) on every backend, forward and backward, never an integer
overflow or a read out of bounds; local_attention_probs refuses an output that cannot exist."""

from __future__ import annotations

import importlib

import pytest
import torch
from backends import backend_params, device_of

import fastlocal

LA = importlib.import_module("fastlocal.local_attention")
BACKENDS = backend_params("local_attention", LA.IMPLEMENTED, ("cpu", "triton", "cuda", "reference"))

# (window, window_left, window_right) -> the same band written with left, right <= T - 1
HUGE = [
    ((2**63 - 1, None, None), (None, "full")),
    ((1, 2**63 - 2, 0), (None, "causal")),
    ((2**62 + 1, None, None), (None, "full")),
    ((2**64 + 1, None, None), (None, "full")),
    ((1, 2**62 - 1, 2**62 - 1), (None, "full")),
    ((1, 3, 2**70), (None, "left3")),
]


def band(T: int, kind: str) -> dict:
    if kind == "full":
        return {"window": 2 * T - 1}
    if kind == "causal":
        return {"window": 1, "window_left": T - 1, "window_right": 0}
    return {"window": 1, "window_left": 3, "window_right": T - 1}


def kwargs(window, left, right) -> dict:
    out = {"window": window}
    if left is not None:
        out.update(window_left=left, window_right=right)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edge", ["clip", "shift"])
@pytest.mark.parametrize("T", [1, 8, 37])
@pytest.mark.parametrize(("huge", "want"), HUGE, ids=[f"w{i}" for i in range(len(HUGE))])
def test_huge_windows_are_the_clipped_band(backend, edge, T, huge, want):
    window, left, right = huge
    if edge == "shift" and (left is not None and left != right):
        pytest.skip("edge='shift' takes symmetric windows only")
    device = device_of(backend)
    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(2, 3, T, 5, generator=g, dtype=torch.float64).to(device).requires_grad_() for _ in range(3))
    mask = torch.zeros(2, T, dtype=torch.bool, device=device)
    mask[1, T // 2] = True
    dtype_ok = backend != "triton" and backend != "cuda"
    if not dtype_ok:  # the GPU kernels take float32 and lower
        q, k, v = (t.detach().float().requires_grad_() for t in (q, k, v))
    out = fastlocal.local_attention(q, k, v, **kwargs(window, left, right), edge=edge, key_padding_mask=mask,
                                    backend=backend)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = fastlocal.local_attention(*ref_inputs, **band(T, want[1]), edge=edge, key_padding_mask=mask,
                                    backend="reference")
    tol = {"atol": 1e-10, "rtol": 1e-10} if q.dtype == torch.float64 else {"atol": 2e-5, "rtol": 2e-5}
    torch.testing.assert_close(out, ref, **tol)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for got, expected in zip((q, k, v), ref_inputs, strict=True):
        torch.testing.assert_close(got.grad, expected.grad, **tol)


def test_probs_refuse_an_output_wider_than_memory():
    q = torch.randn(1, 2, 8, 4)
    rows = torch.tensor([0, 3])
    want = r"window=9223372036854775807 asks for an output \[B, H, R, window_left \+ window_right \+ 1\]"
    with pytest.raises(ValueError, match=want):
        fastlocal.local_attention_probs(q, q, rows, 2**63 - 1)
    with pytest.raises(ValueError, match="window=9223372036854775809 asks for"):
        fastlocal.local_attention_probs(q, q, rows, 1, window_left=2**62, window_right=2**62)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_probs_of_a_window_wider_than_the_sequence_are_zero_outside_it(backend):
    q, k = torch.randn(1, 2, 5, 4, dtype=torch.float64), torch.randn(1, 2, 5, 4, dtype=torch.float64)
    rows = torch.tensor([0, 4])
    wide = fastlocal.local_attention_probs(q, k, rows, 21, backend=backend)  # offsets -10..10
    exact = fastlocal.local_attention_probs(q, k, rows, 9, backend="reference")  # offsets -4..4: the whole sequence
    torch.testing.assert_close(wide[..., 6:15], exact)
    assert not wide[..., :6].any() and not wide[..., 15:].any()
