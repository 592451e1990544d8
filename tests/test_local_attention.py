"""Correctness of ``local_attention`` / ``local_attention_probs`` on every backend.

Two oracles:

* an independent brute force written from docs/design.md ("local_attention,
  local_attention_probs") with explicit Python loops over (b, h, i); it shares no code
  with ``fastlocal.reference``. Every test that calls the op runs once per backend
  (``BACKENDS``) against it.
* the reference backend itself, the semantic definition: the compiled backends
  (``OTHERS``) are swept against it with hypothesis, forward and all gradients.

``BACKENDS`` holds ``fastlocal.local_attention.IMPLEMENTED`` plus "triton" and "cuda";
a backend that is not built, not usable here, or has no kernel for this op yet is
skipped with the reason ``fastlocal.available_backends()`` gives. GPU backends run on
CUDA tensors (marked ``gpu``); the oracles always run on CPU.
"""

from __future__ import annotations

import importlib
import math
import time

import pytest
import torch
from backends import GPU_BACKENDS, backend_param, device_of, unusable
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import fastlocal
from fastlocal._dispatch import triton_interpreted
from fastlocal.reference.dropout import keep_mask

LA = importlib.import_module("fastlocal.local_attention")  # fastlocal.local_attention is the function
F64 = torch.float64
REF = "reference"


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- backends


def _backend_param(name: str):
    return backend_param("local_attention", name, LA.IMPLEMENTED)


_NAMES = tuple(dict.fromkeys((*LA.IMPLEMENTED, *GPU_BACKENDS)))
BACKENDS = [_backend_param(name) for name in _NAMES]
OTHERS = [_backend_param(name) for name in _NAMES if name != REF]  # tested against the reference
# Triton under TRITON_INTERPRET=1 runs every program in numpy, ~1000x slower than compiled:
# it gets the whole sweep at small sizes (INTERPRETED) and sits out the longest sequences.
_INTERPRETED = ("triton",) if triton_interpreted() else ()
INTERPRETED = [_backend_param(name) for name in _INTERPRETED]
AT_SCALE = [_backend_param(name) for name in _NAMES if name != REF and name not in _INTERPRETED]


def on(backend: str, *tensors, grad: bool = False) -> list:
    """Copies of ``tensors`` on the backend's device, as fresh leaves (``grad``: requiring grad)."""
    dev = device_of(backend)
    return [None if t is None else t.detach().to(dev).requires_grad_(grad) for t in tensors]


def cpu(*tensors) -> list:
    """Detached CPU copies, for comparison with the CPU oracles."""
    return [None if t is None else t.detach().cpu() for t in tensors]


# --------------------------------------------------------------------------- oracle


def visible_keys(i: int, T: int, left: int, right: int, edge: str) -> list[tuple[int, int]]:
    """(key j, bias index) pairs query ``i`` may attend, straight from docs/design.md."""
    W = left + right + 1
    if edge == "clip":
        return [(j, (j - i) + left) for j in range(i - left, i + right + 1) if 0 <= j < T]
    # NATTEN: start = clamp(i - left, 0, T - W); a sequence shorter than the window starts at 0.
    start = 0 if T < W else min(max(i - left, 0), T - W)
    return [(j, (j - i) + (W - 1)) for j in range(start, min(start + W, T))]


def first_key(i: int, T: int, left: int, right: int, edge: str) -> int:
    """Key that entry 0 of a probs row stands for (``i - left`` or the NATTEN start)."""
    W = left + right + 1
    if edge == "clip":
        return i - left
    return 0 if T < W else min(max(i - left, 0), T - W)


def brute_probs_row(q, k, b, h, i, left, right, edge, rpb, mask, scale):
    """Softmax over query i's visible, unpadded keys: (list of keys, probabilities or None).

    ``q`` and ``k`` are sequences of [D] vectors of batch b, head h.
    """
    T = len(q)
    pairs = [(j, r) for j, r in visible_keys(i, T, left, right, edge) if mask is None or not bool(mask[b, j])]
    if not pairs:
        return [], None
    logits = torch.stack([torch.dot(q[i], k[j]) * scale for j, _ in pairs])
    if rpb is not None:
        logits = logits + torch.stack([rpb[h, r] for _, r in pairs])
    return [j for j, _ in pairs], torch.softmax(logits, dim=0)


def brute_attention(q, k, v, left, right, edge="clip", rpb=None, mask=None, scale=None,
                    rows=None, keep=None, dropout_p=0.0):
    """Loop-by-loop local attention -> [B, H, len(rows), Dv] (differentiable torch ops).

    ``keep(bh, i, j) -> bool`` applies dropout to the probabilities, rescaled by 1 / (1 - p).
    """
    B, H, T, D = q.shape
    scale = D**-0.5 if scale is None else scale
    rows = range(T) if rows is None else rows
    out = []
    for b in range(B):
        for h in range(H):
            # One unbind per sequence: indexing q[b, h, i] per use would make autograd
            # allocate a full-size gradient per index op (slow at T = 100k).
            qs, ks, vs = q[b, h].unbind(0), k[b, h].unbind(0), v[b, h].unbind(0)
            for i in rows:
                keys, p = brute_probs_row(qs, ks, b, h, i, left, right, edge, rpb, mask, scale)
                acc = v.new_zeros(v.shape[-1])
                for n, j in enumerate(keys):
                    w = p[n]
                    if keep is not None:
                        w = w * keep(b * H + h, i, j) / (1.0 - dropout_p)
                    acc = acc + w * vs[j]
                out.append(acc)
    return torch.stack(out).view(B, H, len(rows), v.shape[-1])


