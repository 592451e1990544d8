"""``torch.compile`` and ``torch.library`` composability (docs/design.md, "Composability").

Every op compiles with ``fullgraph=True`` (no graph break) and gives the eager result.
The compiled C++ ops (``torch.ops.fastlocal.*``) pass ``torch.library.opcheck``.

Inductor is the backend: it needs a C++ compiler for CPU code, which this machine has.
Where none is found the tests fall back to ``aot_eager``, which still runs Dynamo (graph
capture, guards) and AOTAutograd (fake tensors, the registered autograd formula) but not
Inductor's code generation. Sizes are tiny: compile time dominates.
"""

from __future__ import annotations

import importlib
import math
import shutil

import pytest
import torch
import torch._dynamo.config
import torch._dynamo.testing
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv, free_unbacked_symbols

import fastlocal

LA = importlib.import_module("fastlocal.local_attention")  # fastlocal.local_attention is the function

COMPILER = "inductor" if (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")) else "aot_eager"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compile(fn, backend: str = COMPILER):
    """``torch.compile(fn, fullgraph=True)`` that also records the captured graphs."""
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    return torch.compile(fn, backend=counter, fullgraph=True), counter


def _targets(counter) -> set:
    return {node.target for graph in counter.graphs for node in graph.graph.nodes}


# ---- roi_align_1d (cpu backend: the C++ kernel as a custom op) -------------------------------------

X = torch.randn(2, 3, 12, dtype=torch.float64)
ROIS = torch.tensor([[0.0, 1.0, 5.5], [1.0, -0.5, 11.0], [0.0, 7.0, 3.0], [1.0, 2.0, 2.0]])


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_forward_backward_compiled(aligned: bool):
    def fn(x, rois):
        return fastlocal.roi_align_1d(x, rois, 4, sampling_ratio=0, aligned=aligned, backend="cpu")

    compiled, counter = _compile(fn)
    x_eager = X.clone().requires_grad_()
    x_comp = X.clone().requires_grad_()
    weight = torch.randn(ROIS.shape[0], X.shape[1], 4, dtype=X.dtype)

    out_eager = fn(x_eager, ROIS)
    out_comp = compiled(x_comp, ROIS)
    torch.testing.assert_close(out_comp, out_eager, rtol=0, atol=0)
    (out_eager * weight).sum().backward()
    (out_comp * weight).sum().backward()
    torch.testing.assert_close(x_comp.grad, x_eager.grad, rtol=0, atol=0)
    assert counter.frame_count == 1
    assert torch.ops.fastlocal.roi_align_1d.default in _targets(counter)


def test_roi_align_compiled_float32_and_new_rois():
    """New RoI values (same shapes) reuse the graph: nothing about the RoIs is baked in."""
    x = torch.randn(2, 3, 12)

    def fn(x, rois):
        return fastlocal.roi_align_1d(x, rois, 3, sampling_ratio=2, backend="cpu")

    compiled, counter = _compile(fn)
    for rois in (ROIS, ROIS + torch.tensor([0.0, 0.25, 1.0]), ROIS.flip(0)):
        torch.testing.assert_close(compiled(x, rois), fn(x, rois), rtol=0, atol=0)
    assert counter.frame_count == 1


# ---- nms_1d (cpu backend; the output size depends on the data) -------------------------------------

SEGMENTS = torch.tensor([[0.0, 4.0], [1.0, 4.5], [6.0, 9.0], [6.5, 9.5], [20.0, 21.0]])


def test_nms_compiled_data_dependent_size():
    def fn(segments, scores):
        keep = fastlocal.nms_1d(segments, scores, 0.5, backend="cpu")
        return keep, segments[keep], scores[keep].sum()

    cases = [
        torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]),  # keeps 0, 2, 4
        torch.tensor([0.1, 0.8, 0.7, 0.9, 0.5]),  # keeps 3, 1, 4
        torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5]),  # ties: index order
    ]
    # The fake impl returns an unbacked size; Dynamo must be allowed to capture it.
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled, counter = _compile(fn)
        results = [compiled(SEGMENTS, scores) for scores in cases]
        shorter = compiled(SEGMENTS[:2], torch.tensor([0.9, 0.8]))  # another N: at most one more graph
    for scores, got in zip(cases, results, strict=True):
        expected = fn(SEGMENTS, scores)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert [r[0].tolist() for r in results] == [[0, 2, 4], [3, 1, 4], [0, 2, 4]]
    assert shorter[0].tolist() == [0]
    assert counter.frame_count <= 2  # one graph serves every kept count of a given N
    assert torch.ops.fastlocal.nms_1d.default in _targets(counter)


