"""Correctness of ``fastlocal.topk_std_pool`` and ``fastlocal.topk_std_attention`` (VidTr).

The oracles loop over rows in plain Python, written from docs/design.md ("topk_std_pool,
topk_std_attention (VidTr)") and the released VidTr code: row score = unbiased
std over keys (statistics formula), the ``keep`` highest kept (ties: lower index) in
ascending order, the class row (row 0) unranked and kept first with ``exclude_first``,
and ``second_softmax`` = softmax along keys of ``cat([cls_row, pooled_rows])``.

``topk_std_pool`` runs on its backends (``POOL_BACKENDS``). ``topk_std_attention`` runs on
every backend (``BACKENDS``: ``IMPLEMENTED`` plus triton and cuda): the brute-force tests
run each one, and a hypothesis sweep checks the compiled ones (``OTHERS``) against the
reference semantics, forward and backward. A backend that is not built or not usable here
is skipped with the reason ``fastlocal.available_backends()`` gives; GPU backends are
marked ``gpu`` and take CUDA tensors (CPU tensors for triton under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from backends import GPU_BACKENDS, backend_params, device_of
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlocal
from fastlocal._dispatch import triton_interpreted
from fastlocal.reference import topk_std as reference

TOPK = importlib.import_module("fastlocal.topk_std")
F64 = {"rtol": 1e-12, "atol": 1e-14}
REF = "reference"


pytestmark = pytest.mark.usefixtures("one_thread")


_NAMES = tuple(dict.fromkeys((*TOPK.IMPLEMENTED, *GPU_BACKENDS)))
BACKENDS = backend_params("topk_std_attention", TOPK.IMPLEMENTED, _NAMES)
OTHERS = backend_params("topk_std_attention", TOPK.IMPLEMENTED, (n for n in _NAMES if n != REF))
POOL_BACKENDS = TOPK.POOL_IMPLEMENTED


def on(backend: str, *tensors, grad: bool = False) -> list[torch.Tensor]:
    """Fresh leaves on the backend's device (keeping the strides of non-contiguous views)."""
    dev = device_of(backend)
    moved = []
    for t in tensors:
        copy = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=dev)
        copy.copy_(t.detach())
        moved.append(copy.requires_grad_(grad))
    return moved


# The interpreter runs Triton kernels in Python: keep its problems (and example counts) small.
INTERPRETED = {"triton"} if triton_interpreted() else set()


def brute_std(row: list[float]) -> float:
    """Unbiased standard deviation: sqrt(sum((x - mean)^2) / (n - 1)); 0 for one element."""
    n = len(row)
    if n < 2:
        return 0.0
    mean = sum(row) / n
    return math.sqrt(sum((x - mean) ** 2 for x in row) / (n - 1))


def brute_softmax(row: list[float]) -> list[float]:
    """Numerically stable softmax of a list."""
    m = max(row)
    e = [math.exp(x - m) for x in row]
    return [x / sum(e) for x in e]


def brute_select(attn_rows: list[list[float]], keep: int, exclude_first: bool) -> list[int]:
    """Row indices kept: top ``keep`` stds among ranked rows (ties: lower index), ascending."""
    first = 1 if exclude_first else 0
    ranked = list(range(first, len(attn_rows)))
    stds = {i: brute_std(attn_rows[i]) for i in ranked}
    return sorted(sorted(ranked, key=lambda i: (-stds[i], i))[:keep])


def brute_pool_matrix(rows: list[list[float]], keep: int, exclude_first: bool, second_softmax: bool):
    """One [T, N] attention matrix -> (pooled rows, kept indices)."""
    index = brute_select(rows, keep, exclude_first)
    pooled = ([rows[0]] if exclude_first else []) + [rows[i] for i in index]
    if second_softmax:
        pooled = [brute_softmax(r) for r in pooled]
    return pooled, index


def brute_topk_std_pool(attn: torch.Tensor, keep: int, exclude_first: bool, second_softmax: bool):
    """[..., T, N] -> (pooled [..., keep(+1), N] float64, index [..., keep])."""
    lead, (T, N) = attn.shape[:-2], attn.shape[-2:]
    pooled, index = [], []
    for matrix in attn.double().reshape(-1, T, N).tolist():
        p, i = brute_pool_matrix(matrix, keep, exclude_first, second_softmax)
        pooled.append(p)
        index.append(i)
    rows = keep + int(exclude_first)
    return (torch.tensor(pooled, dtype=torch.float64).reshape(*lead, rows, N),
            torch.tensor(index, dtype=torch.int64).reshape(*lead, keep))


