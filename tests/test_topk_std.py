"""Correctness of ``fastlocal.topk_std_pool`` and ``fastlocal.topk_std_attention`` (VidTr).

The oracles loop over rows in plain Python, written from DESIGN.md ("Reference
semantics / topK-std pooling (VidTr)") and the released VidTr code: row score = unbiased
std over keys (statistics formula), the ``keep`` highest kept (ties: lower index) in
ascending order, the class row (row 0) unranked and kept first with ``exclude_first``,
and ``second_softmax`` = softmax along keys of ``cat([cls_row, pooled_rows])``.
"""

from __future__ import annotations

import math

import pytest
import torch

import fastlocal

BACKENDS = ("reference",)  # the only backend implemented for these ops so far
F64 = {"rtol": 1e-12, "atol": 1e-14}


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


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", BACKENDS)
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
                    q, k, v, keep, exclude_first=exclude_first, scale=scale, second_softmax=second_softmax,
                    backend=backend)
                want_out, want_index = brute_topk_std_attention(
                    q, k, v, keep, exclude_first, scale, second_softmax)
                assert torch.equal(index, want_index)
                torch.testing.assert_close(out, want_out, **F64)


@pytest.mark.parametrize("backend", BACKENDS)
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
    inputs = tuple(t.clone().requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(
        lambda q, k, v: fastlocal.topk_std_attention(
            q, k, v, 2, exclude_first=exclude_first, second_softmax=second_softmax, backend=backend)[0],
        inputs)


@pytest.mark.parametrize("backend", BACKENDS)
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


@pytest.mark.parametrize("backend", BACKENDS)
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
    out, index = fastlocal.topk_std_attention(q, k, v, 4, second_softmax=second_softmax, backend=backend)
    want_out, want_index = brute_topk_std_attention(q, k, v, 4, True, None, second_softmax)
    assert out.dtype == dtype
    assert torch.equal(index, want_index)
    torch.testing.assert_close(out.double(), want_out, **LOW_PRECISION[dtype])
    # Gradients flow in low precision too and match float64 up to the same rounding.
    low_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    high_inputs = [t.double().requires_grad_() for t in (q, k, v)]
    for inputs in (low_inputs, high_inputs):
        out = fastlocal.topk_std_attention(*inputs, 4, second_softmax=second_softmax, backend=backend)[0]
        out.sum().backward()
    for low, high in zip(low_inputs, high_inputs, strict=True):
        assert low.grad.dtype == dtype
        # Also computed in float32 and rounded once (rtol as above); atol covers float32
        # cancellation in sums of O(T * Dv) terms of size O(1) (gradients here are up to ~4).
        torch.testing.assert_close(low.grad.double(), high.grad, rtol=LOW_PRECISION[dtype]["rtol"], atol=1e-4)