def test_nms_fake_impl_has_unbacked_size():
    """The fake (meta) implementation declares a data-dependent int64 length."""
    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        segments = mode.from_tensor(SEGMENTS)
        scores = mode.from_tensor(torch.rand(5))
        keep = torch.ops.fastlocal.nms_1d(segments, scores, 0.5, "cpu")
    assert keep.dtype == torch.int64
    assert keep.dim() == 1
    assert free_unbacked_symbols(keep.shape[0])


# ---- reference ops (pure PyTorch) ----------------------------------------------------------------


def _qkv(T: int = 7, D: int = 4):
    g = torch.Generator().manual_seed(1)
    return tuple(torch.randn(2, 2, T, D, generator=g) for _ in range(3))


@pytest.mark.parametrize("edge", ["clip", "shift"])
def test_local_attention_reference_compiled(edge: str):
    q, k, v = _qkv()
    window = 3
    rpb = torch.randn(2, window if edge == "clip" else 2 * window - 1)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, -2:] = True

    def fn(q, k, v, rpb, mask):
        return fastlocal.local_attention(q, k, v, window, rpb, edge=edge, key_padding_mask=mask, backend="reference")

    compiled, counter = _compile(fn)
    torch.testing.assert_close(compiled(q, k, v, rpb, mask), fn(q, k, v, rpb, mask))
    assert counter.frame_count == 1


def test_local_attention_probs_reference_compiled():
    q, k, _ = _qkv()
    rows = torch.tensor([0, 3, 6])

    def fn(q, k, rows):
        return fastlocal.local_attention_probs(q, k, rows, 5, backend="reference")

    compiled, counter = _compile(fn)
    torch.testing.assert_close(compiled(q, k, rows), fn(q, k, rows))
    assert counter.frame_count == 1


def test_topk_std_attention_reference_compiled():
    q, k, v = _qkv(T=8)

    def fn(q, k, v):
        return fastlocal.topk_std_attention(q, k, v, 3, backend="reference")

    compiled, counter = _compile(fn)
    out, index = compiled(q, k, v)
    out_eager, index_eager = fn(q, k, v)
    torch.testing.assert_close(out, out_eager)
    assert torch.equal(index, index_eager)
    assert counter.frame_count == 1


# ---- dispatch inside compiled code -------------------------------------------------------------------
# Dynamo guards on the use_backend() stack, so a compiled function re-dispatches when it
# changes instead of replaying the backend chosen at trace time. "eager" keeps these fast:
# what is tested is Dynamo's graph capture and guards, not code generation.


def test_compiled_op_follows_use_backend(monkeypatch):
    from fastlocal import _C
    from fastlocal.reference import roi_align_1d as ref_roi

    ran = []
    real_cpu, real_ref = _C.roi_align_1d_forward, ref_roi.roi_align_1d
    monkeypatch.setattr(_C, "roi_align_1d_forward", lambda *a: (ran.append("cpu"), real_cpu(*a))[1])
    monkeypatch.setattr(ref_roi, "roi_align_1d", lambda *a: (ran.append("reference"), real_ref(*a))[1])
    compiled = torch.compile(lambda x, r: fastlocal.roi_align_1d(x, r, 4), backend="eager", fullgraph=True)

    x = torch.randn(2, 3, 12)
    compiled(x, ROIS)
    assert ran == ["cpu"]
    with fastlocal.use_backend("reference"):
        compiled(x, ROIS)
    assert ran == ["cpu", "reference"]
    compiled(x, ROIS)
    assert ran == ["cpu", "reference", "cpu"]


@pytest.mark.parametrize("op", ["roi_align_1d", "local_attention"])
def test_compiled_op_never_falls_back_silently(op: str):
    """A request made after compilation that the op cannot honour still raises."""
    if op == "roi_align_1d":
        args, call = (torch.randn(2, 3, 12), ROIS), lambda x, r: fastlocal.roi_align_1d(x, r, 4)
        missing = "cuda"
    else:
        args, call = _qkv(), lambda q, k, v: fastlocal.local_attention(q, k, v, 3)
        missing = "cpu" if "cpu" not in LA.IMPLEMENTED else "cuda"
    if fastlocal.available_backends()["cuda"] == "available" and missing == "cuda":
        pytest.skip("cuda is available here")
    compiled = torch.compile(call, backend="eager")  # no fullgraph: the error surfaces as itself
    compiled(*args)
    with fastlocal.use_backend(missing), pytest.raises(fastlocal.BackendUnavailableError, match=op):
        compiled(*args)