def brute_probs(q, k, rows, left, right, edge="clip", rpb=None, mask=None, scale=None):
    """Loop-by-loop ``local_attention_probs``; ``rows`` is a list (shared) or list of lists (per batch)."""
    B, H, T, D = q.shape
    W = left + right + 1
    scale = D**-0.5 if scale is None else scale
    per_batch = rows if isinstance(rows[0], list) else [rows] * B
    out = torch.zeros(B, H, len(per_batch[0]), W, dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for r, i in enumerate(per_batch[b]):
                keys, p = brute_probs_row(q[b, h], k[b, h], b, h, i, left, right, edge, rpb, mask, scale)
                for n, j in enumerate(keys):
                    out[b, h, r, j - first_key(i, T, left, right, edge)] = p[n]
    return out


def dense_attention(q, k, v, bias=None, mask=None, scale=None):
    """Plain full attention with a [H, T, T] bias: the oracle for ``window >= 2T - 1``."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s.masked_fill(mask[:, None, None, :], float("-inf"))
    return torch.softmax(s, dim=-1) @ v


# Wellons' lowbias32 on Python ints, as documented in fastlocal/reference/dropout.py.
M32 = 0xFFFFFFFF


def lowbias32(x: int) -> int:
    """One lowbias32 round on a uint32 held in a Python int."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def py_keep(seed: int, bh: int, i: int, j: int, p: float) -> bool:
    """``hash(hash(hash(seed ^ hash(bh)) ^ i) ^ j) >= floor(p * 2**32)`` in uint32 words."""
    h = lowbias32(lowbias32(bh) ^ (seed & M32))
    h = lowbias32(h ^ (i & M32))
    h = lowbias32(h ^ (j & M32))
    return h >= min(int(p * 2**32), M32)


def replay_seed(torch_seed: int) -> int:
    """The per-call dropout seed the public op draws after ``torch.manual_seed(torch_seed)``."""
    torch.manual_seed(torch_seed)
    return int(torch.randint(0, 2**31 - 1, ()))


def rand(*shape, dtype=F64, grad=False, gen=None):
    """Standard normal tensor (float64 by default)."""
    return torch.randn(*shape, dtype=dtype, generator=gen).requires_grad_(grad)


def bias_size(left: int, right: int, edge: str) -> int:
    """Entries per head of the rpb table for an edge mode."""
    W = left + right + 1
    return W if edge == "clip" else 2 * W - 1


def window_kwargs(left: int, right: int, edge: str) -> dict:
    """Public-API window arguments that resolve to (left, right)."""
    W = left + right + 1
    if edge == "shift" or left == right:
        return {"window": W, "edge": edge}
    # Any odd `window` works when both sides are explicit.
    return {"window": 2 * max(left, right) + 1, "window_left": left, "window_right": right, "edge": edge}


# --------------------------------------------------------------------------- forward vs brute force

CASES = [
    # B, H, T, D, Dv, left, right, edge
    (2, 3, 13, 5, 7, 2, 2, "clip"),
    (1, 2, 11, 3, 4, 3, 1, "clip"),
    (2, 1, 10, 4, 3, 4, 0, "clip"),  # causal
    (1, 2, 9, 6, 2, 0, 3, "clip"),  # anti-causal
    (2, 2, 12, 4, 5, 2, 2, "shift"),
    (1, 3, 7, 3, 5, 1, 1, "shift"),
    (3, 1, 5, 2, 3, 3, 3, "shift"),  # T < window: every query sees every key
    (2, 2, 4, 3, 3, 4, 4, "clip"),  # T < window
    (1, 1, 1, 3, 2, 2, 2, "clip"),  # T = 1
    (2, 2, 1, 3, 2, 1, 1, "shift"),  # T = 1
    (1, 2, 8, 4, 4, 0, 0, "clip"),  # window 1: output = v
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_rpb", [False, True])
@pytest.mark.parametrize(("B", "H", "T", "D", "Dv", "left", "right", "edge"), CASES)
def test_matches_brute_force(B, H, T, D, Dv, left, right, edge, use_rpb, backend):
    g = torch.Generator().manual_seed(B * 1000 + T * 10 + left)
    q, k, v = rand(B, H, T, D, gen=g), rand(B, H, T, D, gen=g), rand(B, H, T, Dv, gen=g)
    rpb = rand(H, bias_size(left, right, edge), gen=g) if use_rpb else None
    out = fastlocal.local_attention(*on(backend, q, k, v), rpb=on(backend, rpb)[0], backend=backend,
                                    **window_kwargs(left, right, edge))
    assert out.shape == (B, H, T, Dv) and out.dtype == F64 and out.device.type == device_of(backend).type
    torch.testing.assert_close(out.cpu(), brute_attention(q, k, v, left, right, edge, rpb), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_one_is_identity(backend):
    q, k, v = on(backend, rand(2, 3, 9, 4), rand(2, 3, 9, 4), rand(2, 3, 9, 6))
    torch.testing.assert_close(fastlocal.local_attention(q, k, v, 1, backend=backend), v, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edge", ["clip", "shift"])
def test_padding_and_custom_scale(edge, backend):
    """Fully masked queries output exact zeros and get exactly zero gradient, never NaN."""
    B, H, T, D, Dv, w = 3, 2, 11, 4, 3, 5
    q, k, v = rand(B, H, T, D, grad=True), rand(B, H, T, D, grad=True), rand(B, H, T, Dv, grad=True)
    rpb = rand(H, bias_size(2, 2, edge), grad=True)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 3:8] = True  # clip: query 5's window [3, 7] is fully padded -> a zero row mid-sequence
    mask[1, :] = True  # fully padded batch row
    mask[2, ::2] = True
    leaves = on(backend, q, k, v, rpb, grad=True)
    out = fastlocal.local_attention(*leaves[:3], w, leaves[3], edge=edge, key_padding_mask=on(backend, mask)[0],
                                    scale=0.37, backend=backend)
    expect = brute_attention(q, k, v, 2, 2, edge, rpb, mask, scale=0.37)
    torch.testing.assert_close(out.detach().cpu(), expect.detach(), rtol=1e-12, atol=1e-12)
    assert not out.isnan().any()
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    if edge == "clip":
        assert torch.equal(out[0, :, 5], torch.zeros_like(out[0, :, 5]))

    # Gradients match the oracle's; a fully padded batch row gets exactly zero gradient.
    go = rand(B, H, T, Dv)
    grads = cpu(*torch.autograd.grad(out, leaves, on(backend, go)[0]))
    expect_grads = torch.autograd.grad(expect, (q, k, v, rpb), go)
    for got, want in zip(grads, expect_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for grad in grads[:3]:
        assert torch.equal(grad[1], torch.zeros_like(grad[1]))
        assert not grad.isnan().any()
    if edge == "clip":  # query 5 of batch 0 sees only padding: no gradient reaches q there
        assert torch.equal(grads[0][0, :, 5], torch.zeros_like(grads[0][0, :, 5]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edge", ["clip", "shift"])
@pytest.mark.parametrize("T", [1, 4, 7])
def test_full_window_is_dense_attention(edge, T, backend):
    """``window >= 2T - 1`` is exact full attention, bias included, for both edges."""
    B, H, D, Dv = 2, 3, 5, 4
    w = 2 * T - 1 + 2 * (T % 2)  # exactly 2T-1, or larger
    left = w // 2
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, Dv)
    rpb = rand(H, bias_size(left, left, edge))
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, -1] = True
    offset = left if edge == "clip" else w - 1
    rel = torch.arange(T)[None, :] - torch.arange(T)[:, None] + offset  # (j - i) + offset
    out = fastlocal.local_attention(*on(backend, q, k, v), w, *on(backend, rpb), edge=edge,
                                    key_padding_mask=on(backend, mask)[0], backend=backend)
    expect = dense_attention(q, k, v, rpb[:, rel], mask)
    if T == 1:
        expect[1] = 0  # the only key is padded: zeros, where dense softmax gives NaN
    torch.testing.assert_close(out.cpu(), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_attention_non_contiguous_inputs(backend):
    """Transposed / permuted / strided views give the same result as contiguous copies."""
    B, H, T, D, Dv = 2, 3, 10, 4, 3
    dev = device_of(backend)
    # Views made on the device: moving a strided view across devices would make it contiguous.
    q = rand(B, T, H, D).to(dev).transpose(1, 2)  # [B, H, T, D] with T-major strides
    k = rand(D, B, H, T).to(dev).permute(1, 2, 3, 0)
    v = rand(B, H, T, 2 * Dv).to(dev)[..., ::2]
    rpb = rand(2 * 5 - 1, H).to(dev).t()
    mask = (torch.arange(T, device=dev) >= 8).expand(B, T)  # stride-0 batch dimension
    assert not any(t.is_contiguous() for t in (q, k, v, rpb, mask))
    out = fastlocal.local_attention(q, k, v, 5, rpb, edge="shift", key_padding_mask=mask, backend=backend)
    ref = fastlocal.local_attention(
        q.contiguous(), k.contiguous(), v.contiguous(), 5, rpb.contiguous(), edge="shift",
        key_padding_mask=mask.contiguous(), backend=backend,
    )
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(out.cpu(), brute_attention(*cpu(q, k, v), 2, 2, "shift", *cpu(rpb, mask)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 2),
    H=st.integers(1, 2),
    T=st.integers(1, 12),
    D=st.integers(1, 5),
    Dv=st.integers(1, 4),
    left=st.integers(0, 6),
    right=st.integers(0, 6),
    edge=st.sampled_from(["clip", "shift"]),
    use_rpb=st.booleans(),
    pad_p=st.sampled_from([0.0, 0.3, 0.8]),
    scale=st.one_of(st.none(), st.floats(0.05, 3.0)),
    seed=st.integers(0, 2**16),
)
def test_hypothesis_sweep(B, H, T, D, Dv, left, right, edge, use_rpb, pad_p, scale, seed, backend):
    if edge == "shift":
        right = left
    g = torch.Generator().manual_seed(seed)
    q, k, v = rand(B, H, T, D, gen=g), rand(B, H, T, D, gen=g), rand(B, H, T, Dv, gen=g)
    rpb = rand(H, bias_size(left, right, edge), gen=g) if use_rpb else None
    mask = torch.rand(B, T, generator=g) < pad_p if pad_p else None
    out = fastlocal.local_attention(*on(backend, q, k, v), rpb=on(backend, rpb)[0],
                                    key_padding_mask=on(backend, mask)[0], scale=scale, backend=backend,
                                    **window_kwargs(left, right, edge))
    expect = brute_attention(q, k, v, left, right, edge, rpb, mask, scale)
    torch.testing.assert_close(out.cpu(), expect, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- local_attention_probs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("T", "left", "right", "edge"),
    [(11, 2, 2, "clip"), (10, 3, 0, "clip"), (9, 1, 4, "clip"), (12, 3, 3, "shift"), (4, 3, 3, "shift"),
     (3, 2, 2, "clip"), (1, 1, 1, "shift")],
)
def test_probs_match_brute_force(T, left, right, edge, backend):
    B, H, D = 2, 3, 4
    q, k = rand(B, H, T, D), rand(B, H, T, D)
    rpb = rand(H, bias_size(left, right, edge))
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, T // 2] = True
    mask[1, :] = T > 5  # a fully padded batch row when long enough
    qd, kd, rpbd, maskd = on(backend, q, k, rpb, mask)
    kw = {**window_kwargs(left, right, edge), "key_padding_mask": maskd, "scale": 0.6, "backend": backend}
    shared = sorted({0, T - 1, T // 2, min(1, T - 1)})
    got = fastlocal.local_attention_probs(qd, kd, *on(backend, torch.tensor(shared)), rpb=rpbd, **kw)
    want = brute_probs(q, k, shared, left, right, edge, rpb, mask, 0.6)
    assert got.shape == (B, H, len(shared), left + right + 1) and got.dtype == F64
    torch.testing.assert_close(got.cpu(), want, rtol=1e-12, atol=1e-12)
    # Visible rows sum to one, empty rows are all zero.
    sums = got.sum(-1)
    assert torch.all((sums - 1).abs().lt(1e-12) | sums.eq(0))

    per_batch = [[T - 1, 0, T // 3], [T // 2, T // 2, 0]]
    got = fastlocal.local_attention_probs(qd, kd, *on(backend, torch.tensor(per_batch, dtype=torch.int32)),
                                          rpb=rpbd, **kw)
    torch.testing.assert_close(got.cpu(), brute_probs(q, k, per_batch, left, right, edge, rpb, mask, 0.6),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("left", "right", "edge"), [(3, 3, "clip"), (2, 0, "clip"), (3, 3, "shift")])
def test_probs_times_values_is_attention(left, right, edge, backend):
    """Probs rows @ the window's values reproduce the op's output rows (no dropout)."""
    B, H, T, D, Dv = 2, 2, 13, 4, 5
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, Dv)
    rpb = rand(H, bias_size(left, right, edge))
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 4:9] = True
    qd, kd, vd, rpbd, maskd = on(backend, q, k, v, rpb, mask)
    kw = {**window_kwargs(left, right, edge), "key_padding_mask": maskd, "backend": backend}
    probs = fastlocal.local_attention_probs(qd, kd, torch.arange(T, device=qd.device), rpb=rpbd, **kw).cpu()
    out = fastlocal.local_attention(qd, kd, vd, rpb=rpbd, **kw).cpu()
    first = torch.tensor([first_key(i, T, left, right, edge) for i in range(T)])
    keys = first[:, None] + torch.arange(left + right + 1)  # [T, W]
    v_win = v[:, :, keys.clamp(0, T - 1)]  # [B, H, T, W, Dv]; out-of-range entries carry prob 0
    torch.testing.assert_close(torch.einsum("bhtw,bhtwe->bhte", probs, v_win), out, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("T", "left", "right", "edge", "padded"),
    [(7, 2, 2, "clip", False), (8, 3, 1, "clip", True), (6, 2, 0, "clip", False),
     (7, 2, 2, "shift", False), (9, 2, 2, "shift", True), (3, 3, 3, "shift", False)],
)
def test_gradcheck(T, left, right, edge, padded, backend):
    """float64 gradcheck of both ops: local_attention w.r.t. q, k, v, rpb; probs w.r.t. q, k, rpb."""
    B, H, D, Dv = 2, 2, 3, 2
    q, k, v = rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, Dv)
    rpb = rand(H, bias_size(left, right, edge))
    mask = None
    if padded:
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[0, 1:5] = True
        mask[1, :] = True
    q, k, v, rpb = on(backend, q, k, v, rpb, grad=True)
    kw = {**window_kwargs(left, right, edge), "key_padding_mask": on(backend, mask)[0], "backend": backend}
    # Interpreted Triton runs each call ~100x slower: gradcheck's fast mode checks the
    # Jacobian along random directions (a few calls) instead of column by column.
    fast = backend == "triton" and triton_interpreted()
    assert torch.autograd.gradcheck(
        lambda q, k, v, rpb: fastlocal.local_attention(q, k, v, rpb=rpb, **kw), (q, k, v, rpb), fast_mode=fast
    )
    rows = torch.tensor([0, T // 2, T - 1], device=q.device)
    assert torch.autograd.gradcheck(
        lambda q, k, rpb: fastlocal.local_attention_probs(q, k, rows, rpb=rpb, **kw), (q, k, rpb), fast_mode=fast
    )


# --------------------------------------------------------------------------- dropout


def test_keep_mask_bit_exact_against_python_hash():
    g = torch.Generator().manual_seed(7)
    n = 400
    bh = torch.randint(0, 2**31, (n,), generator=g)
    i = torch.randint(0, 2**31, (n,), generator=g)
    j = torch.randint(0, 2**31, (n,), generator=g)
    i[:50], j[:50], bh[:50] = torch.arange(50), torch.arange(50), 0  # small indices, as in practice
    for seed in (0, 1, 12345, 2**31 - 2):
        for p in (0.1, 0.5, 0.9):
            got = keep_mask(seed, bh, i, j, p)
            want = [py_keep(seed, int(a), int(b), int(c), p) for a, b, c in zip(bh, i, j, strict=True)]
            assert got.tolist() == want
    # lowbias32 known answers (zero is a fixed point; the hash is not the identity).
    assert lowbias32(0) == 0
    assert len({lowbias32(x) for x in range(1000)}) == 1000


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_reproducible_under_manual_seed(backend):
    q, k, v = on(backend, rand(2, 2, 16, 4), rand(2, 2, 16, 4), rand(2, 2, 16, 3), grad=True)
    go = on(backend, rand(2, 2, 16, 3))[0]

    def run(seed):
        torch.manual_seed(seed)
        out = fastlocal.local_attention(q, k, v, 5, dropout_p=0.3, backend=backend)
        return (out, *torch.autograd.grad(out, (q, k, v), go))

    first = run(3)
    assert all(torch.equal(a, b) for a, b in zip(first, run(3), strict=True))
    assert not torch.equal(first[0], run(4)[0])
    no_drop = fastlocal.local_attention(q, k, v, 5, backend=backend)
    assert not torch.equal(first[0], no_drop)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_fraction_and_rescaling(p, backend):
    """With uniform attention and one-hot values the output exposes every kept probability."""
    B, H, T, w = 2, 4, 96, 31
    q = torch.zeros(B, H, T, 2, dtype=F64, device=device_of(backend))  # all logits 0 -> p_ij = 1 / n_visible(i)
    v = torch.eye(T, dtype=F64, device=q.device).expand(B, H, T, T)  # out[..., i, j] = kept weight of key j
    torch.manual_seed(0)
    out = fastlocal.local_attention(q, q, v, w, dropout_p=p, backend=backend).cpu()
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    band = ((j - i).abs() <= w // 2).expand(B, H, T, T)
    n_visible = band.sum(-1, keepdim=True).to(F64)
    assert torch.equal(out[~band], torch.zeros_like(out[~band]))
    inside = out[band]
    kept_value = (1.0 / (n_visible * (1 - p))).expand_as(out)[band]
    dropped = inside == 0
    assert torch.allclose(inside[~dropped], kept_value[~dropped], rtol=1e-12, atol=0)
    N = inside.numel()
    # Hash bits are ~independent: the dropped fraction is within 5 standard deviations of p.
    assert abs(dropped.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("left", "right", "edge"), [(2, 2, "clip"), (3, 0, "clip"), (2, 2, "shift")])
def test_dropout_matches_brute_force(left, right, edge, backend):
    """The hash-defined mask, forward and backward: the backward drops the same entries."""
    B, H, T, D, Dv, p = 2, 2, 9, 3, 4, 0.4
    q, k, v = rand(B, H, T, D, grad=True), rand(B, H, T, D, grad=True), rand(B, H, T, Dv, grad=True)
    rpb = rand(H, bias_size(left, right, edge), grad=True)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 2] = True
    leaves = on(backend, q, k, v, rpb, grad=True)
    seed = replay_seed(11)
    torch.manual_seed(11)
    out = fastlocal.local_attention(*leaves[:3], rpb=leaves[3], key_padding_mask=on(backend, mask)[0], dropout_p=p,
                                    backend=backend, **window_kwargs(left, right, edge))
    expect = brute_attention(q, k, v, left, right, edge, rpb, mask,
                             keep=lambda bh, i, j: py_keep(seed, bh, i, j, p), dropout_p=p)
    torch.testing.assert_close(out.detach().cpu(), expect.detach(), rtol=1e-12, atol=1e-12)
    go = rand(B, H, T, Dv)
    grads = cpu(*torch.autograd.grad(out, leaves, on(backend, go)[0]))
    for got, want in zip(grads, torch.autograd.grad(expect, (q, k, v, rpb), go), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- dtypes


# The reference computes in float32 and rounds the result once to the input dtype, so the
# error against float64 maths on the same (rounded) inputs is about one output rounding:
# fp16 has 11 significant bits (2**-11 ~ 5e-4 relative) -> 1e-3; bf16 has 8 (2**-8 ~ 4e-3)
# -> 1e-2; fp32 only accumulates float32 rounding over D + window terms -> 1e-5.
TOLERANCES = {torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("edge", ["clip", "shift"])
def test_low_precision_dtypes(dtype, edge, backend):
    B, H, T, D, Dv = 2, 3, 33, 16, 8
    q, k, v = (rand(B, H, T, d).to(dtype) for d in (D, D, Dv))
    rpb = rand(H, bias_size(4, 4, edge)).to(dtype)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[1, 20:] = True
    rows = torch.tensor([0, 16, 32])
    qd, kd, vd, rpbd, maskd, rowsd = on(backend, q, k, v, rpb, mask, rows)
    out = fastlocal.local_attention(qd, kd, vd, 9, rpbd, edge=edge, key_padding_mask=maskd, backend=backend)
    assert out.dtype == dtype
    exact = fastlocal.local_attention(q.double(), k.double(), v.double(), 9, rpb.double(), edge=edge,
                                      key_padding_mask=mask, backend=REF)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.cpu().double(), exact, rtol=tol, atol=tol)
    probs = fastlocal.local_attention_probs(qd, kd, rowsd, 9, rpbd, edge=edge, key_padding_mask=maskd,
                                            backend=backend)
    assert probs.dtype == dtype
    exact = fastlocal.local_attention_probs(q.double(), k.double(), rows, 9, rpb.double(), edge=edge,
                                            key_padding_mask=mask, backend=REF)
    torch.testing.assert_close(probs.cpu().double(), exact, rtol=tol, atol=tol)


# --------------------------------------------------------------------------- compiled backends vs the reference


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in other strides: "transposed" ([B, H, T, D] stored T-major, a 2-D
    table stored column-major) or "sliced" (every other element of a twice-as-wide buffer)."""
    if layout == "transposed":
        return t.transpose(1, 2).contiguous().transpose(1, 2) if t.dim() == 4 else t.t().contiguous().t()
    if layout == "sliced":
        wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


def run_attention(backend, q, k, v, rpb, go, *, layout="contiguous", seed=0, key_padding_mask=None, **kw):
    """Output and gradients (q, k, v[, rpb]) of ``local_attention`` on the backend's device, back on CPU.

    ``seed`` goes to ``torch.manual_seed`` right before the call (it fixes the dropout mask).
    """
    dev = device_of(backend)
    leaves = [relayout(t.detach().to(dev), layout).requires_grad_() for t in (q, k, v, rpb) if t is not None]
    mask = None if key_padding_mask is None else relayout(key_padding_mask.to(dev), layout)
    torch.manual_seed(seed)
    out = fastlocal.local_attention(*leaves[:3], rpb=leaves[3] if rpb is not None else None, key_padding_mask=mask,
                                    backend=backend, **kw)
    return cpu(out, *torch.autograd.grad(out, leaves, go.to(dev)))


def run_probs(backend, q, k, rows, rpb, go, *, layout="contiguous", key_padding_mask=None, **kw):
    """``local_attention_probs`` and its gradients (q, k[, rpb]), like :func:`run_attention`."""
    dev = device_of(backend)
    leaves = [relayout(t.detach().to(dev), layout).requires_grad_() for t in (q, k, rpb) if t is not None]
    mask = None if key_padding_mask is None else relayout(key_padding_mask.to(dev), layout)
    probs = fastlocal.local_attention_probs(*leaves[:2], rows.to(dev), rpb=leaves[2] if rpb is not None else None,
                                            key_padding_mask=mask, backend=backend, **kw)
    return cpu(probs, *torch.autograd.grad(probs, leaves, go.to(dev)))


def tolerance(dtype: torch.dtype, want: torch.Tensor, n_terms: int) -> tuple[float, float]:
    """(rtol, atol) of a compiled backend against the reference run on the same inputs.

    float64: both are exact up to ~1e-15 per operation; 1e-10 leaves room for sums over
      thousands of terms (the rpb gradient sums over B * T * window) and still catches any
      wrong index or mask.
    float32: both accumulate in float32 (eps 6e-8), in different orders, over D + window
      terms per logit / output and B * T * window per rpb entry; the CPU kernel's exp is a
      polynomial with relative error < 2e-7. Observed differences stay below ~5e-7 of the
      tensor's largest entry: rtol 1e-5 and atol 1e-5 * max|want| give a 20x margin. Plus a
      floor for entries that cancel to ~0 in exact arithmetic (window 1: p = 1, so every
      dS = dP - delta is 0 and the rpb gradient is a sum of B * T rounding residues of dot
      products of length Dv): 4 * eps * sqrt(n_terms), n_terms = B * T * max(D, Dv), four
      standard deviations of that random walk.
    float16 / bfloat16: both compute in float32 from the same rounded inputs and round once
      to the dtype, so results differ where float32 noise straddles a rounding boundary:
      1 ulp = eps * |x| (eps = 2**-10 fp16, 2**-7 bf16) -> rtol 2 * eps, atol eps * max|want|
      (plus :func:`rounding_floors` for dq, dk, drpb).
    """
    if dtype == F64:
        return 1e-10, 1e-10
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    eps = torch.finfo(dtype).eps
    if dtype == torch.float32:
        return 1e-5, 1e-5 * scale + 4 * eps * math.sqrt(n_terms)
    return 2 * eps, eps * scale


def rounding_floors(dtype, grad, saved, q, k, scale: float, window: int, rows: int) -> dict[str, float]:
    """Extra absolute error of dq, dk, drpb when a backward forms delta_i = sum(grad_i * saved_i)
    from ``saved`` (the output, or the probabilities) already rounded to a 16-bit dtype, as
    FlashAttention does, where the reference differentiates the float32 values.

    The roundings (each at most eps/2 relative) shift delta_i by a sum of independent terms
    of standard deviation <= eps / (2 sqrt 3) * ||grad_i * saved_i||_2, and dS_ij = P_ij (dP_ij - delta_i)
    by P_ij times that; 6 standard deviations, carried into dq_i (<= scale * max|k|), dk_j
    (<= window rows: scale * max|q| * sqrt(window)) and drpb (``rows`` rows: sqrt(rows)). This can dwarf the
    gradient itself: p = 1 (one visible key) makes dq, dk, drpb exactly 0 in exact arithmetic.
    """
    if dtype not in (torch.float16, torch.bfloat16) or grad.numel() == 0:
        return {}
    eps = torch.finfo(dtype).eps
    delta = 6 * eps / (2 * math.sqrt(3)) * (grad.double() * saved.double()).norm(dim=-1).max().item()
    return {
        "dq": delta * scale * k.abs().max().item(),
        "dk": delta * scale * q.abs().max().item() * math.sqrt(window),
        "drpb": delta * math.sqrt(rows),
    }


def assert_matches(got: list, want: list, dtype: torch.dtype, names: str, n_terms: int, floors=None) -> None:
    """Each of ``got`` equals ``want`` within :func:`tolerance` (+ ``floors[name]``, absolute)."""
    for a, b, name in zip(got, want, names.split(), strict=True):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape, name
        rtol, atol = tolerance(dtype, b.double(), n_terms)
        atol += (floors or {}).get(name, 0.0)
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


PADDINGS = ("none", "random", "padded_row", "padded_block")


def padding_mask(kind: str, B: int, T: int, W: int, gen: torch.Generator) -> torch.Tensor | None:
    """none; random 30%; random + batch row 0 fully padded; or a run of W + 2 padded keys,
    which leaves the queries around it with no visible key at all."""
    if kind == "none":
        return None
    mask = torch.rand(B, T, generator=gen) < 0.3
    if kind == "padded_row":
        mask[0] = True
    elif kind == "padded_block":
        mask[:] = False
        start = int(torch.randint(0, T, (), generator=gen))
        mask[:, start : start + W + 2] = True
    return mask


# T beyond the 512-row tasks of the CPU kernel: rows of one sequence split over several
# tasks, whose dk / dv halos and rpb partials are merged afterwards.
LONG_T = (513, 700, 1100)


SWEEP = dict(
    B=st.integers(1, 2),
    H=st.integers(1, 3),
    left=st.integers(0, 8),
    right=st.one_of(st.just(0), st.integers(0, 8)),  # 0: causal
    edge=st.sampled_from(["clip", "shift"]),
    T_draw=st.one_of(st.floats(0.0, 1.0), st.sampled_from(LONG_T)),  # a fraction of 3 * window, or LONG_T
    D=st.integers(1, 64),
    Dv=st.integers(1, 64),
    use_rpb=st.booleans(),
    padding=st.sampled_from(PADDINGS),
    dtype=st.sampled_from([F64, torch.float32, torch.bfloat16, torch.float16]),
    layout=st.sampled_from(["contiguous", "transposed", "sliced"]),
    scale_factor=st.one_of(st.none(), st.floats(0.25, 2.0)),
    dropout_p=st.sampled_from([0.0, 0.0, 0.3]),
    rows_per_batch=st.booleans(),
    seed=st.integers(0, 2**16),
)


@pytest.mark.parametrize("backend", AT_SCALE)
@settings(max_examples=300, deadline=None)
@given(**SWEEP)
def test_matches_reference_backend(backend, **case):
    """Forward and the four gradients, then probs and its three, against the reference backend."""
    check_matches_reference(backend, **case)


@pytest.mark.parametrize("backend", INTERPRETED)
@settings(max_examples=25, deadline=None)
@given(**{**SWEEP, "T_draw": st.floats(0.0, 1.0)})
def test_matches_reference_backend_interpreted(backend, **case):
    """The same sweep for interpreted Triton: fewer examples, T up to 3 windows."""
    check_matches_reference(backend, **case)


def check_matches_reference(backend, B, H, left, right, edge, T_draw, D, Dv, use_rpb, padding, dtype, layout,
                            scale_factor, dropout_p, rows_per_batch, seed):
    """Forward and the four gradients, then probs and its three, against the reference backend.

    The reference always gets contiguous inputs; the backend under test gets ``layout``.
    """
    if edge == "shift":
        right = left
    W = left + right + 1
    T = T_draw if isinstance(T_draw, int) else 1 + round(T_draw * (3 * W - 1))  # 1 .. 3 * window
    if T > 3 * W:
        dropout_p = 0.0  # the reference's dropout hash is slow on long sequences; short ones cover it
    g = torch.Generator().manual_seed(seed)
    q, k, v = (rand(B, H, T, d, gen=g).to(dtype) for d in (D, D, Dv))
    rpb = rand(H, bias_size(left, right, edge), gen=g).to(dtype) if use_rpb else None
    go = rand(B, H, T, Dv, gen=g).to(dtype)
    kw = {**window_kwargs(left, right, edge), "key_padding_mask": padding_mask(padding, B, T, W, g),
          "scale": None if scale_factor is None else scale_factor * D**-0.5}
    names = "out dq dk dv" + (" drpb" if use_rpb else "")

    want = run_attention(REF, q, k, v, rpb, go, seed=seed, dropout_p=dropout_p, **kw)
    got = run_attention(backend, q, k, v, rpb, go, layout=layout, seed=seed, dropout_p=dropout_p, **kw)
    n_terms = B * T * max(D, Dv)
    sm_scale = D**-0.5 if kw["scale"] is None else kw["scale"]
    assert_matches(got, want, dtype, names, n_terms, rounding_floors(dtype, go, want[0], q, k, sm_scale, W, B * T))

    R = 5
    rows = torch.randint(0, T, (B, R) if rows_per_batch else (R,), generator=g)
    gp = rand(B, H, R, W, gen=g).to(dtype)
    want = run_probs(REF, q, k, rows, rpb, gp, **kw)
    got = run_probs(backend, q, k, rows, rpb, gp, layout=layout, **kw)
    assert_matches(got, want, dtype, "probs dq dk" + (" drpb" if use_rpb else ""), n_terms,
                   rounding_floors(dtype, gp, want[0], q, k, sm_scale, W, B * R))


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize(
    ("T", "D", "Dv", "left", "right", "edge", "dtype"),
    [
        (600, 256, 256, 4, 4, "clip", F64),  # the largest head dims: D = Dv = 256
        (600, 256, 256, 4, 4, "shift", torch.float32),
        (1100, 8, 8, 300, 300, "clip", F64),  # window > 512 rows: tasks of `window` rows, halos of 600
        (1100, 8, 8, 350, 0, "clip", F64),  # long causal window
        (1100, 8, 8, 300, 300, "shift", F64),
        (500, 8, 8, 600, 600, "clip", F64),  # window >= 2T - 1: one task, full attention
    ],
)
def test_matches_reference_backend_large(backend, T, D, Dv, left, right, edge, dtype):
    B, H = 1, 2
    if backend in _INTERPRETED:  # same shapes a quarter the size: windows still span many tiles
        T, left, right = T // 4, left // 4, right // 4
    g = torch.Generator().manual_seed(T + D + left)
    q, k, v = (rand(B, H, T, d, gen=g).to(dtype) for d in (D, D, Dv))
    rpb = rand(H, bias_size(left, right, edge), gen=g).to(dtype)
    go = rand(B, H, T, Dv, gen=g).to(dtype)
    kw = {**window_kwargs(left, right, edge), "key_padding_mask": torch.rand(B, T, generator=g) < 0.2}
    want = run_attention(REF, q, k, v, rpb, go, **kw)
    n_terms = B * T * max(D, Dv)
    assert_matches(run_attention(backend, q, k, v, rpb, go, **kw), want, dtype, "out dq dk dv drpb", n_terms)
    rows = torch.tensor([0, 1, T // 2, T - 2, T - 1])
    gp = rand(B, H, len(rows), left + right + 1, gen=g).to(dtype)
    want = run_probs(REF, q, k, rows, rpb, gp, **kw)
    assert_matches(run_probs(backend, q, k, rows, rpb, gp, **kw), want, dtype, "probs dq dk drpb", n_terms)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize(("p", "edge"), [(0.3, "clip"), (0.5, "shift")])
def test_dropout_matches_reference_backend(backend, p, edge):
    """Every backend drops the same entries (one counter-based hash), forward and backward,
    here over several 512-row tasks and both ends of the sequence."""
    B, H, T, D, Dv, w = 2, 2, 1100, 8, 8, 31
    if backend in _INTERPRETED:
        T = 275  # both ends and the middle still differ; the interpreter is ~1000x slower
    g = torch.Generator().manual_seed(5)
    q, k, v, go = (rand(B, H, T, d, gen=g) for d in (D, D, Dv, Dv))
    rpb = rand(H, bias_size(w // 2, w // 2, edge), gen=g)
    mask = torch.rand(B, T, generator=g) < 0.1
    kw = {"window": w, "edge": edge, "key_padding_mask": mask, "dropout_p": p, "seed": 123}
    want = run_attention(REF, q, k, v, rpb, go, **kw)
    got = run_attention(backend, q, k, v, rpb, go, **kw)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    no_drop = run_attention(backend, q, k, v, rpb, go, **{**kw, "dropout_p": 0.0})
    assert not torch.equal(got[0], no_drop[0])


def reproduced_rows(s: int, e: int, T: int, half: int) -> torch.Tensor:
    """Rows i of slice [s, e) whose window the slice alone reproduces, for both edges.

    Query i's window is the same in the slice as in the whole sequence iff it does not
    reach past a slice end that is not a sequence end: (i - half >= s or s == 0) and
    (i + half < e or e == T). (For ``shift`` this is where the NATTEN start is the same.)
    """
    i = torch.arange(s, e)
    return i[((i - half >= s) | (s == 0)) & ((i + half < e) | (e == T))]


@pytest.mark.slow
@pytest.mark.parametrize("backend", AT_SCALE)
@pytest.mark.parametrize("edge", ["clip", "shift"])
def test_long_sequence_against_reference_slices(backend, edge):
    """T = 65,536: the backend on the whole sequence, the reference on slices of rows.

    Attention is local, so with the output gradient nonzero only on rows whose windows a
    slice reproduces (start, middle, end), the reference run on that slice alone gives
    those rows' outputs and every gradient on the slice exactly; the backend's dq, dk, dv
    are zero outside the slices and its rpb gradient is the sum of the slices'.
    """
    B, H, T, D, Dv, w = 1, 2, 65_536, 16, 8, 51
    half, span = w // 2, 4 * w
    g = torch.Generator().manual_seed(3)
    q, k = rand(B, H, T, D, gen=g), rand(B, H, T, D, gen=g)
    v = rand(B, H, T, Dv, gen=g)
    rpb = rand(H, bias_size(half, half, edge), gen=g)
    mask = torch.rand(B, T, generator=g) < 0.1
    slices = [(0, span), (T // 2 - span // 2, T // 2 + span // 2), (T - span, T)]
    go = torch.zeros(B, H, T, Dv, dtype=F64)
    for s, e in slices:
        rows = reproduced_rows(s, e, T, half)
        go[:, :, rows] = rand(B, H, len(rows), Dv, gen=g)
    out, dq, dk, dv, drpb = run_attention(backend, q, k, v, rpb, go, window=w, edge=edge, key_padding_mask=mask)

    outside = torch.ones(T, dtype=torch.bool)
    drpb_want = torch.zeros_like(drpb)
    for s, e in slices:
        outside[s:e] = False
        part = slice(s, e)
        want = run_attention(REF, q[:, :, part], k[:, :, part], v[:, :, part], rpb, go[:, :, part], window=w,
                             edge=edge, key_padding_mask=mask[:, part])
        rows = reproduced_rows(s, e, T, half)
        torch.testing.assert_close(out[:, :, rows], want[0][:, :, rows - s], rtol=1e-10, atol=1e-10)
        for got, ref in zip((dq, dk, dv), want[1:4], strict=True):
            torch.testing.assert_close(got[:, :, part], ref, rtol=1e-10, atol=1e-10)
        drpb_want += want[4]
    torch.testing.assert_close(drpb, drpb_want, rtol=1e-10, atol=1e-10)
    for grad in (dq, dk, dv):
        assert torch.equal(grad[:, :, outside], torch.zeros_like(grad[:, :, outside]))
    assert out.isfinite().all()


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize(("edge", "dropout_p"), [("clip", 0.0), ("shift", 0.2)])
def test_gradients_bitwise_deterministic(backend, edge, dropout_p):
    """Output and all gradients, the rpb one above all, are bitwise identical run to run and,
    on CPU, for 1 and 2 threads: T = 3000 makes 6 tasks of 512 rows per (b, h), 24 in all,
    whose halos and rpb partials are merged in a fixed order."""
    B, H, T, D, Dv, w = 2, 2, 3000, 16, 16, 51
    if backend in _INTERPRETED:
        T = 160  # still 10 blocks of rows per (b, h) for the bias-gradient partials
    g = torch.Generator().manual_seed(9)
    q, k, v, go = (rand(B, H, T, d, dtype=torch.float32, gen=g) for d in (D, D, Dv, Dv))
    rpb = rand(H, bias_size(w // 2, w // 2, edge), dtype=torch.float32, gen=g)
    mask = torch.rand(B, T, generator=g) < 0.1

    def run():
        return run_attention(backend, q, k, v, rpb, go, window=w, edge=edge, key_padding_mask=mask,
                             dropout_p=dropout_p, seed=4)

    first = run()
    assert first[4].abs().sum() > 0
    runs = [run()]
    if backend == "cpu":
        threads = torch.get_num_threads()
        try:
            for n in (1, 2):
                torch.set_num_threads(n)
                runs.append(run())
        finally:
            torch.set_num_threads(threads)
    for again in runs:
        for name, a, b in zip(("out", "dq", "dk", "dv", "drpb"), first, again, strict=True):
            assert torch.equal(a, b), name


# --------------------------------------------------------------------------- long sequences (reference)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces (forward and CPU backward alike)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


@pytest.mark.slow
@pytest.mark.parametrize("edge", ["clip", "shift"])
def test_long_sequence_banded(edge):
    """Reference, T = 100k forward + backward: no tensor beyond O(T * window), fast, and correct on
    sampled rows. (The compiled kernels are opaque to dispatch modes; see the T = 65,536 test.)"""
    B, H, T, D, w = 1, 2, 100_000, 16, 51
    g = torch.Generator().manual_seed(0)
    q, k, v = (rand(B, H, T, D, dtype=torch.float32, grad=True, gen=g) for _ in range(3))
    rpb = rand(H, bias_size(25, 25, edge), dtype=torch.float32, grad=True, gen=g)
    rows = [0, 1, 24, 25, 26, 50_000, 50_001, T - 26, T - 2, T - 1]
    go = torch.zeros(B, H, T, D)
    go[:, :, rows] = rand(B, H, len(rows), D, dtype=torch.float32, gen=g)

    start = time.perf_counter()  # single-threaded (conftest.one_thread), so the timing is stable
    with LargestTensor() as largest:
        out = fastlocal.local_attention(q, k, v, w, rpb, edge=edge, backend=REF)
        out.backward(go)
    elapsed = time.perf_counter() - start

    # A T x T matrix would be 2e10 entries; the banded reference stays within a few B*H*T*window.
    assert largest.numel <= 4 * B * H * T * w, largest.numel
    assert elapsed < 30, f"T=100k forward+backward took {elapsed:.1f} s"

    # Rows near both ends and in the middle against the oracle, outputs and gradients.
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v, rpb)]
    expect = brute_attention(*leaves[:3], 25, 25, edge, leaves[3], rows=rows)
    torch.testing.assert_close(out[:, :, rows].double(), expect, rtol=1e-5, atol=1e-5)
    expect.backward(go[:, :, rows].double())
    for t, ref in zip((q, k, v, rpb), leaves, strict=True):
        torch.testing.assert_close(t.grad.double(), ref.grad, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- torch.compile and custom ops


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_matches_eager(backend):
    """The whole public path (checks, dispatch, kernel or reference) traces without a graph break.

    ``aot_eager`` runs Dynamo with ``fullgraph=True`` and AOTAutograd (forward and backward
    graphs) but skips Inductor's C++ code generation, which adds ~20 s and tests torch rather
    than fastlocal.
    """
    B, H, T, D, Dv = 2, 2, 11, 4, 3
    q, k, v, rpb = on(backend, rand(B, H, T, D), rand(B, H, T, D), rand(B, H, T, Dv), rand(H, 5), grad=True)
    mask = torch.zeros(B, T, dtype=torch.bool, device=q.device)
    mask[1, 7:] = True
    rows = torch.tensor([0, 5, 10], device=q.device)

    def fn(q, k, v, rpb, mask):
        out = fastlocal.local_attention(q, k, v, 5, rpb, key_padding_mask=mask, backend=backend)
        probs = fastlocal.local_attention_probs(q, k, rows, 5, rpb, key_padding_mask=mask, backend=backend)
        return out, probs

    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(q, k, v, rpb, mask)
    want = fn(q, k, v, rpb, mask)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    go = on(backend, rand(B, H, T, Dv), rand(B, H, 3, 5))
    grads = torch.autograd.grad(got, (q, k, v, rpb), go)
    for a, b in zip(grads, torch.autograd.grad(want, (q, k, v, rpb), go), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_opcheck_custom_ops(backend, dtype):
    """``torch.library.opcheck`` (schema, autograd registration, fake tensors, AOT dispatch) of the
    four ``fastlocal::`` ops behind the compiled backends: with bias, padding and dropout in float32,
    without them (``shift`` edges) in float64.

    The backward ops have no autograd formula of their own (no double backward), so their
    inputs do not require grad.
    """
    B, H, T, D, Dv = 2, 2, 9, 4, 3
    dev = device_of(backend)
    full = dtype == torch.float32
    q, k, v = (rand(B, H, T, d, dtype=dtype).to(dev).requires_grad_() for d in (D, D, Dv))
    rpb = rand(H, 5, dtype=dtype).to(dev).requires_grad_() if full else None
    mask = None
    if full:
        mask = torch.zeros(B, T, dtype=torch.bool, device=dev)
        mask[1, 5:] = True
    shift, dropout_p = (False, 0.2) if full else (True, 0.0)
    rows = torch.tensor([[0, 4, 8], [1, 1, 8]], device=dev)
    window = (2, 2, shift, 0.5)
    ops = torch.ops.fastlocal

    def check(op, args):
        result = torch.library.opcheck(op, args)
        assert result and all(status == "SUCCESS" for status in result.values()), result

    forward = (q, k, v, rpb, mask, *window, dropout_p, 1234, backend)
    check(ops.local_attention.default, forward)
    out, lse = (t.detach() for t in ops.local_attention(*forward))
    plain = [None if t is None else t.detach() for t in (q, k, v, rpb)]
    check(ops.local_attention_backward.default,
          (torch.randn_like(out), *plain[:3], out, lse, plain[3], mask, *window, dropout_p, 1234, backend))

    probs_args = (q, k, rows, rpb, mask, *window, backend)
    check(ops.local_attention_probs.default, probs_args)
    probs = ops.local_attention_probs(*probs_args).detach()
    check(ops.local_attention_probs_backward.default,
          (torch.randn_like(probs), probs, *plain[:2], rows, plain[3], mask, *window, backend))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(("edge", "dropout_p"), [("clip", 0.0), ("shift", 0.25)])
def test_cpu_baseline_isa_matches_avx2(monkeypatch, dtype, edge, dropout_p):
    """Both instruction-set builds of the cpu kernel compute the same thing.

    The kernels are compiled for baseline x86-64 and for AVX2+FMA, and the machine picks
    one at run time; FASTLOCAL_CPU_ISA=baseline forces the portable build, which would
    otherwise never run on an AVX2 machine. They differ only by FMA rounding.
    """
    reason = unusable("local_attention", "cpu", LA.IMPLEMENTED)
    if reason:
        pytest.skip(reason)
    gen = torch.Generator().manual_seed(11)
    q, k = (rand(2, 2, 700, 24, dtype=dtype, grad=True, gen=gen) for _ in range(2))
    v = rand(2, 2, 700, 20, dtype=dtype, grad=True, gen=gen)
    rpb = rand(2, bias_size(4, 4, edge), dtype=dtype, grad=True, gen=gen)
    mask = torch.rand(2, 700, generator=gen) < 0.2

    def run() -> list[torch.Tensor]:
        torch.manual_seed(5)
        out = fastlocal.local_attention(q, k, v, 9, rpb, edge=edge, key_padding_mask=mask, dropout_p=dropout_p,
                                        backend="cpu")
        return [out, *torch.autograd.grad(out, [q, k, v, rpb], torch.ones_like(out))]

    fast = run()
    monkeypatch.setenv("FASTLOCAL_CPU_ISA", "baseline")
    portable = run()
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for a, b in zip(fast, portable, strict=True):
        torch.testing.assert_close(a, b, **tol)