def brute_topk_std_attention(q, k, v, keep, exclude_first, scale, second_softmax):
    """Loop attention: softmax(scale * q.k) per row, pooled by the brute pool, times v."""
    B, H, T, D = q.shape
    qs, ks, vs = q.double().tolist(), k.double().tolist(), v.double().tolist()
    scale = D**-0.5 if scale is None else scale
    out, index = [], []
    for b in range(B):
        for h in range(H):
            qbh, kbh, vbh = qs[b][h], ks[b][h], vs[b][h]
            logits = [[scale * sum(x * y for x, y in zip(qbh[i], kbh[j], strict=True)) for j in range(T)]
                      for i in range(T)]
            attn = [brute_softmax(row) for row in logits]
            pooled, idx = brute_pool_matrix(attn, keep, exclude_first, second_softmax)
            out.append([[sum(p[j] * vbh[j][d] for j in range(T)) for d in range(len(vbh[0]))]
                        for p in pooled])
            index.append(idx)
    rows = keep + int(exclude_first)
    return (torch.tensor(out, dtype=torch.float64).reshape(B, H, rows, v.shape[-1]),
            torch.tensor(index, dtype=torch.int64).reshape(B, H, keep))


def random_attn(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Softmax rows of random logits with row-dependent temperatures (varied stds)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64)
    temperature = torch.rand(*shape[:-1], 1, generator=g, dtype=torch.float64) * 3
    return torch.softmax(logits * temperature, dim=-1).to(dtype)