# ---- torch.library.opcheck -------------------------------------------------------------------------------


def _ok(result: dict) -> None:
    assert result and all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize(
    ("dtype", "aligned", "sampling_ratio", "n_rois"),
    [
        (torch.float32, False, 0, 4),
        (torch.float64, True, 2, 4),
        (torch.bfloat16, False, 1, 4),
        (torch.float32, False, 0, 0),
    ],
)
def test_opcheck_roi_align(dtype, aligned, sampling_ratio, n_rois):
    x = torch.randn(2, 3, 12, dtype=dtype, requires_grad=True)
    rois = ROIS[:n_rois].to(torch.float64 if dtype == torch.float64 else torch.float32)
    _ok(torch.library.opcheck(torch.ops.fastlocal.roi_align_1d.default, (x, rois, 4, sampling_ratio, aligned, "cpu")))
    grad = torch.randn(n_rois, 3, 4, dtype=dtype)
    _ok(
        torch.library.opcheck(
            torch.ops.fastlocal.roi_align_1d_backward.default, (grad, rois, 2, 12, sampling_ratio, aligned, "cpu")
        )
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_nms(dtype):
    """opcheck handles the data-dependent output (the fake impl's unbacked size)."""
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5], dtype=dtype)
    _ok(torch.library.opcheck(torch.ops.fastlocal.nms_1d.default, (SEGMENTS.to(dtype), scores, 0.5, "cpu")))
    _ok(torch.library.opcheck(torch.ops.fastlocal.nms_1d.default, (SEGMENTS[:0].to(dtype), scores[:0], 0.5, "cpu")))


# ---- value checks run inside the compiled graph (issue 21) -------------------------------------------
# Checks that read tensor values cannot run while Dynamo traces (fake tensors): the ops call
# them from custom ops (fastlocal::roi_align_1d_check_rois, fastlocal::nms_1d_check_detections,
# and fastlocal::local_attention_probs itself for rows), which run with the real tensors. The
# compiled function must raise what eager raises, message included. Inductor compiles C++
# (slow): one case per op; aot_eager covers the backends.


def _eager_error(fn, *args) -> ValueError:
    with pytest.raises(ValueError) as info:
        fn(*args)
    return info.value


BAD_ROIS = {
    "batch-negative": torch.tensor([[-1.0, 1.0, 5.0]]),
    "batch-fractional": torch.tensor([[0.5, 1.0, 5.0]]),
    "batch-too-large": torch.tensor([[2.0, 1.0, 5.0]]),
    "start-nan": torch.tensor([[0.0, math.nan, 5.0]]),
    "end-inf": torch.tensor([[0.0, 1.0, math.inf]]),
    "adaptive-too-long": torch.tensor([[0.0, 0.0, 1e12]]),
    "float64-below-integer": torch.tensor([[1 - 1e-12, 1.0, 5.0]], dtype=torch.float64),
}
ROI_COMPILE_CASES = [("aot_eager", "cpu"), ("aot_eager", "reference"), ("aot_eager", "triton")]
if COMPILER != "aot_eager":
    ROI_COMPILE_CASES.append((COMPILER, "cpu"))


@pytest.mark.parametrize(("compiler", "backend"), ROI_COMPILE_CASES)
def test_roi_value_checks_run_compiled(compiler: str, backend: str):
    if backend == "triton" and fastlocal.available_backends()["triton"] != "available":
        pytest.skip(f"triton: {fastlocal.available_backends()['triton']}")
    if backend == "triton" and torch.cuda.is_available():
        pytest.skip("the CPU tensors of this test need Triton's interpreter")
    x = torch.randn(2, 3, 12)

    def fn(x, rois):
        return fastlocal.roi_align_1d(x, rois, 4, backend=backend)

    # The reference's adaptive sample count is read with .item(): a graph break, so no fullgraph.
    compiled = torch.compile(fn, backend=compiler, fullgraph=backend != "reference")
    good = torch.tensor([[1.0, 1.0, 5.0]])
    torch.testing.assert_close(compiled(x, good), fn(x, good))
    for name, rois in BAD_ROIS.items():
        expected = _eager_error(fn, x, rois)
        with pytest.raises(ValueError) as info:
            compiled(x, rois)
        assert str(info.value) == str(expected), name


