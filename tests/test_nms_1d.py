"""Correctness of ``fastlocal.nms_1d`` and ``batched_nms_1d`` (``soft_nms_1d``: tests/test_soft_nms_1d.py).

The oracles (here and in nms_oracles.py) are plain-Python loops over lists written from the documented rules:
candidates visited by decreasing score, equal scores by lower index first; IoU of
``[start, end]`` intervals, 0 when the union is empty; hard NMS suppresses IoU strictly
greater than the threshold (torchvision's rule).

``nms_1d`` / ``batched_nms_1d`` run on every backend (``reference``, ``cpu``, ``cuda``;
``cuda`` marked ``gpu``, on CUDA tensors, skipped with the reason when unusable) and are
checked against the oracles and the reference backend, also with hypothesis.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from backends import backend_params, device_of
from hypothesis import event, given, settings
from hypothesis import strategies as st
from nms_oracles import brute_iou, random_detections

import fastlocal
from fastlocal.nms_1d import IMPLEMENTED

BACKENDS = backend_params("nms_1d", IMPLEMENTED, ("reference", "cpu", "cuda"))
OTHERS = BACKENDS[1:]  # checked against the reference backend


def nms(segments, scores, threshold, backend) -> torch.Tensor:
    """``fastlocal.nms_1d`` on the backend's device; the kept indices come back to the CPU."""
    dev = device_of(backend)
    return fastlocal.nms_1d(segments.to(dev), scores.to(dev), threshold, backend=backend).cpu()


def batched_nms(segments, scores, classes, threshold, backend) -> torch.Tensor:
    """``fastlocal.batched_nms_1d`` on the backend's device, result on the CPU."""
    dev = device_of(backend)
    return fastlocal.batched_nms_1d(segments.to(dev), scores.to(dev), classes.to(dev), threshold,
                                    backend=backend).cpu()


def brute_nms(segments: list[list[float]], scores: list[float], threshold: float) -> list[int]:
    """Greedy NMS: visit by (-score, index); keep unless IoU > threshold with a kept one."""
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(brute_iou(segments[i], segments[j]) <= threshold for j in keep):
            keep.append(i)
    return keep