SHAPES = [(5, 4), (2, 7, 6), (2, 3, 9, 5), (1, 2, 2, 6, 13), (3, 4, 1)]  # N=1: every std is 0


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("second_softmax", [False, True])
@pytest.mark.parametrize("exclude_first", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_pool_matches_brute_force(backend, shape, exclude_first, second_softmax):
    attn = random_attn(shape, seed=len(shape) * 100 + shape[-1])
    T = shape[-2]
    max_keep = T - 1 if exclude_first else T
    for keep in sorted({1, max(1, max_keep // 2), max_keep}):
        pooled, index = fastlocal.topk_std_pool(attn, keep, exclude_first=exclude_first,
                                                second_softmax=second_softmax, backend=backend)
        want_pooled, want_index = brute_topk_std_pool(attn, keep, exclude_first, second_softmax)
        assert index.dtype == torch.int64
        assert torch.equal(index, want_index)
        torch.testing.assert_close(pooled, want_pooled, **F64)
        if keep == max_keep and not second_softmax:
            assert torch.equal(pooled, attn)  # every row kept, in order


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_pool_hand_case(backend):
    # Row stds (N=3): row 0 (cls) [1, 0, 0] is the most peaked but never ranked;
    # row 1 uniform -> 0; row 2 [0.5, 0.5, 0] -> sqrt(1/12); row 3 [0.8, 0.1, 0.1] ->
    # sqrt(((0.8-1/3)^2 + 2*(0.1-1/3)^2)/2) = sqrt(0.49/3); row 4 = row 2 (tie, higher index).
    attn = torch.tensor([[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0], [0.8, 0.1, 0.1], [0.5, 0.5, 0]],
                        dtype=torch.float64)
    pooled, index = fastlocal.topk_std_pool(attn, 2, backend=backend)
    assert index.tolist() == [2, 3]  # 3 has the largest std, then 2 beats its twin 4
    assert torch.equal(pooled, attn[[0, 2, 3]])
    pooled, index = fastlocal.topk_std_pool(attn, 1, exclude_first=False, backend=backend)
    assert index.tolist() == [0] and torch.equal(pooled, attn[[0]])
    pooled, index = fastlocal.topk_std_pool(attn, 3, exclude_first=False, backend=backend)
    assert index.tolist() == [0, 2, 3]
    # second_softmax re-normalises the kept rows (cls row included) along keys.
    pooled, _ = fastlocal.topk_std_pool(attn, 1, second_softmax=True, backend=backend)
    e = math.e
    want = torch.tensor([[e / (e + 2), 1 / (e + 2), 1 / (e + 2)],
                         [math.exp(0.8) / (math.exp(0.8) + 2 * math.exp(0.1)),
                          math.exp(0.1) / (math.exp(0.8) + 2 * math.exp(0.1)),
                          math.exp(0.1) / (math.exp(0.8) + 2 * math.exp(0.1))]], dtype=torch.float64)
    torch.testing.assert_close(pooled, want, **F64)


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("exclude_first", [True, False])
def test_exact_ties_prefer_lower_index(backend, exclude_first):
    g = torch.Generator().manual_seed(11)
    # N = 13 (not a multiple of a SIMD width): identical rows must still score identically.
    base = torch.softmax(torch.randn(4, 13, generator=g, dtype=torch.float64) * 2, dim=-1)
    # rows: 0 1 2 3 4 5 6 7 = b0 b1 b1 b2 b1 b2 b3 b3 (b_i distinct); the cls row 0 is b0.
    attn = base[[0, 1, 1, 2, 1, 2, 3, 3]]
    first = 1 if exclude_first else 0
    for keep in range(1, 8 - first + 1):
        _, index = fastlocal.topk_std_pool(attn, keep, exclude_first=exclude_first, backend=backend)
        assert index.tolist() == brute_select(attn.tolist(), keep, exclude_first)
    # All rows uniform: all stds are exactly 0, so the first rows win.
    flat = torch.full((2, 9, 6), 1 / 6, dtype=torch.float64)
    _, index = fastlocal.topk_std_pool(flat, 3, exclude_first=exclude_first, backend=backend)
    assert index.tolist() == [[first, first + 1, first + 2]] * 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("second_softmax", [False, True])
@pytest.mark.parametrize("exclude_first", [True, False])
def test_attention_matches_brute_force(backend, exclude_first, second_softmax):
    g = torch.Generator().manual_seed(12)
    for B, H, T, D, Dv in [(2, 2, 7, 4, 3), (1, 3, 5, 8, 8), (2, 1, 2, 3, 5)]:
        q, k = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) * 1.5 for _ in range(2))
        v = torch.randn(B, H, T, Dv, generator=g, dtype=torch.float64)
        max_keep = T - 1 if exclude_first else T
        for keep in sorted({1, max_keep}):
            for scale in (None, 0.7):
                out, index = fastlocal.topk_std_attention(
                    *on(backend, q, k, v), keep, exclude_first=exclude_first, scale=scale,
                    second_softmax=second_softmax, backend=backend)
                want_out, want_index = brute_topk_std_attention(
                    q, k, v, keep, exclude_first, scale, second_softmax)
                assert index.dtype == torch.int64
                assert torch.equal(index.cpu(), want_index)
                torch.testing.assert_close(out.cpu(), want_out, **F64)


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("second_softmax", [False, True])
@pytest.mark.parametrize("exclude_first", [True, False])
def test_pool_gradcheck(backend, exclude_first, second_softmax):
    attn = random_attn((2, 5, 4), seed=13).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: fastlocal.topk_std_pool(a, 3, exclude_first=exclude_first, second_softmax=second_softmax,
                                          backend=backend)[0], (attn,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("second_softmax", [False, True])
@pytest.mark.parametrize("exclude_first", [True, False])
def test_attention_gradcheck(backend, exclude_first, second_softmax):
    q, k, v = well_separated_qkv(1, 2, 5, 3, 2, seed=14, keep=2, exclude_first=exclude_first)
    inputs = on(backend, q, k, v, grad=True)
    # Interpreted Triton takes ~0.2 s a call: fast mode checks one random direction instead
    # of every input element (a handful of calls instead of ~200).
    assert torch.autograd.gradcheck(
        lambda q, k, v: fastlocal.topk_std_attention(
            q, k, v, 2, exclude_first=exclude_first, second_softmax=second_softmax, backend=backend)[0],
        inputs, fast_mode=backend in INTERPRETED)


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("second_softmax", [False, True])
@pytest.mark.parametrize("exclude_first", [True, False])
def test_no_gradient_into_unselected_rows(backend, exclude_first, second_softmax):
    attn = random_attn((2, 3, 8, 6), seed=15).requires_grad_()
    pooled, index = fastlocal.topk_std_pool(
        attn, 3, exclude_first=exclude_first, second_softmax=second_softmax, backend=backend)
    upstream = torch.randn_like(pooled)
    pooled.backward(upstream)
    kept = torch.zeros(2, 3, 8, dtype=torch.bool)
    kept.scatter_(-1, index, True)
    if exclude_first:
        kept[..., 0] = True
    assert torch.equal(attn.grad[~kept], torch.zeros_like(attn.grad[~kept]))  # exactly zero
    assert (attn.grad[kept].abs().sum(-1) > 0).all()
    if not second_softmax:
        # A plain gather: the kept rows receive the upstream gradient unchanged.
        rows = torch.cat([torch.zeros_like(index[..., :1]), index], -1) if exclude_first else index
        assert torch.equal(attn.grad.gather(-2, rows[..., None].expand(*rows.shape, 6)), upstream)


def well_separated_qkv(B, H, T, D, Dv, *, seed, keep, exclude_first, gap=1e-3):
    """q, k, v in float64 whose ranked rows' stds are >= ``gap`` apart at the selection boundary.

    Per (batch, head), q rows are one direction times distinct, shuffled temperatures (plus
    a little noise), so their attention rows range from flat to peaked; the gap is asserted,
    so a low-precision or perturbed (gradcheck) run cannot change the selection.
    """
    g = torch.Generator().manual_seed(seed)
    temps = torch.linspace(0.2, 4.0, T, dtype=torch.float64)[torch.randperm(T, generator=g)]
    direction = torch.randn(B, H, 1, D, generator=g, dtype=torch.float64)
    q = direction * temps[:, None] + 0.05 * torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, T, Dv, generator=g, dtype=torch.float64)
    first = 1 if exclude_first else 0
    attn = torch.softmax(q @ k.transpose(-1, -2) * D**-0.5, dim=-1)
    stds = attn[..., first:, :].std(dim=-1).sort(dim=-1, descending=True).values
    if keep < stds.shape[-1]:
        assert (stds[..., keep - 1] - stds[..., keep] > gap).all(), "test inputs are not well separated"
    return q, k, v


# Low precision: the kernels compute in float32 from the rounded inputs and round once at
# the end, so vs float64 on the same rounded inputs the error is that final rounding
# (<= 2^-11 relative for float16, 2^-8 for bfloat16; rtol = 2x) plus float32 arithmetic
# on O(1) values (~1e-6, atol). The selection is identical because the inputs' stds are
# well separated (>= 1e-3 >> float32 error of the std).
LOW_PRECISION = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float16: {"rtol": 2 * 2**-11, "atol": 1e-5},
    torch.bfloat16: {"rtol": 2 * 2**-8, "atol": 1e-5},
}


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("second_softmax", [False, True])
@pytest.mark.parametrize("dtype", list(LOW_PRECISION), ids=str)
def test_pool_low_precision(backend, dtype, second_softmax):
    # Row i = uniform + a_i * u with u zero-mean: std_i = a_i * std(u), a_i distinct and
    # spaced by 1/(4T) of u's scale, far above the dtype's rounding of the entries.
    g = torch.Generator().manual_seed(16)
    T, N = 10, 12
    u = torch.randn(N, generator=g, dtype=torch.float64)
    u = (u - u.mean()) / u.abs().max() / N
    amp = torch.stack([torch.randperm(T, generator=g) for _ in range(6)]).reshape(2, 3, T).double() / T + 0.1
    attn = (1 / N + amp[..., None] * u).to(dtype)
    pooled, index = fastlocal.topk_std_pool(attn, 4, second_softmax=second_softmax, backend=backend)
    want_pooled, want_index = brute_topk_std_pool(attn.double(), 4, True, second_softmax)
    assert pooled.dtype == dtype
    assert torch.equal(index, want_index)
    if second_softmax:
        torch.testing.assert_close(pooled.double(), want_pooled, **LOW_PRECISION[dtype])
    else:
        assert torch.equal(pooled.double(), want_pooled)  # a gather: bitwise copies


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("second_softmax", [False, True])
@pytest.mark.parametrize("dtype", list(LOW_PRECISION), ids=str)
def test_attention_low_precision(backend, dtype, second_softmax):
    q, k, v = well_separated_qkv(2, 2, 9, 8, 5, seed=17, keep=4, exclude_first=True)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    out, index = fastlocal.topk_std_attention(*on(backend, q, k, v), 4, second_softmax=second_softmax,
                                              backend=backend)
    want_out, want_index = brute_topk_std_attention(q, k, v, 4, True, None, second_softmax)
    assert out.dtype == dtype
    assert torch.equal(index.cpu(), want_index)
    torch.testing.assert_close(out.cpu().double(), want_out, **LOW_PRECISION[dtype])
    # Gradients flow in low precision too and match float64 up to the same rounding.
    low_inputs = on(backend, q, k, v, grad=True)
    high_inputs = [t.double().requires_grad_() for t in (q, k, v)]
    for inputs, name in ((low_inputs, backend), (high_inputs, REF)):
        out = fastlocal.topk_std_attention(*inputs, 4, second_softmax=second_softmax, backend=name)[0]
        out.sum().backward()
    for low, high in zip(low_inputs, high_inputs, strict=True):
        assert low.grad.dtype == dtype
        # Also computed in float32 and rounded once (rtol as above); atol covers float32
        # cancellation in sums of O(T * Dv) terms of size O(1) (gradients here are up to ~4).
        torch.testing.assert_close(low.grad.cpu().double(), high.grad, rtol=LOW_PRECISION[dtype]["rtol"],
                                   atol=1e-4)


# --------------------------------------------------------------------------- fused kernels vs the reference


def fixed_selection_attention(q, k, v, index, exclude_first, scale, second_softmax):
    """``topk_std_attention``'s output for a *given* selection (float64, differentiable).

    The sweep compares every backend with this at the backend's own ``index``, after
    checking that index against the reference's row stds: a near-tie that float32
    resolves differently from float64 is then no failure, a wrong selection still is.
    """
    attn = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    rows = torch.cat([torch.zeros_like(index[..., :1]), index], -1) if exclude_first else index
    pooled = attn.gather(-2, rows[..., None].expand(*rows.shape, attn.shape[-1]))
    if second_softmax:
        pooled = torch.softmax(pooled, dim=-1)
    return pooled @ v


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as a non-contiguous view: [B, T, H, D] memory, or every other element of D."""
    if layout == "transposed":
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "strided":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


# Kernels compute in float32 (float64 for float64) from the inputs as stored and round the
# result once to the storage dtype: rtol = twice that rounding (2^-11 float16, 2^-8 bfloat16,
# 2^-24 float32; 1e-10 leaves float64 room for exp/log differences). atol bounds the float32
# arithmetic: each entry is a sum of up to T = 40 products, so it loses ~T * 2^-24 of the
# size of those products (`magnitude`: max|v| for out, max|dout| for dv, and through the
# softmax backward scale * max|k or q| * max|dout| * max|v| * Dv for dq and dk, where the
# sums cancel down to much smaller gradients). 1e-5 covers 40 * 2^-24 and the float32 exp
# (relative error < 2e-7); float64 1e-12.
SWEEP_TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2 * 2**-24, 1e-5),
    torch.float16: (2 * 2**-11, 1e-5),
    torch.bfloat16: (2 * 2**-8, 1e-5),
}


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, magnitude: float, what: str):
    rtol, atol = SWEEP_TOL[dtype]
    torch.testing.assert_close(got.cpu().double(), want, rtol=rtol, atol=atol * max(magnitude, 1e-3), msg=what)


def check_selection(index: torch.Tensor, stds: torch.Tensor, q: torch.Tensor, keep: int, first: int, tol: float):
    """``index`` is a top-``keep`` selection of ``stds`` up to ``tol``, ascending, and exact copies
    of a q row (equal attention rows, equal stds) are kept lowest index first."""
    T = q.shape[2]
    for (b, h), idx in zip(((b, h) for b in range(q.shape[0]) for h in range(q.shape[1])),
                           index.reshape(-1, keep).tolist(), strict=True):
        assert idx == sorted(set(idx)) and all(first <= i < T for i in idx), idx
        kept, rest = set(idx), [i for i in range(first, T) if i not in idx]
        s = stds[b, h]
        if rest:
            assert min(s[i] for i in kept) >= max(s[i] for i in rest) - tol, (idx, s.tolist())
        rows = q[b, h]
        for i in rest:  # a dropped row has no identical twin of higher index kept
            twins = [j for j in range(i + 1, T) if torch.equal(rows[j], rows[i])]
            assert not kept.intersection(twins), (i, twins, idx)


def sweep_case(backend, data, max_problems):
    """One drawn case: forward and backward of ``backend`` against the reference semantics."""
    B = data.draw(st.integers(1, max_problems), label="B")
    H = data.draw(st.integers(1, max(1, max_problems // B)), label="H")
    exclude_first = data.draw(st.booleans(), label="exclude_first")
    T = data.draw(st.integers(1 + exclude_first, 40), label="T")
    keep = data.draw(st.integers(1, T - exclude_first), label="keep")
    D = data.draw(st.integers(1, 16), label="D")
    Dv = data.draw(st.integers(1, 16), label="Dv")
    second_softmax = data.draw(st.booleans(), label="second_softmax")
    dtype = data.draw(st.sampled_from(list(SWEEP_TOL)), label="dtype")
    layout = data.draw(st.sampled_from(["contiguous", "transposed", "strided"]), label="layout")
    scale = data.draw(st.one_of(st.none(), st.floats(0.1, 3.0)), label="scale")
    copies = data.draw(st.lists(st.tuples(st.integers(0, T - 1), st.integers(0, T - 1)), max_size=6), label="copies")
    seed = data.draw(st.integers(0, 2**16), label="seed")

    g = torch.Generator().manual_seed(seed)
    # Row-dependent temperatures spread the stds from flat to peaked rows.
    temps = torch.rand(B, H, T, 1, generator=g, dtype=torch.float64) * 3
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64) * temps
    for src, dst in copies:  # exact copies: tied stds, the lower index must win
        q[:, :, dst] = q[:, :, src]
    k = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, T, Dv, generator=g, dtype=torch.float64)
    rows = keep + exclude_first
    grad = torch.randn(B, H, rows, Dv, generator=g, dtype=torch.float64)
    q, k, v, grad = (with_layout(t.to(dtype), layout) for t in (q, k, v, grad))

    qd, kd, vd = on(backend, q, k, v, grad=True)
    out, index = fastlocal.topk_std_attention(qd, kd, vd, keep, exclude_first=exclude_first, scale=scale,
                                              second_softmax=second_softmax, backend=backend)
    assert out.dtype == dtype and out.shape == (B, H, rows, Dv)
    assert index.dtype == torch.int64 and index.shape == (B, H, keep)
    out.backward(on(backend, grad)[0])
    index = index.cpu()

    # The selection, against the reference's row stds of the same (rounded) inputs in float64.
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    scale64 = D**-0.5 if scale is None else scale
    attn = torch.softmax(q64.detach() @ k64.detach().transpose(-1, -2) * scale64, dim=-1)
    stds = reference.row_scores(attn)
    tol = (1e-10 if dtype == torch.float64 else 1e-5) * float(stds.max()) + 1e-12
    check_selection(index, stds, q.double(), keep, int(exclude_first), tol)
    want_out, want_index = reference.topk_std_attention(q64.detach(), k64.detach(), v64.detach(), keep,
                                                        exclude_first, scale64, second_softmax)
    ranked = stds[..., int(exclude_first):].sort(dim=-1, descending=True).values
    separated = keep == ranked.shape[-1] or bool((ranked[..., keep - 1] - ranked[..., keep] > 10 * tol).all())
    big = {name: float(t.abs().max()) for name, t in (("q", q), ("k", k), ("v", v), ("g", grad))}
    through_softmax = scale64 * big["g"] * big["v"] * Dv
    magnitude = {"out": big["v"], "dv": big["g"], "dq": through_softmax * big["k"], "dk": through_softmax * big["q"]}
    if separated:  # no near-tie at the boundary: exactly the reference's rows
        assert torch.equal(index, want_index)
        assert_close_scaled(out.detach(), want_out, dtype, magnitude["out"], "out vs reference")

    # Output and gradients at the backend's selection.
    want = fixed_selection_attention(q64, k64, v64, index, exclude_first, scale64, second_softmax)
    want.backward(grad.double())
    assert_close_scaled(out.detach(), want.detach(), dtype, magnitude["out"], "out")
    for name, got, leaf in (("dq", qd, q64), ("dk", kd, k64), ("dv", vd, v64)):
        assert got.grad.dtype == dtype and got.grad.shape == got.shape
        assert_close_scaled(got.grad, leaf.grad, dtype, magnitude[name], name)
    kept = torch.zeros(B, H, T, dtype=torch.bool).scatter_(-1, index, True)
    kept[..., 0] |= exclude_first
    assert torch.equal(qd.grad.cpu()[~kept], torch.zeros_like(qd.grad.cpu()[~kept]))  # no gradient: exactly 0


SWEEP_EXAMPLES = 12 if INTERPRETED else 60


@pytest.mark.parametrize("backend", OTHERS)
@settings(max_examples=SWEEP_EXAMPLES, deadline=None)
@given(data=st.data())
def test_sweep_against_reference(backend, data):
    sweep_case(backend, data, max_problems=2 if backend in INTERPRETED else 6)


def spread_qkv(B, H, T, D, Dv, *, seed, twins):
    """q rows = one direction x distinct temperatures (stds far apart), then row j := row i for
    (i, j) in ``twins``: exactly tied attention rows."""
    g = torch.Generator().manual_seed(seed)
    temps = torch.linspace(0.2, 4.0, T, dtype=torch.float64)[torch.randperm(T, generator=g)]
    q = torch.randn(B, H, 1, D, generator=g, dtype=torch.float64) * temps[:, None]
    for i, j in twins:
        q[:, :, j] = q[:, :, i]
    k = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, T, Dv, generator=g, dtype=torch.float64)
    return q, k, v


# Not the reference: its q k^T is a BLAS matmul, which may round two equal q rows differently
# depending on where they fall in its tiles, so their stds need not tie exactly. The fused
# kernels compute every score with the same sequential sum; the reference's tie rule itself
# is tested on given matrices (test_exact_ties_prefer_lower_index).
@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("exclude_first", [True, False])
def test_attention_ties_prefer_lower_index(backend, exclude_first, dtype):
    # Rows 0..8 as temperatures t0 t1 t1 t2 t1 t2 t3 t3 t4: three groups of exact twins.
    q, k, v = spread_qkv(2, 2, 9, 13, 4, seed=21, twins=[(1, 2), (1, 4), (3, 5), (6, 7)])
    q, k, v = (t.to(dtype) for t in (q, k, v))
    first = int(exclude_first)
    for keep in range(1, 9 - first + 1):
        _, index = fastlocal.topk_std_attention(*on(backend, q, k, v), keep, exclude_first=exclude_first,
                                                backend=backend)
        # The loop oracle: twin rows get bitwise-equal stds (a BLAS matmul may round rows
        # differently depending on where they fall in its tiles).
        _, want = brute_topk_std_attention(q, k, v, keep, exclude_first, None, False)
        assert torch.equal(index.cpu(), want)
    # q = 0: every row uniform, every std exactly 0: the first rows win.
    _, index = fastlocal.topk_std_attention(*on(backend, torch.zeros_like(q), k, v), 3, exclude_first=exclude_first,
                                            backend=backend)
    assert index.cpu().tolist() == [[[first, first + 1, first + 2]] * 2] * 2


# --------------------------------------------------------------------------- cpu kernel specifics


CPU = [p for p in BACKENDS if p.values[0] == "cpu"]


@pytest.mark.parametrize("backend", CPU)
def test_custom_op_registration(backend):
    """Fake (meta) kernel, autograd formula and schema of the registered ops agree with the kernel."""
    q, k, v = spread_qkv(2, 3, 7, 8, 5, seed=22, twins=[])
    args = (q.float().requires_grad_(), k.float().requires_grad_(), v.float().requires_grad_(), 3, True, 0.3, True,
            backend)
    torch.library.opcheck(TOPK._topk_std_attention, args)


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_streamed_outputs_match_cached(backend, dtype):
    """Outputs of 16 MiB and more (out, dq, dk, dv here) are written with streaming stores:
    the same numbers as the cached stores of a small batch."""
    g = torch.Generator().manual_seed(24)
    q, k = (torch.randn(512, 8, 9, 128, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(512, 8, 9, 160, generator=g, dtype=dtype)  # float32: out 18 MB, dq / dk 19 MB, dv 24 MB
    grad = torch.randn(512, 8, 7, 160, generator=g, dtype=dtype)

    def run(batch):
        inputs = [t[:batch].clone().requires_grad_() for t in (q, k, v)]
        out, index = fastlocal.topk_std_attention(*inputs, 6, backend=backend)
        out.backward(grad[:batch])
        return out, index, *(t.grad for t in inputs)

    assert run(512)[0].nbytes >= 16 << 20
    for big, small in zip(run(512), run(3), strict=True):
        assert torch.equal(big[:3], small)


@pytest.mark.parametrize("backend", CPU)
def test_cpu_instruction_sets_and_threads_agree(backend, monkeypatch):
    """The portable build matches the AVX2 one, and results do not depend on the thread count."""
    g = torch.Generator().manual_seed(23)
    q, k, v = (torch.randn(5, 4, 33, 24, generator=g) for _ in range(3))
    grad = torch.randn(5, 4, 17, 24, generator=g)

    def run():
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out, index = fastlocal.topk_std_attention(*inputs, 16, second_softmax=True, backend=backend)
        out.backward(grad)
        return out, index, *(t.grad for t in inputs)

    torch.set_num_threads(2)
    try:
        two = run()
    finally:
        torch.set_num_threads(1)
    one = run()
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)  # every problem is computed by one thread, in a fixed order
    monkeypatch.setenv("FASTLOCAL_CPU_ISA", "baseline")
    base = run()
    assert torch.equal(base[1], one[1])
    for a, b in zip(base[:1] + base[2:], one[:1] + one[2:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # FMA contraction differs


@pytest.mark.parametrize("backend", CPU)
def test_backward_kernel_rejects_bad_index(backend):
    """The backward gathers q rows by the saved index: a direct call with a bad one raises."""
    module = fastlocal._dispatch.kernels(backend, "topk_std")
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    out, index, lse = module.topk_std_attention_forward(q, k, v, 2, True, 0.5, False)
    for bad in (0, 6, -1):  # 0 is the unranked class row
        broken = index.clone()
        broken[0, 1, 0] = bad
        with pytest.raises(ValueError, match="index values must be in"):
            module.topk_std_attention_backward(torch.ones_like(out), q, k, v, broken, lse, True, 0.5, False)
    with pytest.raises(ValueError, match="index must be strictly increasing"):
        module.topk_std_attention_backward(torch.ones_like(out), q, k, v, index.flip(-1), lse, True, 0.5, False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_reaches_exactly_its_readers(backend):
    """docs/design.md's rule: a NaN q row is kept (NaN ranks highest) and only its output and
    dq rows are NaN; rows not kept get dq exactly 0 even when their attention row is NaN (a
    NaN k row makes every row NaN); logits of 1e300 (float64) / 1e36 (float32) stay exact."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    q[0, 0, 4, 1] = math.nan
    qd, kd, vd = on(backend, q, k, v, grad=True)
    out, index = fastlocal.topk_std_attention(qd, kd, vd, 2, backend=backend)
    out.sum().backward()
    assert 4 in index.flatten().tolist()
    nan_rows = out.isnan().any(-1).flatten().cpu()
    assert nan_rows.tolist() == [i == 1 + index.flatten().tolist().index(4) for i in range(3)]
    assert qd.grad.isnan().any(-1).flatten().cpu().tolist() == [i == 4 for i in range(6)]
    k2 = k.clone()
    k2[0, 0, 2, 0] = math.nan
    qd, kd, vd = on(backend, q.nan_to_num(), k2, v, grad=True)
    out, index = fastlocal.topk_std_attention(qd, kd, vd, 2, backend=backend)
    out.sum().backward()
    assert index.flatten().tolist() == [1, 2] and out.isnan().all()  # all NaN: lower indices
    assert torch.equal(qd.grad[0, 0, 3:].cpu(), torch.zeros(3, 4, dtype=torch.float64))
    for dtype, big in ((torch.float64, 1e300), (torch.float32, 1e36)):
        qb = torch.tensor([[[[big, -0.29]] * 2]], dtype=dtype)
        kb = torch.tensor([[[[-2.18, 0.57], [1.0, 2.0]]]], dtype=dtype)
        vb = torch.tensor([[[[-1.0], [2.0]]]], dtype=dtype)
        out, _ = fastlocal.topk_std_attention(*on(backend, qb, kb, vb), 1, exclude_first=False, backend=backend)
        assert out.flatten().tolist() == [2.0], (dtype, out)
