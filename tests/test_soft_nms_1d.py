"""Correctness of ``fastlocal.soft_nms_1d`` and ``batched_soft_nms_1d`` on every backend.

Oracles: the plain-Python loop of nms_oracles.py (written from the documented rules) and
the ``reference`` backend. ``cpu`` and ``cuda`` (marked ``gpu``, on CUDA tensors, skipped
with the reason when unusable) must pick the same indices in the same order, with decayed
scores equal up to the last ulps of ``exp`` (torch's vectorised exp and the C library's
differ there), and refuse bad input with the reference's exception.
"""

from __future__ import annotations

import math

import pytest
import torch
from backends import assert_same_refusal, backend_params, device_of
from nms_oracles import brute_soft_nms, random_detections

import fastlocal
from fastlocal.nms_1d import SOFT_NMS_IMPLEMENTED

BACKENDS = backend_params("soft_nms_1d", SOFT_NMS_IMPLEMENTED, ("reference", "cpu", "cuda"))
OTHERS = BACKENDS[1:]  # checked against the reference backend
pytestmark = pytest.mark.usefixtures("one_thread")

PARAMS = [  # (sigma, iou_threshold, score_threshold)
    (0.5, 0.3, 0.001), (0.2, 0.0, 0.05), (1.0, 0.7, 0.3), (0.35, 0.0, 0.0),
]
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-7}, torch.float64: {"rtol": 1e-12, "atol": 1e-15}}