def brute_batched_nms(segments, scores, classes, threshold) -> list[int]:
    """Per-class brute NMS, merged by (-score, index)."""
    kept: list[int] = []
    for c in set(classes):
        members = [i for i, k in enumerate(classes) if k == c]
        kept += [members[j] for j in brute_nms([segments[i] for i in members], [scores[i] for i in members],
                                               threshold)]
    return sorted(kept, key=lambda i: (-scores[i], i))


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_cases(backend):
    segs = torch.tensor([[0.0, 2.0], [0.0, 1.0], [1.0, 3.0], [5.0, 5.0], [5.0, 5.0], [4.0, 6.0]],
                        dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.8, 0.7, 0.7, 0.1], dtype=torch.float64)
    # IoU(0,1) = 1/2 (not > 0.5: kept); IoU(0,2) = 1/3; points 3, 4 have an empty union with
    # each other (IoU 0) and an empty intersection with 5 (IoU 0 -> never suppressed).
    assert nms(segs, scores, 0.5, backend).tolist() == [0, 1, 2, 3, 4, 5]
    # At 0.4, 1 goes (1/2 > 0.4); 2 stays (IoU 1/3 with 0).
    assert nms(segs, scores, 0.4, backend).tolist() == [0, 2, 3, 4, 5]
    # At 0.3, 2 goes too (1/3 > 0.3); at 0 any positive overlap suppresses.
    assert nms(segs, scores, 0.3, backend).tolist() == [0, 3, 4, 5]
    assert nms(segs, scores, 0.0, backend).tolist() == [0, 3, 4, 5]
    # Threshold 1 never suppresses (IoU <= 1), even identical segments.
    same = torch.tensor([[1.0, 2.0]] * 3, dtype=torch.float64)
    tied = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    assert nms(same, tied, 1.0, backend).tolist() == [0, 1, 2]
    # Identical segments and tied scores: the lowest index survives.
    assert nms(same, tied, 0.99, backend).tolist() == [0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_single(backend):
    out = nms(torch.zeros(0, 2), torch.zeros(0), 0.5, backend)
    assert out.dtype == torch.int64 and out.shape == (0,)
    out = nms(torch.tensor([[3.0, 4.0]]), torch.tensor([-2.0]), 0.0, backend)
    assert out.dtype == torch.int64 and out.tolist() == [0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("n", [2, 7, 60, 300])
def test_nms_matches_brute_force(backend, threshold, n):
    segments, scores = random_detections(n, seed=n)
    out = nms(segments, scores, threshold, backend)
    assert out.dtype == torch.int64
    assert out.tolist() == brute_nms(segments.tolist(), scores.tolist(), threshold)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nms_low_precision_matches_reference(backend, dtype):
    # Every backend computes IoUs with the same float32 formula: identical decisions.
    for seed in range(5):
        segments, scores = random_detections(200, seed=seed, dtype=dtype)
        for threshold in (0.0, 0.4, 0.8):
            ref = fastlocal.nms_1d(segments, scores, threshold, backend="reference")
            assert nms(segments, scores, threshold, backend).tolist() == ref.tolist()


@pytest.mark.parametrize("backend", OTHERS)
def test_nms_large_matches_reference(backend):
    # 20k candidates: 313 mask words per row on CUDA, many blocks of 64 on both sides of the diagonal.
    g = torch.Generator().manual_seed(7)
    n = 20_000
    start = torch.rand(n, generator=g) * 5000
    segments = torch.stack([start, start + torch.rand(n, generator=g) * 30], dim=1)
    scores = torch.randint(0, 1000, (n,), generator=g).float() / 1000  # ties too
    for threshold in (0.3, 0.7):
        out = nms(segments, scores, threshold, backend)
        assert out.tolist() == fastlocal.nms_1d(segments, scores, threshold, backend="reference").tolist()
        assert 0 < out.numel() < n


@st.composite
def detections(draw):
    """Segments on a coarse grid (touching, nested, identical and zero-length ones) with tied scores."""
    n = draw(st.integers(0, 150))
    coord = st.integers(0, 40).map(lambda q: q / 4)
    rows = [sorted((draw(coord), draw(coord))) for _ in range(n)]
    scores = [draw(st.integers(0, 5)) / 5 for _ in range(n)]
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    segments = torch.tensor(rows, dtype=dtype).reshape(n, 2)
    classes = torch.tensor([draw(st.integers(0, 3)) for _ in range(n)], dtype=torch.int64)
    return segments, torch.tensor(scores, dtype=dtype), classes


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(problem=detections(), threshold=st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]))
def test_hypothesis_sweep(backend, problem, threshold):
    segments, scores, classes = problem
    want = brute_nms(segments.tolist(), scores.tolist(), threshold)
    assert nms(segments, scores, threshold, backend).tolist() == want
    want = brute_batched_nms(segments.tolist(), scores.tolist(), classes.tolist(), threshold)
    assert batched_nms(segments, scores, classes, threshold, backend).tolist() == want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.6, 1.0])