def test_roi_limits_and_rois_gradient_compiled():
    """Shape-only checks raise while tracing (eager's ValueError without fullgraph); rois get no gradient."""
    x = torch.randn(2, 3, 12, requires_grad=True)
    rois = torch.tensor([[1.0, 1.0, 5.0]], requires_grad=True)
    huge = torch.compile(lambda x, r: fastlocal.roi_align_1d(x, r, 2**40, sampling_ratio=1, backend="cpu"),
                         backend="aot_eager")
    with pytest.raises(ValueError, match="output_size=1099511627776"):
        huge(x, rois)
    compiled = torch.compile(lambda x, r: fastlocal.roi_align_1d(x, r, 4, sampling_ratio=2**40, backend="cpu"),
                             backend="aot_eager")
    with pytest.raises(ValueError, match="sampling_ratio must be <= 65536"):
        compiled(x, rois)
    torch._dynamo.reset()
    compiled, _ = _compile(lambda x, r: fastlocal.roi_align_1d(x, r, 4, backend="cpu"), "aot_eager")
    compiled(x, rois).sum().backward()
    assert x.grad is not None and rois.grad is None


NMS_COMPILE_CASES = [("aot_eager", "cpu"), ("aot_eager", "reference")]
if COMPILER != "aot_eager":
    NMS_COMPILE_CASES.append((COMPILER, "cpu"))


@pytest.mark.parametrize(("compiler", "backend"), NMS_COMPILE_CASES)
def test_nms_value_checks_run_compiled(compiler: str, backend: str):
    def fn(segments, scores):
        return fastlocal.nms_1d(segments, scores, 0.5, backend=backend)

    def batched(segments, scores):
        return fastlocal.batched_nms_1d(segments, scores, torch.tensor([0, 1, 0, 1, 0]), 0.5, backend=backend)

    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    bad = {
        "score-nan": (SEGMENTS, torch.tensor([0.9, math.nan, 0.7, 0.6, 0.5])),
        "score-inf": (SEGMENTS, torch.tensor([0.9, 0.8, math.inf, 0.6, 0.5])),
        "segment-nan": (SEGMENTS.clone().index_put_((torch.tensor([1]), torch.tensor([0])), torch.tensor(math.nan)),
                        scores),
        "end-before-start": (SEGMENTS[:, [1, 0]], scores),
    }
    # The reference's greedy loop reads values (graph breaks): fullgraph for the kernel only.
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        for op in (fn, batched) if compiler == "aot_eager" else (fn,):
            compiled = torch.compile(op, backend=compiler, fullgraph=op is fn and backend == "cpu")
            assert compiled(SEGMENTS, scores).tolist() == op(SEGMENTS, scores).tolist()
            for name, (segments, values) in bad.items():
                expected = _eager_error(op, segments, values)
                with pytest.raises(ValueError) as info:
                    compiled(segments, values)
                assert str(info.value) == str(expected), name
            torch._dynamo.reset()


@pytest.mark.parametrize("compiler", sorted({"aot_eager", COMPILER}))
def test_local_attention_probs_rows_checked_compiled(compiler: str):
    q, k, _ = _qkv()

    def fn(q, k, rows):
        return fastlocal.local_attention_probs(q, k, rows, 3, backend="cpu")

    compiled = torch.compile(fn, backend=compiler, fullgraph=True)
    rows = torch.tensor([0, 3, 6])
    torch.testing.assert_close(compiled(q, k, rows), fn(q, k, rows))
    for bad in (torch.tensor([0, 3, 7]), torch.tensor([-1, 3, 6]), torch.tensor([[0, 3, 7], [0, 1, 2]])):
        expected = _eager_error(fn, q, k, bad)
        with pytest.raises(ValueError) as info:
            compiled(q, k, bad)
        assert str(info.value) == str(expected)


def test_opcheck_check_ops():
    """The value-check ops are proper custom ops: fake impls agree with the real ones, no aliasing."""
    for rois in (ROIS, ROIS.double(), ROIS.half(), ROIS[:0], torch.zeros(4, 6)[:, ::2]):
        for float64 in (False, True):
            _ok(torch.library.opcheck(torch.ops.fastlocal.roi_align_1d_check_rois.default, (rois, 2, 4, 0, float64)))
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    for segments, values, float64 in ((SEGMENTS, scores, False), (SEGMENTS.half(), scores.double(), True),
                                      (SEGMENTS[:0], scores[:0], False)):
        _ok(torch.library.opcheck(torch.ops.fastlocal.nms_1d_check_detections.default, (segments, values, float64)))