def soft(segments, scores, backend, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``fastlocal.soft_nms_1d`` on the backend's device; results back on the CPU."""
    dev = device_of(backend)
    idx, dec = fastlocal.soft_nms_1d(segments.to(dev), scores.to(dev), backend=backend, **kwargs)
    return idx.cpu(), dec.cpu()


def batched(segments, scores, backend, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``fastlocal.batched_soft_nms_1d`` on the backend's device; results back on the CPU."""
    dev = device_of(backend)
    if kwargs.get("valid") is not None:
        kwargs["valid"] = kwargs["valid"].to(dev)
    out = fastlocal.batched_soft_nms_1d(segments.to(dev), scores.to(dev), backend=backend, **kwargs)
    return tuple(t.cpu() for t in out)


def continuous_detections(n: int, seed: int, dtype: torch.dtype, span: float = 50.0):
    """Random segments and scores in [0, 1) with no exact ties (decisions stay away from rounding)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, generator=g, dtype=torch.float64) * span
    segments = torch.stack([start, start + torch.rand(n, generator=g, dtype=torch.float64) * 10], dim=1)
    return segments.to(dtype), torch.rand(n, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize(("sigma", "iou_threshold", "score_threshold"), PARAMS)
def test_matches_brute_force(backend, method, sigma, iou_threshold, score_threshold):
    # Coarse-grid scores (exact ties), duplicated and zero-length segments, float64.
    for seed, n, max_output in [(0, 1, None), (1, 9, None), (2, 80, None), (3, 80, 7)]:
        segments, scores = random_detections(n, seed=seed)
        scores = scores / scores.max().clamp(min=1e-9)  # scores in [0, 1] as detectors give
        idx, dec = soft(segments, scores, backend, sigma=sigma, iou_threshold=iou_threshold,
                        score_threshold=score_threshold, method=method, max_output=max_output)
        want_idx, want_scores = brute_soft_nms(segments.tolist(), scores.tolist(), sigma, iou_threshold,
                                               score_threshold, method, max_output)
        assert idx.dtype == torch.int64 and dec.dtype == torch.float64
        assert idx.tolist() == want_idx
        # exp() of torch and of math may differ in the last ulp.
        torch.testing.assert_close(dec, torch.tensor(want_scores, dtype=torch.float64).reshape(-1),
                                   rtol=1e-12, atol=1e-15)
        assert (dec >= score_threshold).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_case(backend):
    segs = torch.tensor([[0.0, 2.0], [1.0, 3.0], [10.0, 11.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.5], dtype=torch.float64)
    # IoU(0, 1) = 1/3. Linear, threshold 0.3: 0.8 * (1 - 1/3) = 0.8*2/3 = 0.5333 > 0.5.
    idx, dec = soft(segs, scores, backend, iou_threshold=0.3, method="linear")
    assert idx.tolist() == [0, 1, 2]
    torch.testing.assert_close(dec, torch.tensor([0.9, 0.8 * 2 / 3, 0.5], dtype=torch.float64))
    # Linear, threshold 0.4: 1/3 is not above it, no decay.
    _, dec = soft(segs, scores, backend, iou_threshold=0.4, method="linear")
    torch.testing.assert_close(dec, torch.tensor([0.9, 0.8, 0.5], dtype=torch.float64))
    # Gaussian sigma 0.1: 0.8 * exp(-(1/9)/0.1) = 0.8 * exp(-10/9) = 0.2636 < 0.5: picked last.
    idx, dec = soft(segs, scores, backend, sigma=0.1, method="gaussian")
    assert idx.tolist() == [0, 2, 1]
    torch.testing.assert_close(dec, torch.tensor([0.9, 0.5, 0.8 * math.exp(-10 / 9)], dtype=torch.float64))
    # A score threshold above the decayed score drops it; max_output stops early.
    assert soft(segs, scores, backend, sigma=0.1, score_threshold=0.3)[0].tolist() == [0, 2]
    assert soft(segs, scores, backend, sigma=0.1, max_output=2)[0].tolist() == [0, 2]
    # Everything below the threshold: nothing is picked.
    idx, dec = soft(segs, scores, backend, score_threshold=0.95)
    assert idx.tolist() == [] and idx.dtype == torch.int64 and dec.shape == (0,) and dec.dtype == torch.float64


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_random_matches_reference(backend, dtype, method):
    for seed, n in enumerate([0, 1, 2, 50, 400]):
        segments, scores = continuous_detections(n, seed, dtype)
        for sigma, iou_threshold, score_threshold in PARAMS:
            for max_output in (None, 1, 7):
                kwargs = {"sigma": sigma, "iou_threshold": iou_threshold, "score_threshold": score_threshold,
                          "method": method, "max_output": max_output}
                want_idx, want = fastlocal.soft_nms_1d(segments, scores, backend="reference", **kwargs)
                idx, dec = soft(segments, scores, backend, **kwargs)
                assert idx.tolist() == want_idx.tolist(), (seed, kwargs)
                assert dec.dtype == dtype
                torch.testing.assert_close(dec, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_ties_and_degenerate_segments(backend, method):
    # Identical segments, equal scores: picked in index order, each decayed by every earlier pick
    # (IoU 1: gaussian exp(-1/sigma), linear 1 - 1 = 0, which drops them).
    same = torch.tensor([[1.0, 2.0]] * 4)
    tied = torch.full((4,), 0.5)
    idx, dec = soft(same, tied, backend, sigma=0.5, method=method, score_threshold=0.0)
    assert idx.tolist() == [0, 1, 2, 3]
    factor = math.exp(-2.0) if method == "gaussian" else 0.0
    torch.testing.assert_close(dec, torch.tensor([0.5 * factor**k for k in range(4)]), rtol=1e-6, atol=0)
    # All-equal scores on disjoint segments: nothing decays, index order.
    disjoint = torch.tensor([[3.0 * i, 3.0 * i + 1] for i in range(6)])
    idx, dec = soft(disjoint, torch.full((6,), 0.25), backend, method=method)
    assert idx.tolist() == list(range(6)) and dec.tolist() == [0.25] * 6
    # Zero-length segments: two points have IoU 0 (empty union), a point inside a segment too.
    points = torch.tensor([[2.0, 2.0], [2.0, 2.0], [1.0, 3.0], [2.0, 2.0]])
    idx, dec = soft(points, torch.tensor([0.9, 0.9, 0.8, 0.9]), backend, method=method, iou_threshold=0.0)
    assert idx.tolist() == [0, 1, 3, 2]
    torch.testing.assert_close(dec, torch.tensor([0.9, 0.9, 0.9, 0.8]))
    # N = 0 and N = 1 (a negative score below the default threshold is never picked).
    idx, dec = soft(torch.zeros(0, 2), torch.zeros(0), backend, method=method, max_output=5)
    assert idx.shape == dec.shape == (0,) and idx.dtype == torch.int64 and dec.dtype == torch.float32
    assert soft(torch.tensor([[3.0, 4.0]]), torch.tensor([0.2]), backend, method=method)[0].tolist() == [0]
    assert soft(torch.tensor([[3.0, 4.0]]), torch.tensor([-0.2]), backend, method=method)[0].tolist() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_thresholds_compare_in_the_dtype(backend):
    # float32(0.7) < 0.7: a float32 score of 0.7 is kept at score_threshold=0.7, as torch compares it
    # (the threshold rounded to float32), not dropped as a float64 comparison would.
    scores = torch.tensor([0.7, 0.6999, 0.75])
    segments = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    assert soft(segments, scores, backend, score_threshold=0.7)[0].tolist() == [2, 0]
    assert soft(segments, scores.double(), backend, score_threshold=0.7)[0].tolist() == [2]


@pytest.mark.parametrize("backend", OTHERS)
def test_low_precision_and_non_contiguous_inputs(backend):
    segments, scores = continuous_detections(120, seed=5, dtype=torch.float32)
    want_idx, want = fastlocal.soft_nms_1d(segments, scores, backend="reference")
    # Strided views of the same values give the same result.
    wide = torch.zeros(120, 4)
    wide[:, ::2] = segments
    idx, dec = soft(wide[:, ::2], torch.stack([scores, scores], dim=1)[:, 0], backend)
    assert idx.tolist() == want_idx.tolist()
    torch.testing.assert_close(dec, want, **TOLERANCE[torch.float32])
    idx, dec = soft(segments.t().contiguous().t(), scores, backend)
    assert idx.tolist() == want_idx.tolist()
    # float16 / bfloat16 are computed in float32 on every backend; mixed with float64, in float64.
    for seg_dtype, score_dtype in [(torch.float16, torch.float16), (torch.bfloat16, torch.float32),
                                   (torch.float32, torch.float64)]:
        s, c = segments.to(seg_dtype), scores.to(score_dtype)
        want_idx, want = fastlocal.soft_nms_1d(s, c, backend="reference")
        idx, dec = soft(s, c, backend)
        assert idx.tolist() == want_idx.tolist() and dec.dtype == want.dtype
        torch.testing.assert_close(dec, want, **TOLERANCE[want.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_output_is_a_prefix(backend):
    segments, scores = continuous_detections(200, seed=9, dtype=torch.float64)
    full_idx, full = soft(segments, scores, backend, score_threshold=0.0)
    assert full_idx.numel() == 200  # with score_threshold 0, nothing non-negative is dropped
    for k in (1, 2, 50, 199, 200, 10**9):
        idx, dec = soft(segments, scores, backend, score_threshold=0.0, max_output=k)
        assert idx.tolist() == full_idx[:k].tolist()
        torch.testing.assert_close(dec, full[:k], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_batched_equals_one_video_at_a_time(backend, method):
    g = torch.Generator().manual_seed(3)
    videos = [continuous_detections(60, seed, torch.float32) for seed in range(4)]
    segments = torch.stack([s for s, _ in videos])
    scores = torch.stack([c for _, c in videos])
    valid = torch.rand(4, 60, generator=g) < 0.7
    valid[2] = False  # a video with no valid row
    valid[3] = True
    for max_output in (None, 5, 100):
        idx, dec, counts = batched(segments, scores, backend, valid=valid, method=method, max_output=max_output)
        k = 60 if max_output is None else min(max_output, 60)
        assert idx.shape == dec.shape == (4, k) and counts.shape == (4,)
        assert idx.dtype == counts.dtype == torch.int64 and dec.dtype == torch.float32
        for b in range(4):
            rows = torch.nonzero(valid[b]).squeeze(1)
            want_idx, want = fastlocal.soft_nms_1d(segments[b, rows], scores[b, rows], method=method,
                                                   max_output=max_output, backend="reference")
            n = int(counts[b])
            assert n == want_idx.numel()
            assert idx[b, :n].tolist() == rows[want_idx].tolist()
            torch.testing.assert_close(dec[b, :n], want, **TOLERANCE[torch.float32])
            assert (idx[b, n:] == -1).all() and (dec[b, n:] == 0).all()
        assert counts[2] == 0
    # Without a mask every row takes part.
    idx, _, counts = batched(segments, scores, backend, method=method)
    for b in range(4):
        want_idx, _ = fastlocal.soft_nms_1d(segments[b], scores[b], method=method, backend="reference")
        assert idx[b, : int(counts[b])].tolist() == want_idx.tolist()
    # Empty batches and empty videos.
    for shape in [(0, 5), (3, 0)]:
        idx, dec, counts = batched(torch.zeros(*shape, 2), torch.zeros(shape), backend, max_output=4)
        assert idx.shape == dec.shape == (shape[0], min(4, shape[1])) and counts.tolist() == [0] * shape[0]


def etad_soft_nms(segments: list[list[float]], scores: list[float], iou_threshold: float, sigma: float,
                  max_num: int) -> list[tuple[int, float]]:
    """ETAD's released post-processing loop (sming256/ETAD lib/utils/misc.py ``soft_nms``, as
    called by ``anet_1_3/post_det.py``), rewritten over indices: (index, score) of each pick.

    Sort by score; ``while len > 1 and picks < max_num``: pick the first maximum, decay by
    exp(-iou^2 / sigma) where iou > iou_threshold (no clamp of the intersection at 0, no score
    threshold). The caller skips the loop when there is a single proposal.
    """
    if len(scores) <= 1:
        return list(enumerate(scores))
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # no exact ties in this test
    left = [(i, scores[i]) for i in order]
    out = []
    while len(left) > 1 and len(out) < max_num:
        best = max(range(len(left)), key=lambda k: (left[k][1], -k))
        i, score = left.pop(best)
        out.append((i, score))
        (s, e), decayed = segments[i], []
        for j, value in left:
            inter = min(e, segments[j][1]) - max(s, segments[j][0])
            iou = inter / ((e - s) + (segments[j][1] - segments[j][0]) - inter)
            decayed.append((j, value * math.exp(-iou * iou / sigma) if iou > iou_threshold else value))
        left = decayed
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_reproduces_etad_post_processing(backend):
    # ETAD: Gaussian, sigma 0.35, iou_threshold 0 (exp(-0) = 1 makes the threshold moot), scores
    # iou_cls * iou_reg >= 0 never dropped (score_threshold=0), and `while len > 1` leaves the last
    # proposal out: max_output = min(100, N - 1) for N > 1.
    for seed, n in [(0, 1), (1, 2), (2, 30), (3, 150)]:
        segments, scores = continuous_detections(n, seed, torch.float64, span=1.0)
        want = etad_soft_nms(segments.tolist(), scores.tolist(), 0.0, 0.35, 100)
        idx, dec = soft(segments, scores, backend, sigma=0.35, score_threshold=0.0,
                        max_output=min(100, n - 1) if n > 1 else 1)
        assert idx.tolist() == [i for i, _ in want]
        torch.testing.assert_close(dec, torch.tensor([s for _, s in want], dtype=torch.float64), rtol=1e-12, atol=0)


def _outcome(call) -> BaseException | None:
    try:
        call()
    except Exception as exc:  # compared with the reference's below
        return exc
    return None


@pytest.mark.parametrize("backend", OTHERS)
def test_bad_inputs_raise_the_reference_errors(backend):
    segs, scores = torch.tensor([[0.0, 4.0], [1.0, 5.0], [8.0, 9.0]]), torch.tensor([0.9, 0.8, 0.7])
    one = ({"segments": segs, "scores": scores}, fastlocal.soft_nms_1d)
    many = ({"segments": segs[None], "scores": scores[None]}, fastlocal.batched_soft_nms_1d)
    bad = [  # (which form, overrides, argument the message must name)
        (one, {"scores": torch.tensor([0.9, math.nan, 0.7])}, "scores"),
        (one, {"segments": torch.tensor([[0.0, 4.0], [5.0, 1.0], [8.0, 9.0]])}, "segments"),
        (one, {"segments": segs[:, :1]}, "segments"),
        (one, {"scores": scores[:2]}, "scores"),
        (one, {"scores": scores.long()}, "scores"),
        (one, {"sigma": 0.0}, "sigma"),
        (one, {"iou_threshold": 1.5}, "iou_threshold"),
        (one, {"score_threshold": math.inf}, "score_threshold"),
        (one, {"method": "hard"}, "method"),
        (one, {"max_output": 0}, "max_output"),
        (one, {"max_output": 2.0}, "max_output"),
        (one, {"max_output": True}, "max_output"),
        (many, {"segments": segs}, "segments"),
        (many, {"scores": scores[None, :2]}, "scores"),
        (many, {"segments": torch.tensor([[[0.0, math.inf], [1.0, 5.0], [8.0, 9.0]]])}, "segments"),
        (many, {"valid": torch.ones(1, 3)}, "valid"),
        (many, {"valid": torch.ones(1, 2, dtype=torch.bool)}, "valid"),
        (many, {"max_output": -1}, "max_output"),
    ]
    dev = device_of(backend)
    for (base, op), overrides, name in bad:
        args = {**base, **overrides}
        want = _outcome(lambda op=op, args=args: op(**args, backend="reference"))
        moved = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        got = _outcome(lambda op=op, moved=moved: op(**moved, backend=backend))
        assert_same_refusal(backend, want, got, {name})


def test_cpu_kernel_rechecks_what_it_indexes():
    kernel = pytest.importorskip("fastlocal._C").soft_nms_1d
    segs, scores, valid = torch.zeros(2, 3, 2), torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="segments must be"):
        kernel(segs[:, :, :1], scores, valid, 0.5, 0.3, 0.0, True, 3)
    with pytest.raises(ValueError, match="valid must be"):
        kernel(segs, scores, valid[:, :2], 0.5, 0.3, 0.0, True, 3)
    with pytest.raises(TypeError, match="valid must be bool"):
        kernel(segs, scores, valid.float(), 0.5, 0.3, 0.0, True, 3)
    with pytest.raises(TypeError, match="share a dtype"):
        kernel(segs, scores.double(), valid, 0.5, 0.3, 0.0, True, 3)
    with pytest.raises(ValueError, match="max_output must be >= 0"):
        kernel(segs, scores, valid, 0.5, 0.3, 0.0, True, -1)


@pytest.mark.parametrize("backend", OTHERS)
def test_custom_ops_pass_opcheck(backend):
    dev = device_of(backend)
    segments, scores = continuous_detections(20, seed=1, dtype=torch.float32)
    segments, scores = segments.to(dev), scores.to(dev)
    valid = torch.ones(2, 20, dtype=torch.bool, device=dev)
    torch.library.opcheck(torch.ops.fastlocal.batched_soft_nms_1d.default,
                          (torch.stack([segments, segments]), torch.stack([scores, scores]), valid, 0.5, 0.3, 0.001,
                           True, 5, backend))


def test_compiles_with_fullgraph():
    # Both custom ops in one compiled graph (the single form's output size depends on the data);
    # the value checks run inside the graph and raise eager's error.
    segments, scores = continuous_detections(40, seed=2, dtype=torch.float32)

    def both(segments, scores):
        one = fastlocal.soft_nms_1d(segments, scores, max_output=10, backend="cpu")
        many = fastlocal.batched_soft_nms_1d(segments[None], scores[None], max_output=10, backend="cpu")
        return *one, *many

    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(both, fullgraph=True, backend="eager")
        got, want = compiled(segments, scores), both(segments, scores)
        assert [t.tolist() for t in got] == [t.tolist() for t in want]
        reversed_row = segments.clone()
        reversed_row[3, 0] = reversed_row[3, 1] + 1  # start > end
        with pytest.raises(ValueError, match="start <= end"):
            compiled(reversed_row, scores)