def test_batched_nms_matches_per_class_brute_force(backend, threshold):
    for seed, n_classes in [(0, 1), (1, 3), (2, 8)]:
        segments, scores = random_detections(120, seed=seed)
        classes = torch.randint(0, n_classes, (120,), generator=torch.Generator().manual_seed(seed))
        out = batched_nms(segments, scores, classes, threshold, backend)
        want = brute_batched_nms(segments.tolist(), scores.tolist(), classes.tolist(), threshold)
        assert out.tolist() == want


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_nms_edge_cases(backend):
    empty = batched_nms(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5, backend)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    # Identical segments in different classes never suppress each other.
    segs = torch.tensor([[0.0, 1.0]] * 4)
    out = batched_nms(segs, torch.tensor([0.1, 0.4, 0.3, 0.2]), torch.tensor([0, 1, 0, 1]), 0.5, backend)
    assert out.tolist() == [1, 2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_nms_is_exact_for_large_class_ids(backend):
    # Within class 1000, IoU([0, 1], [1 - 2^-20, 2]) = 2^-20 / 2 > 0: suppressed at threshold 0.
    # Offsetting float32 coordinates by class_id * span (~3000) would round 1 - 2^-20 up to 1
    # and turn that overlap into a touch (IoU 0).
    segs = torch.tensor([[0.0, 1.0], [1.0 - 2.0**-20, 2.0]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8])
    classes = torch.tensor([1000, 1000])
    assert nms(segs, scores, 0.0, backend).tolist() == [0]
    assert batched_nms(segs, scores, classes, 0.0, backend).tolist() == [0]


# ---- hardening (issue 21) ------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["nms", "batched", "soft"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_and_reversed_detections_are_refused(op, backend):
    dev = device_of(backend)
    segments = torch.tensor([[0.0, 4.0], [1.0, 5.0], [8.0, 9.0]], device=dev)
    scores = torch.tensor([0.9, 0.8, 0.7], device=dev)
    classes = torch.tensor([0, 1, 0], device=dev)

    def call(segs, sc):
        if op == "nms":
            return fastlocal.nms_1d(segs, sc, 0.5, backend=backend)
        if op == "batched":
            return fastlocal.batched_nms_1d(segs, sc, classes, 0.5, backend=backend)
        return fastlocal.soft_nms_1d(segs, sc, backend=backend)

    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match=r"segments and scores must be finite"):
            call(segments, torch.tensor([0.9, bad, 0.7], device=dev))
        with pytest.raises(ValueError, match=r"segments and scores must be finite"):
            call(torch.tensor([[0.0, 4.0], [1.0, bad], [8.0, 9.0]], device=dev), scores)
    with pytest.raises(ValueError, match=r"segments must satisfy start <= end"):
        call(torch.tensor([[0.0, 4.0], [5.0, 1.0], [8.0, 9.0]], device=dev), scores)


@pytest.mark.parametrize("threshold", [10**400, -(10**400)])
def test_threshold_beyond_the_float_range_is_a_value_error(threshold):
    segments, scores = torch.tensor([[0.0, 1.0]]), torch.tensor([0.5])
    with pytest.raises(ValueError, match=r"iou_threshold must be a finite number in \[0.0, 1.0\], got an int of about "
                                         r"10\*\*400"):
        fastlocal.nms_1d(segments, scores, threshold)
    with pytest.raises(ValueError, match=r"iou_threshold"):
        fastlocal.batched_nms_1d(segments, scores, torch.tensor([0]), threshold)
    with pytest.raises(ValueError, match=r"iou_threshold"):
        fastlocal.soft_nms_1d(segments, scores, iou_threshold=threshold)
    with pytest.raises(ValueError, match=r"sigma"):
        fastlocal.soft_nms_1d(segments, scores, sigma=10**400)


@pytest.mark.parametrize("op", ["nms_1d", "batched_nms_1d", "soft_nms_1d"])
def test_meta_tensors_are_refused_clearly(op):
    segments, scores = torch.empty(3, 2, device="meta"), torch.empty(3, device="meta")
    args = {"nms_1d": (0.5,), "batched_nms_1d": (torch.zeros(3, dtype=torch.long, device="meta"), 0.5),
            "soft_nms_1d": ()}[op]
    with pytest.raises(ValueError, match=rf"segments and scores are on the meta device.*{op} reads them"):
        getattr(fastlocal, op)(segments, scores, *args)


