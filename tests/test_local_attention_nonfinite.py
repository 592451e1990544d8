"""NaN and inf in ``local_attention`` / ``local_attention_probs`` (issue 21).

The rule (docs/design.md, local_attention, "Non-finite values"): a NaN or inf reaches exactly
the outputs and gradients whose band reads it; inside the band the math is softmax(logits)
@ v as PyTorch computes it (a NaN logit, a +inf logit or an overflow makes the row NaN; a NaN
or inf in v_j reaches every row whose band holds the unpadded key j, even at probability 0);
a row whose every key is masked (padding or -inf bias) is zeros with zero gradients; a NaN is
never turned into a number. The reference states it; every backend is compared to it with
the NaN pattern exact (``torch.isnan`` masks equal), forward and backward, and a hypothesis
fuzzer compares all backends on random shapes, windows, dtypes, non-finite values, masks,
views and invalid arguments.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from backends import GPU_BACKENDS, backend_param, device_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlocal
from fastlocal._dispatch import triton_interpreted

LA = importlib.import_module("fastlocal.local_attention")
REF = "reference"
NAN, INF = float("nan"), float("inf")
_NAMES = tuple(dict.fromkeys((*LA.IMPLEMENTED, *GPU_BACKENDS)))
BACKENDS = [backend_param("local_attention", n, LA.IMPLEMENTED) for n in _NAMES]
OTHERS = [backend_param("local_attention", n, LA.IMPLEMENTED) for n in _NAMES if n != REF]
TOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 3e-3}


pytestmark = pytest.mark.usefixtures("one_thread")


def _usable(name: str) -> bool:
    from backends import unusable

    return not unusable("local_attention", name, LA.IMPLEMENTED)


def attention(backend, q, k, v, rpb=None, mask=None, grad_out=None, **kw):
    """[out, dq, dk, dv, drpb] of one call on ``backend`` (inputs copied to its device)."""
    dev = device_of(backend)
    q, k, v = (t.detach().to(dev).requires_grad_() for t in (q, k, v))
    r = None if rpb is None else rpb.detach().to(dev).requires_grad_()
    m = None if mask is None else mask.to(dev)
    kw.setdefault("window", 3)
    out = fastlocal.local_attention(q, k, v, rpb=r, key_padding_mask=m, backend=backend, **kw)
    g = torch.ones_like(out) if grad_out is None else grad_out.to(dev, out.dtype)
    out.backward(g)
    return [t if t is None else t.detach().cpu() for t in (out, q.grad, k.grad, v.grad, None if r is None else r.grad)]


def probs(backend, q, k, rows, rpb=None, mask=None, grad_out=None, **kw):
    """[probs, dq, dk, drpb] of one call on ``backend``."""
    dev = device_of(backend)
    q, k = (t.detach().to(dev).requires_grad_() for t in (q, k))
    r = None if rpb is None else rpb.detach().to(dev).requires_grad_()
    m = None if mask is None else mask.to(dev)
    kw.setdefault("window", 3)
    p = fastlocal.local_attention_probs(q, k, rows.to(dev), rpb=r, key_padding_mask=m, backend=backend, **kw)
    g = torch.ones_like(p) if grad_out is None else grad_out.to(dev, p.dtype)
    p.backward(g)
    return [t if t is None else t.detach().cpu() for t in (p, q.grad, k.grad, None if r is None else r.grad)]


def assert_same(got, want, what=""):
    """Equal NaN patterns, equal infinities, finite values within the dtype's tolerance."""
    for n, (a, b) in enumerate(zip(got, want, strict=True)):
        if b is None:
            assert a is None, (what, n)
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, (what, n, a.shape, b.shape, a.dtype, b.dtype)
        assert torch.equal(a.isnan(), b.isnan()), f"{what}: NaN pattern of result {n}:\n{a}\nvs reference\n{b}"
        tol = TOL[b.dtype]
        label = f"{what} result {n}"
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, equal_nan=True, msg=lambda m, label=label: f"{label}: {m}")


def rows_with_nan(t: torch.Tensor) -> list[int]:
    """Query rows (axis 2) with a NaN anywhere, over batch and heads."""
    return sorted(set(torch.nonzero(t.isnan().flatten(3).any(-1))[:, 2].tolist()))


# ------------------------------------------------------------------------------ cases

B, H, T, D = 2, 2, 8, 4


def _inputs(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=dtype) for _ in range(3))
    rpb = torch.randn(H, 3, generator=g, dtype=dtype)
    return q, k, v, rpb


