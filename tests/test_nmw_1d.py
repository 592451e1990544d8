"""Correctness of ``fastlocal.nmw_1d``, ``batched_nmw_1d`` and ``multiclass_nmw_1d`` (non-maximum weighting).

Oracles: :func:`released_nmw`, a plain-Python transcription of TALLFormer's released
``_multiclass_nmw`` loop (klauscc/TALLFormer vedatad/misc/segment/segment.py, from DaoTAD) in
NumPy scalars of the input dtype, and the ``reference`` backend. The ``cpu`` kernel must equal
both bit for bit: the weighted sums have one documented order. Where the released code leaves
something open, the oracle takes fastlocal's documented choice and says so: ties in score
(``argsort`` is not stable) by lower index, and ``torch.sum``'s order as left to right. Its IoU
divides by ``max(union, 1e-6)`` as released; the grid inputs below have unions of 0 or >= 0.25,
where that equals fastlocal's IoU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from backends import assert_same_refusal, backend_params

import fastlocal
from fastlocal.nms_1d import NMW_IMPLEMENTED

BACKENDS = backend_params("nmw_1d", NMW_IMPLEMENTED, ("reference", "cpu"))
pytestmark = pytest.mark.usefixtures("one_thread")
NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def released_iou(a, b, real):
    """vedatad ``segment_overlaps(mode="iou")`` of two segments, in NumPy scalars of type ``real``."""
    overlap = max(min(a[1], b[1]) - max(a[0], b[0]), real(0))
    union = max((a[1] - a[0]) + (b[1] - b[0]) - overlap, real(1e-6))
    return overlap / union


def released_nmw(segments, scores, labels, iou_thr, max_num, real):
    """The released loop over filtered candidates: (merged [start, end] list, picked index list).

    Per round: the first remaining candidate (by decreasing score) ``p``; among the remaining ones
    of its class (in score order), IoU with ``p`` (``p``'s own set to 1); those with IoU >= the
    threshold weigh ``score * IoU``, normalised by their sum; the weighted segment is output with
    ``p``'s score and label; they leave the list; stop at ``max_num`` outputs (if > 0).
    """
    seg = [[real(s), real(e)] for s, e in segments]
    score = [real(s) for s in scores]
    thr = real(iou_thr)
    keep = sorted(range(len(score)), key=lambda i: (-score[i], i))
    merged, picked = [], []
    while keep:
        top = keep[0]
        same = [j for j in keep if labels[j] == labels[top]]
        ious = [released_iou(seg[top], seg[j], real) for j in same]
        ious[0] = real(1.0)
        group = [(j, iou) for j, iou in zip(same, ious, strict=True) if iou >= thr]
        weights = [score[j] * iou for j, iou in group]
        total = weights[0]
        for w in weights[1:]:
            total = total + w
        weights = [w / total for w in weights]
        start, end = weights[0] * seg[group[0][0]][0], weights[0] * seg[group[0][0]][1]
        for w, (j, _) in zip(weights[1:], group[1:], strict=True):
            start, end = start + w * seg[j][0], end + w * seg[j][1]
        merged.append([float(start), float(end)])
        picked.append(top)
        members = {j for j, _ in group}
        keep = [j for j in keep if j not in members]
        if max_num > 0 and len(picked) == max_num:
            break
    return merged, picked


def grid_detections(n: int, classes: int, seed: int, dtype: torch.dtype):
    """Segments on a quarter grid (zero-length and duplicated ones), coarse positive scores (exact ties),
    class ids in [0, classes)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 60, (n,), generator=g) / 4
    length = torch.randint(0, 24, (n,), generator=g) / 4
    length[torch.rand(n, generator=g) < 0.1] = 0.0
    segments = torch.stack([start, start + length], dim=1)
    if n > 4:
        segments[torch.randint(0, n, (n // 5,), generator=g)] = segments[torch.randint(0, n, (n // 5,), generator=g)]
    scores = torch.randint(1, max(3, n // 3), (n,), generator=g) / 7
    idxs = torch.randint(0, classes, (n,), generator=g)
    return segments.to(dtype), scores.to(dtype), idxs


def continuous_detections(n: int, classes: int, seed: int, dtype: torch.dtype, span: float = 60.0):
    """Random segments and scores in (0, 1], no grid: IoUs and weights round in every way."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, generator=g, dtype=torch.float64) * span
    segments = torch.stack([start, start + torch.rand(n, generator=g, dtype=torch.float64) * 12], dim=1)
    scores = 1 - torch.rand(n, generator=g, dtype=torch.float64)
    return segments.to(dtype), scores.to(dtype), torch.randint(0, classes, (n,), generator=g)


def nmw(segments, scores, idxs, iou_threshold, backend, **kwargs):
    return fastlocal.batched_nmw_1d(segments, scores, idxs, iou_threshold, backend=backend, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("iou_threshold", [0.5, 0.0, 0.3, 1.0])
def test_matches_released_loop(backend, dtype, iou_threshold):
    for seed, n, classes, max_output in [(0, 0, 1, None), (1, 1, 1, None), (2, 2, 1, None), (3, 9, 2, None),
                                         (4, 80, 1, None), (5, 120, 3, None), (6, 120, 3, 7)]:
        segments, scores, idxs = grid_detections(n, classes, seed, dtype)
        merged, picked = nmw(segments, scores, idxs, iou_threshold, backend, max_output=max_output)
        want_merged, want_picked = released_nmw(segments.tolist(), scores.tolist(), idxs.tolist(), iou_threshold,
                                                max_output or 0, NUMPY[dtype])
        assert picked.dtype == torch.int64 and merged.dtype == dtype and merged.shape == (len(want_picked), 2)
        assert picked.tolist() == want_picked
        assert torch.equal(merged, torch.tensor(want_merged, dtype=dtype).reshape(-1, 2)), (seed, n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_case(backend):
    # IoU([0, 10], [1, 11]) = 9/11 >= 0.5: merged with weights 0.8 and 0.4 * 9/11. [0, 2] and [1, 2]:
    # IoU 1/2 exactly, merged at 0.5 (>=), where nms_1d (>) keeps both. [20, 30] stays alone.
    segments = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [40.0, 42.0], [41.0, 42.0]], dtype=torch.float64)
    scores = torch.tensor([0.8, 0.4, 0.5, 0.3, 0.1], dtype=torch.float64)
    merged, picked = fastlocal.nmw_1d(segments, scores, 0.5, backend=backend)
    w = 0.4 * 9 / 11
    want = [[w / (0.8 + w), (0.8 * 10 + w * 11) / (0.8 + w)], [20.0, 30.0], [(0.3 * 40 + 0.05 * 41) / 0.35, 42.0]]
    assert picked.tolist() == [0, 2, 3]
    torch.testing.assert_close(merged, torch.tensor(want, dtype=torch.float64), rtol=1e-15, atol=1e-14)
    assert fastlocal.nms_1d(segments, scores, 0.5, backend=backend).tolist() == [0, 2, 3, 4]
    # Above 9/11 nothing merges: every segment comes back as it was.
    merged, picked = fastlocal.nmw_1d(segments, scores, 0.9, backend=backend)
    assert picked.tolist() == [0, 2, 1, 3, 4] and torch.equal(merged, segments[picked])
    # Another class never merges: [1, 11] in class 1 stays.
    merged, picked = nmw(segments, scores, torch.tensor([0, 1, 0, 0, 0]), 0.5, backend)
    assert picked.tolist() == [0, 2, 1, 3] and torch.equal(merged[:3], segments[[0, 2, 1]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_equals_reference(dtype):
    if "cpu" not in NMW_IMPLEMENTED or fastlocal.available_backends()["cpu"] != "available":
        pytest.skip(f"backend 'cpu': {fastlocal.available_backends()['cpu']}")
    for seed, n, classes, threshold, max_output in [(0, 0, 1, 0.5, None), (1, 1, 1, 0.5, None),
                                                    (2, 300, 1, 0.5, None), (3, 600, 20, 0.5, 40),
                                                    (4, 600, 5, 0.1, None), (5, 600, 5, 0.8, 1000),
                                                    (6, 50, 3, 0.0, None)]:
        segments, scores, idxs = continuous_detections(n, classes, seed, dtype)
        want = nmw(segments, scores, idxs, threshold, "reference", max_output=max_output)
        got = nmw(segments, scores, idxs, threshold, "cpu", max_output=max_output)
        assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0]), seed
        # int32 class ids and non-contiguous views give the same result.
        wide, wide_scores = torch.zeros(n, 5, dtype=dtype), torch.zeros(n, 3, dtype=dtype)
        wide[:, 1::2], wide_scores[:, 2] = segments, scores
        got = nmw(wide[:, 1::2], wide_scores[:, 2], idxs.int().flip(0).flip(0), threshold, "cpu", max_output=max_output)
        assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0]), seed
        got = nmw(segments.t().contiguous().t(), scores, idxs, threshold, "cpu", max_output=max_output)
        assert torch.equal(got[0], want[0])
    # float16 / bfloat16 are computed in float32 on both backends; mixed with float64, in float64.
    segments, scores, idxs = continuous_detections(200, 4, 7, torch.float32)
    for seg_dtype, score_dtype in [(torch.float16, torch.float16), (torch.bfloat16, torch.float32),
                                   (torch.float32, torch.float64)]:
        s, c = segments.to(seg_dtype), scores.to(score_dtype)
        want, got = nmw(s, c, idxs, 0.5, "reference"), nmw(s, c, idxs, 0.5, "cpu")
        assert torch.equal(got[1], want[1]) and torch.equal(got[0], want[0])
        assert got[0].dtype == (torch.float64 if torch.float64 in (seg_dtype, score_dtype) else torch.float32)


def test_cpu_threads_give_the_serial_result():
    # Above 2**26 pairs (sum of n_c^2 / 2) the kernel runs the classes in parallel.
    if fastlocal.available_backends()["cpu"] != "available":
        pytest.skip(f"backend 'cpu': {fastlocal.available_backends()['cpu']}")
    segments, scores, idxs = continuous_detections(16500, 2, seed=8, dtype=torch.float32, span=4000.0)
    assert sum(int((idxs == c).sum()) ** 2 / 2 for c in range(2)) >= 2**26
    serial = nmw(segments, scores, idxs, 0.5, "cpu", max_output=3000)
    torch.set_num_threads(2)  # the module's fixture restores the count
    parallel = nmw(segments, scores, idxs, 0.5, "cpu", max_output=3000)
    assert torch.equal(serial[1], parallel[1]) and torch.equal(serial[0], parallel[0])
    assert serial[1].numel() == 3000


@pytest.mark.parametrize("backend", BACKENDS)
def test_classes_are_independent_and_max_output_is_a_prefix(backend):
    segments, scores, idxs = grid_detections(150, 4, seed=11, dtype=torch.float64)
    merged, picked = nmw(segments, scores, idxs, 0.5, backend)
    # Per class, nmw_1d of its members; the union ordered by (decreasing score, lower index).
    rows = []
    for c in range(4):
        members = torch.nonzero(idxs == c).squeeze(1)
        m, p = fastlocal.nmw_1d(segments[members], scores[members], 0.5, backend=backend)
        rows += [(-float(scores[i]), int(i), seg) for i, seg in zip(members[p].tolist(), m.tolist(), strict=True)]
    rows.sort(key=lambda r: r[:2])
    assert picked.tolist() == [r[1] for r in rows] and merged.tolist() == [r[2] for r in rows]
    assert (scores[picked][1:] <= scores[picked][:-1]).all()
    for k in (1, 2, 17, picked.numel(), 10**9):
        m, p = nmw(segments, scores, idxs, 0.5, backend, max_output=k)
        assert p.tolist() == picked[:k].tolist() and torch.equal(m, merged[:k])


def released_multiclass(segments, scores, score_thr, iou_thr, max_num, real):
    """The released ``_multiclass_nmw`` front end: (n, c) with score > score_thr, row-major, then the loop."""
    cand = [(n, c) for n in range(len(scores)) for c in range(len(scores[n])) if real(scores[n][c]) > real(score_thr)]
    seg = [segments[n] if not isinstance(segments[n][0], list) else segments[n][c] for n, c in cand]
    merged, picked = released_nmw(seg, [scores[n][c] for n, c in cand], [c for _, c in cand], iou_thr, max_num, real)
    return merged, [scores[cand[i][0]][cand[i][1]] for i in picked], [cand[i][1] for i in picked]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("per_class", [False, True])
def test_multiclass_matches_released_front_end(backend, per_class):
    g = torch.Generator().manual_seed(5)
    for n, classes, max_output in [(0, 3, 1200), (1, 1, 1200), (40, 3, 1200), (120, 20, 1200), (120, 20, 15)]:
        shape = (n, classes) if per_class else (n,)
        start = torch.randint(0, 60, shape, generator=g) / 4
        segments = torch.stack([start, start + torch.randint(0, 24, shape, generator=g) / 4], dim=-1)
        # Scores below, at and above the 0.005 threshold, with ties.
        scores = torch.randint(0, 12, (n, classes), generator=g) / 7
        scores[torch.rand(n, classes, generator=g) < 0.2] = 0.005
        merged, kept, labels = fastlocal.multiclass_nmw_1d(segments, scores, max_output=max_output, backend=backend)
        want = released_multiclass(segments.tolist(), scores.tolist(), 0.005, 0.5, max_output, np.float32)
        assert labels.dtype == torch.int64 and kept.dtype == merged.dtype == torch.float32
        assert labels.tolist() == want[2] and kept.tolist() == want[1]
        assert torch.equal(merged, torch.tensor(want[0], dtype=torch.float32).reshape(-1, 2))
        assert (kept > 0.005).all()


def _outcome(call) -> BaseException | None:
    try:
        call()
    except Exception as exc:  # compared with the reference's below
        return exc
    return None


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_bad_inputs_raise_the_reference_errors(backend):
    segs, scores, idxs = torch.tensor([[0.0, 4.0], [1.0, 5.0], [8.0, 9.0]]), torch.tensor([0.9, 0.8, 0.7]), \
        torch.tensor([0, 1, 0])
    one = ({"segments": segs, "scores": scores, "iou_threshold": 0.5}, fastlocal.nmw_1d)
    many = ({"segments": segs, "scores": scores, "idxs": idxs, "iou_threshold": 0.5}, fastlocal.batched_nmw_1d)
    multi = ({"segments": segs, "scores": scores[:, None].repeat(1, 2)}, fastlocal.multiclass_nmw_1d)
    bad = [  # (which form, overrides, argument the message must name)
        (one, {"scores": torch.tensor([0.9, math.nan, 0.7])}, "scores"),
        (one, {"scores": torch.tensor([0.9, 0.0, 0.7])}, "scores"),
        (one, {"scores": torch.tensor([0.9, -0.1, 0.7])}, "scores"),
        (one, {"segments": torch.tensor([[0.0, 4.0], [5.0, 1.0], [8.0, 9.0]])}, "segments"),
        (one, {"segments": torch.tensor([[0.0, math.inf], [1.0, 5.0], [8.0, 9.0]])}, "segments"),
        (one, {"segments": segs[:, :1]}, "segments"),
        (one, {"scores": scores[:2]}, "scores"),
        (one, {"scores": scores.long()}, "scores"),
        (one, {"iou_threshold": 1.5}, "iou_threshold"),
        (one, {"iou_threshold": -0.1}, "iou_threshold"),
        (one, {"max_output": 0}, "max_output"),
        (one, {"max_output": 2.0}, "max_output"),
        (many, {"idxs": idxs.float()}, "idxs"),
        (many, {"idxs": idxs[:2]}, "idxs"),
        (many, {"idxs": idxs[None]}, "idxs"),
        (many, {"max_output": True}, "max_output"),
        (multi, {"scores": scores}, "scores"),
        (multi, {"segments": segs[:2]}, "segments"),
        (multi, {"segments": torch.zeros(3, 3, 2)}, "segments"),
        (multi, {"score_threshold": -0.5}, "score_threshold"),
        (multi, {"segments": torch.tensor([[0.0, 4.0], [5.0, 1.0], [8.0, 9.0]])}, "segments"),
        (multi, {"scores": torch.tensor([[0.9, 0.1], [math.nan, 0.0], [0.7, 0.2]])}, "scores"),
    ]
    for (base, op), overrides, name in bad:
        args = {**base, **overrides}
        want = _outcome(lambda op=op, args=args: op(**args, backend="reference"))
        got = _outcome(lambda op=op, args=args: op(**args, backend=backend))
        assert_same_refusal(backend, want, got, {name})


def test_no_gpu_kernel():
    assert NMW_IMPLEMENTED == ("cpu", "reference")
    segs, scores = torch.tensor([[0.0, 4.0]]), torch.tensor([0.9])
    with pytest.raises(fastlocal.BackendUnavailableError, match="nmw_1d: backend 'cuda'"):
        fastlocal.nmw_1d(segs, scores, 0.5, backend="cuda")


def test_cpu_kernel_rechecks_what_it_indexes():
    kernel = pytest.importorskip("fastlocal._C").nmw_1d
    segs, scores, idxs = torch.zeros(3, 2), torch.ones(3), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="segments must be"):
        kernel(segs[:, :1], scores, idxs, 0.5, 3)
    with pytest.raises(ValueError, match="idxs must be"):
        kernel(segs, scores, idxs[:2], 0.5, 3)
    with pytest.raises(TypeError, match="idxs must be int64"):
        kernel(segs, scores, idxs.int(), 0.5, 3)
    with pytest.raises(TypeError, match="share a dtype"):
        kernel(segs, scores.double(), idxs, 0.5, 3)
    with pytest.raises(ValueError, match="max_output must be >= 0"):
        kernel(segs, scores, idxs, 0.5, -1)


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_custom_op_passes_opcheck(backend):
    segments, scores, idxs = continuous_detections(30, 3, seed=1, dtype=torch.float32)
    for n in (30, 0):
        torch.library.opcheck(torch.ops.fastlocal.nmw_1d.default,
                              (segments[:n], scores[:n], idxs[:n], 0.5, 10, backend))
    torch.library.opcheck(torch.ops.fastlocal.nms_1d_check_detections.default, (segments, scores, False, True))


def test_compiles_with_fullgraph():
    # The custom op (its output size depends on the data) and its value checks in one graph, for
    # the three public functions (multiclass_nmw_1d's candidate count depends on the data too).
    if fastlocal.available_backends()["cpu"] != "available":
        pytest.skip(f"backend 'cpu': {fastlocal.available_backends()['cpu']}")
    segments, scores, idxs = continuous_detections(40, 3, seed=2, dtype=torch.float32)

    def both(segments, scores, idxs):
        one = fastlocal.nmw_1d(segments, scores, 0.5, max_output=10, backend="cpu")
        many = fastlocal.batched_nmw_1d(segments, scores, idxs, 0.5, backend="cpu")
        multi = fastlocal.multiclass_nmw_1d(segments, torch.stack([scores, scores.flip(0)], 1), backend="cpu")
        return *one, *many, *multi

    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(both, fullgraph=True, backend="eager")
        got, want = compiled(segments, scores, idxs), both(segments, scores, idxs)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
        negative = scores.clone()
        negative[3] = -0.5
        with pytest.raises(ValueError, match="scores must be > 0"):
            compiled(segments, negative, idxs)