@st.composite
def nms_calls(draw):
    """One nms_1d / batched_nms_1d call, valid or not: (segments, scores, classes, threshold, must, may).

    Mixed dtypes, strided and stride-0 expanded views, NaN / +-inf and reversed segments,
    thresholds out of range, non-finite, beyond the float range or of the wrong type.
    """
    must, may = set(), set()
    rare = st.integers(0, 11).map(lambda k: k == 0)
    n = draw(st.integers(0, 12))
    coord = st.integers(0, 40).map(lambda q: q / 4)
    rows = [sorted((draw(coord), draw(coord))) for _ in range(n)]
    scores = [draw(st.integers(0, 5)) / 5 for _ in range(n)]
    for i in range(n):
        if draw(rare):
            kind = draw(st.sampled_from(["score", "start", "end", "reversed"]))
            if kind == "score":
                scores[i] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
                must.add("scores")
            elif kind == "reversed":
                if rows[i][0] != rows[i][1]:
                    rows[i] = rows[i][::-1]
                    must.add("segments")
            else:
                rows[i][0 if kind == "start" else 1] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
                must.add("segments")
    floats = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    segments = torch.tensor(rows, dtype=draw(st.sampled_from(floats))).reshape(n, 2)
    scores = torch.tensor(scores, dtype=draw(st.sampled_from(floats)))
    layout = draw(st.sampled_from(["contiguous", "strided", "expanded"]))
    if layout == "strided":
        wide = torch.zeros(n, 4, dtype=segments.dtype)
        wide[:, ::2] = segments
        segments = wide[:, ::2]
        scores = torch.stack([scores, scores], dim=1)[:, 0]
    elif layout == "expanded" and n:
        segments, scores = segments[:1].expand(n, 2), scores[:1].expand(n)
        may |= must
        must.clear()  # only the first row remains
    classes = torch.tensor([draw(st.integers(0, 3)) for _ in range(n)],
                           dtype=draw(st.sampled_from([torch.int32, torch.int64])))
    threshold = draw(st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]))
    if draw(rare):
        threshold = draw(st.sampled_from([-0.1, 1.5, math.nan, math.inf, 10**400, "0.5", True]))
        must.add("iou_threshold")
    return segments, scores, classes, threshold, must, may


def _nms_outcome(fn, *args, **kwargs) -> tuple[object, Exception | None]:
    try:
        return fn(*args, **kwargs).cpu().tolist(), None
    except Exception as exc:  # compared below: same type and message on every backend
        return None, exc


@pytest.mark.parametrize("backend", OTHERS)
@settings(settings.get_profile("ci"), max_examples=300)
@given(call=nms_calls())
def test_differential_sweep(backend, call):
    """Random valid and invalid calls of nms_1d and batched_nms_1d: the backend keeps exactly the
    reference's indices, or raises the reference's exception (type and message, naming the
    offending argument). For invalid detections soft_nms_1d raises the same message too."""
    segments, scores, classes, threshold, must, may = call
    for op, args in (("nms_1d", ()), ("batched_nms_1d", (classes,))):
        fn = getattr(fastlocal, op)
        want, want_exc = _nms_outcome(fn, segments, scores, *args, threshold, backend="reference")
        dev = device_of(backend)
        got, got_exc = _nms_outcome(fn, *[t.to(dev) for t in (segments, scores, *args)], threshold, backend=backend)
        if want_exc is None:
            event(f"{op}: served")
            assert not must, f"reference {op} accepted a call that is invalid in {must}"
            assert got_exc is None and got == want, (got, got_exc, want)
            continue
        event(f"{op}: refused")
        assert type(want_exc) in (ValueError, TypeError), repr(want_exc)
        assert [name for name in must | may if re.search(rf"\b{name}\b", str(want_exc))], repr(want_exc)
        assert got_exc is not None and (type(got_exc), str(got_exc)) == (type(want_exc), str(want_exc))
    if "segments" in must or "scores" in must:
        with pytest.raises(ValueError, match=r"segments"):
            fastlocal.soft_nms_1d(segments, scores)