def _case(name: str, dtype=torch.float64):
    """(q, k, v, rpb, mask, grad_out) of a named case (window 3, clip)."""
    q, k, v, rpb = _inputs(dtype=dtype)
    mask, grad = None, None
    if name == "v_nan_key0":
        v[:, :, 0, 1] = NAN
    elif name == "v_inf_key0":
        v[:, :, 0, 2] = INF
    elif name == "q_nan_row4":
        q[:, :, 4, 0] = NAN
    elif name == "k_nan_key5":
        k[:, :, 5, 3] = NAN
    elif name == "k_inf_key5":
        k[:, :, 5, 3] = -INF
    elif name == "rpb_nan":
        rpb[0, 0] = NAN
    elif name == "rpb_inf":
        rpb[1, 2] = INF
    elif name == "overflow":  # every logit +inf: inf - inf in the softmax
        q, k = q.abs() * 1e200 if dtype == torch.float64 else q.abs() * 1e25, k.abs()
        k = k * (1e200 if dtype == torch.float64 else 1e25)
    elif name == "rpb_all_neg_inf":  # every row fully masked by its bias: zeros
        rpb.fill_(-INF)
        v[:, :, 3] = NAN
    elif name == "rpb_neg_inf_v_nan":  # probability 0 inside the band still reads v: 0 * NaN
        rpb[:, 2] = -INF
        v[:, :, 5, 0] = NAN
    elif name == "padded_nan":  # padded keys hold NaN / inf in k and v: never read
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[:, 2:4] = True
        k[:, :, 2] = NAN
        v[:, :, 3] = INF
        q[:, :, 6] = NAN
    elif name == "fully_padded":  # batch 1 padded everywhere, NaN everywhere in its k, v: zeros
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[1] = True
        k[1] = NAN
        v[1] = NAN
        mask[0, 0:3] = True  # row 0 and 1 of batch 0 see no key
    elif name == "grad_nan_row3":
        grad = torch.randn(B, H, T, D, dtype=dtype)
        grad[:, :, 3, 1] = NAN
    else:
        raise AssertionError(name)
    return q, k, v, rpb, mask, grad


CASES = ["v_nan_key0", "v_inf_key0", "q_nan_row4", "k_nan_key5", "k_inf_key5", "rpb_nan", "rpb_inf", "overflow",
         "rpb_all_neg_inf", "rpb_neg_inf_v_nan", "padded_nan", "fully_padded", "grad_nan_row3"]


def test_reference_states_the_rule():
    """The rows the issue names: NaN only where a band reads it, zeros for masked rows."""
    q, k, v, rpb, mask, _ = _case("v_nan_key0")
    out, dq, dk, dv, drpb = attention(REF, q, k, v, rpb)
    assert rows_with_nan(out) == [0, 1]  # only rows 0 and 1 read key 0
    assert rows_with_nan(dq) == [0, 1] and rows_with_nan(dk) == [0, 1, 2] and rows_with_nan(dv) == []
    q, k, v, rpb, mask, _ = _case("q_nan_row4")
    out, dq, dk, dv, _ = attention(REF, q, k, v, rpb)
    assert rows_with_nan(out) == [4] and rows_with_nan(dq) == [4]
    assert rows_with_nan(dk) == [3, 4, 5] and rows_with_nan(dv) == [3, 4, 5]
    for name in ("rpb_nan", "rpb_inf", "overflow"):
        out = attention(REF, *_case(name)[:4])[0]
        assert out.isnan().any(), name  # never a finite number
    out, dq, dk, dv, drpb = attention(REF, *_case("rpb_all_neg_inf")[:4])
    for t in (out, dq, dk, dv, drpb):
        assert torch.equal(t, torch.zeros_like(t))
    q, k, v, rpb, mask, _ = _case("rpb_neg_inf_v_nan")
    out = attention(REF, q, k, v, rpb)[0]
    assert rows_with_nan(out) == [4, 5, 6]  # rpb[:, 2] (offset +1) is -inf: row 4 reads key 5 at p = 0
    q, k, v, rpb, mask, _ = _case("fully_padded")
    out, dq, dk, dv, _ = attention(REF, q, k, v, rpb, mask)
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.equal(out[0, :, :2], torch.zeros_like(out[0, :, :2]))
    assert not dq.isnan().any() and not dk.isnan().any() and not dv.isnan().any()


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", CASES)
def test_attention_matches_reference(name, dtype, backend):
    q, k, v, rpb, mask, grad = _case(name, dtype)
    assert_same(attention(backend, q, k, v, rpb, mask, grad), attention(REF, q, k, v, rpb, mask, grad), name)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("edge", ["clip", "shift"])
@pytest.mark.parametrize("name", CASES)
def test_probs_matches_reference(name, edge, backend):
    q, k, _, rpb, mask, _ = _case(name)
    if edge == "shift":
        rpb = torch.cat([rpb, rpb[:, :2]], 1)  # [H, 2 * 3 - 1]
    rows = torch.arange(T)
    g = torch.randn(B, H, T, 3, dtype=q.dtype, generator=torch.Generator().manual_seed(3))
    kw = {"edge": edge}
    assert_same(probs(backend, q, k, rows, rpb, mask, g, **kw), probs(REF, q, k, rows, rpb, mask, g, **kw), name)


def test_probs_reference_rule():
    q, k, _, rpb, mask, _ = _case("q_nan_row4")
    p = probs(REF, q, k, torch.arange(T), rpb)[0]
    assert rows_with_nan(p) == [4] and p[:, :, 0, 0].eq(0).all()  # key -1 of row 0: 0, not NaN
    q, k, _, rpb, mask, _ = _case("fully_padded")
    p = probs(REF, q, k, torch.arange(T), rpb, mask)[0]
    assert torch.equal(p[1], torch.zeros_like(p[1]))


def test_direct_call_clamps_huge_window():
    """fastlocal._C with left = right = 2**62 and no rpb is full attention, not an overflow."""
    if not _usable("cpu"):
        pytest.skip("no CPU extension")
    from fastlocal import _C

    q, k, v, _ = _inputs(dtype=torch.float32)
    out, lse = _C.local_attention_forward(q, k, v, None, None, 2**62, 2**62, False, D**-0.5, 0.0, 0)
    want = fastlocal.local_attention(q, k, v, 2 * T + 1, backend=REF)
    torch.testing.assert_close(out, want, rtol=2e-5, atol=2e-5)
    grads = _C.local_attention_backward(torch.ones_like(out), q, k, v, out, lse, None, None, 2**62, 2**62, False,
                                        D**-0.5, 0.0, 0)
    assert all(torch.isfinite(g).all() for g in grads[:3])
    with pytest.raises(ValueError, match="2\\*\\*40"):  # probs: laid out by offset, bounded instead
        _C.local_attention_probs_forward(q, k, torch.zeros(B, 1, dtype=torch.long), None, None, 2**62, 0, False, 1.0)
    with pytest.raises(ValueError, match="rpb"):
        _C.local_attention_forward(q, k, v, torch.zeros(H, 3), None, 2**62, 2**62, False, 1.0, 0.0, 0)


# ------------------------------------------------------------------------------ fuzzer

_DTYPES = [torch.float64, torch.float32, torch.bfloat16]


@st.composite
def _problems(draw):
    """A random call: (kind, args, kwargs) with NaN / inf injected, or an invalid argument."""
    T = draw(st.integers(1, 40))
    D = draw(st.integers(1, 9))
    Dv = draw(st.integers(1, 9))
    Bn, Hn = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(_DTYPES))
    edge = draw(st.sampled_from(["clip", "shift"]))
    window = 2 * draw(st.one_of(st.integers(0, 4), st.integers(T, 2 * T + 2))) + 1  # incl. > 2T
    kw = {"window": window, "edge": edge}
    if edge == "clip" and draw(st.booleans()):
        kw["window_left"] = draw(st.integers(0, window))
        kw["window_right"] = draw(st.sampled_from([0, draw(st.integers(0, window))]))  # causal or not
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(Bn, Hn, T, D, generator=g).to(dtype)
    k = torch.randn(Bn, Hn, T, D, generator=g).to(dtype)
    v = torch.randn(Bn, Hn, T, Dv, generator=g).to(dtype)
    left = kw.get("window_left", window // 2)
    right = kw.get("window_right", window // 2)
    n_bias = left + right + 1 if edge == "clip" else 2 * window - 1
    rpb = torch.randn(Hn, n_bias, generator=g).to(dtype) if draw(st.booleans()) else None
    for _ in range(draw(st.integers(0, 3))):  # NaN / +-inf injected
        name = draw(st.sampled_from(["q", "k", "v", "rpb"]))
        t = {"q": q, "k": k, "v": v, "rpb": rpb}[name]
        if t is None:
            continue
        idx = tuple(draw(st.integers(0, s - 1)) for s in t.shape)
        t[idx] = draw(st.sampled_from([NAN, INF, -INF]))
    if rpb is not None and draw(st.integers(0, 5)) == 0:
        rpb[draw(st.integers(0, Hn - 1))] = -INF  # rows fully masked by the bias
    mask = None
    if draw(st.booleans()):
        mask = torch.rand(Bn, T, generator=g) < draw(st.sampled_from([0.2, 0.6, 1.0]))
    if draw(st.booleans()):  # non-contiguous views
        q = q.transpose(2, 3).contiguous().transpose(2, 3)
        v = torch.cat([v, v], -1)[..., :Dv]
    if Hn == 1 and draw(st.booleans()):  # expanded view over heads
        k = k.expand(Bn, 2, T, D)
        q, v = q.expand(Bn, 2, T, D), v.expand(Bn, 2, T, Dv)
        if rpb is not None:
            rpb = rpb.expand(2, n_bias)
    invalid = draw(st.sampled_from([None] * 6 + ["even_window", "k_shape", "v_dtype", "rpb_shape", "mask_dtype"]))
    if invalid == "even_window":
        kw["window"] = window + 1
        kw.pop("window_left", None), kw.pop("window_right", None)
    elif invalid == "k_shape":
        k = k[..., :-1, :] if T > 1 else torch.cat([k, k], 2)
    elif invalid == "v_dtype":
        v = v.to(torch.float16 if dtype != torch.float16 else torch.float32)
    elif invalid == "rpb_shape":
        rpb = torch.zeros(q.shape[1], n_bias + 1, dtype=dtype)
    elif invalid == "mask_dtype" and mask is not None:
        mask = mask.float()
    if draw(st.booleans()):
        rows = torch.tensor(sorted(set(draw(st.lists(st.integers(0, T - 1), min_size=1, max_size=5)))))
        return "probs", (q, k, rows, rpb, mask), kw, invalid
    grad = torch.randn(q.shape[0], q.shape[1], T, v.shape[-1], generator=g).to(dtype)
    if draw(st.integers(0, 4)) == 0:
        grad[(0, 0, draw(st.integers(0, T - 1)), 0)] = NAN
    return "attention", (q, k, v, rpb, mask, grad), kw, invalid


def _call(kind, backend, args, kw):
    try:
        if kind == "probs":
            q, k, rows, rpb, mask = args
            return probs(backend, q, k, rows, rpb, mask, **kw), None
        return attention(backend, *args, **kw), None
    except (ValueError, TypeError, RuntimeError) as e:
        return None, e


_COUNTS = {}


def _fuzz(backend, problem):
    kind, args, kw, invalid = problem
    want, want_err = _call(kind, REF, args, kw)
    got, err = _call(kind, backend, args, kw)
    if want_err is not None and invalid is None:  # a valid call must not raise
        raise AssertionError(f"the reference raised {want_err!r} on a valid call ({kind}, {kw})")
    key = (backend, f"raised:{invalid}" if want_err else "nonfinite" if any(
        t is not None and not torch.isfinite(t).all() for t in want) else "finite")
    _COUNTS[key] = _COUNTS.get(key, 0) + 1
    if want_err is not None:
        assert err is not None, f"{backend} returned where the reference raised {want_err!r} ({kind}, {kw})"
        assert type(err) is type(want_err), (err, want_err)
        assert str(err).split(",")[0] == str(want_err).split(",")[0] or invalid is None or _names_argument(err), err
        return
    assert err is None, f"{backend} raised {err!r} where the reference returned ({kind}, {kw}, {invalid})"
    assert_same(got, want, f"{backend} {kind} {kw} {invalid}")


def _names_argument(err) -> bool:
    msg = str(err)
    return any(word in msg for word in ("window", "k ", "k must", "v ", "dtype", "rpb", "key_padding_mask"))


_FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


@pytest.mark.parametrize("backend", [p for p in OTHERS if p.values[0] == "cpu"])
@settings(_FUZZ, max_examples=300)
@given(problem=_problems())
def test_fuzz_cpu(backend, problem):
    _fuzz(backend, problem)


@pytest.mark.parametrize("backend", [p for p in OTHERS if p.values[0] not in ("cpu",)])
@settings(_FUZZ, max_examples=50 if triton_interpreted() else 300)
@given(problem=_problems())
def test_fuzz_gpu_backends(backend, problem):
    _fuzz(backend, problem)


def test_fuzz_counts_report():
    """Prints what the fuzzers saw (run with -s): examples per backend and outcome."""
    print("fuzz outcomes:", dict(sorted(_COUNTS.items())))
