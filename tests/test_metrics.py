"""fastlocal.metrics: MS-TCN's segmental F1, edit score and accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from fastlocal.metrics import (
    SegmentationMetrics,
    edit_score,
    f_score_counts,
    levenshtein,
    segmentation_scores,
    segments,
)

# ---- a port-by-reading of MS-TCN's eval.py loops (the definition the vectorised code must match) ----


def _loop_segments(labels, bg):
    out, starts, ends = [], [], []
    last = labels[0]
    if last not in bg:
        out.append(last)
        starts.append(0)
    for i, label in enumerate(labels):
        if label != last:
            if label not in bg:
                out.append(label)
                starts.append(i)
            if last not in bg:
                ends.append(i)
            last = label
    if last not in bg:
        ends.append(len(labels))
    return out, starts, ends


def _loop_levenshtein(p, y):
    D = np.zeros((len(p) + 1, len(y) + 1))
    D[:, 0] = np.arange(len(p) + 1)
    D[0, :] = np.arange(len(y) + 1)
    for j in range(1, len(y) + 1):
        for i in range(1, len(p) + 1):
            if y[j - 1] == p[i - 1]:
                D[i, j] = D[i - 1, j - 1]
            else:
                D[i, j] = min(D[i - 1, j], D[i, j - 1], D[i - 1, j - 1]) + 1
    return D[-1, -1]


def _loop_f_score(pred, gt, tau, bg):
    pl, ps, pe = _loop_segments(pred, bg)
    yl, ys, ye = _loop_segments(gt, bg)
    tp = fp = 0
    hits = np.zeros(len(yl))
    for j in range(len(pl)):
        if not yl:  # eval.py fails here (argmax of nothing); fastlocal counts a false positive
            fp += 1
            continue
        inter = np.minimum(pe[j], ye) - np.maximum(ps[j], ys)
        union = np.maximum(pe[j], ye) - np.minimum(ps[j], ys)
        iou = (1.0 * inter / union) * np.array([pl[j] == yl[x] for x in range(len(yl))])
        idx = iou.argmax()
        if iou[idx] >= tau and not hits[idx]:
            tp += 1
            hits[idx] = 1
        else:
            fp += 1
    return tp, fp, len(yl) - hits.sum()


def _loop_scores(preds, gts, bg):
    taus = (0.1, 0.25, 0.5)
    counts = np.zeros((3, 3))
    correct = total = 0
    edit = 0.0
    for p, y in zip(preds, gts, strict=True):
        correct += sum(int(a == b) for a, b in zip(p, y, strict=True))
        total += len(y)
        P, Y = _loop_segments(p, bg)[0], _loop_segments(y, bg)[0]
        # eval.py divides 0 by 0 when both lists are empty; fastlocal scores that 100
        edit += (1 - _loop_levenshtein(P, Y) / max(len(P), len(Y))) * 100 if P or Y else 100.0
        for k, tau in enumerate(taus):
            counts[k] += _loop_f_score(p, y, tau, bg)
    out = {}
    for k, tau in enumerate(taus):
        tp, fp, fn = counts[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, recall = np.float64(tp) / (tp + fp), np.float64(tp) / (tp + fn)
            out[f"F1@{round(tau * 100)}"] = np.nan_to_num(2 * precision * recall / (precision + recall)) * 100
    out["edit"] = edit / len(preds)
    out["acc"] = 100 * correct / total
    return out


def _random_video(rng, T, C, mean_run):
    """Piecewise-constant labels with runs of mean length ``mean_run`` (and some 1-frame flicker)."""
    labels = np.repeat(rng.integers(0, C, T), rng.geometric(1 / mean_run, T))[:T]
    flicker = rng.random(T) < 0.02
    labels[flicker] = rng.integers(0, C, flicker.sum())
    return labels


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("background", [(), (0,)])
def test_matches_mstcn_loops_on_random_videos(seed, background):
    rng = np.random.default_rng(seed)
    C = int(rng.integers(2, 6))
    gts, preds = [], []
    for _ in range(4):
        T = int(rng.integers(20, 300))
        gts.append(_random_video(rng, T, C, 25))
        preds.append(_random_video(rng, T, C, rng.choice([3, 15, 40])))
    got = segmentation_scores(preds, gts, background=background)
    want = _loop_scores(preds, gts, list(background))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    for p, y in zip(preds, gts, strict=True):
        for k, tau in enumerate((0.1, 0.25, 0.5)):
            assert tuple(f_score_counts(p, y, background=background)[k]) == _loop_f_score(p, y, tau, list(background))


def test_levenshtein_matches_loop():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.integers(0, 4, rng.integers(0, 12))
        b = rng.integers(0, 4, rng.integers(0, 12))
        assert levenshtein(a, b) == _loop_levenshtein(list(a), list(b))
    assert levenshtein(list("kitten"), list("sitting")) == 3


def test_segments_with_background():
    labels, starts, ends = segments(["bg", "a", "a", "bg", "a", "b", "b"], background=["bg"])
    assert labels.tolist() == ["a", "a", "b"]  # separated by background: two segments of "a"
    assert starts.tolist() == [1, 4, 5]
    assert ends.tolist() == [3, 5, 7]


def test_hand_computed_case():
    # gt:   A A A A B B B B B B   (A: [0,4), B: [4,10))
    # pred: A A B B B B B B A A   (A: [0,2), B: [2,8), A: [8,10))
    gt = [0] * 4 + [1] * 6
    pred = [0] * 2 + [1] * 6 + [0] * 2
    # IoU: pred A[0,2) vs gt A = 2/4 = 0.5; pred B vs gt B = 4/8 = 0.5; pred A[8,10) vs gt A = -4/10 < 0.
    counts = f_score_counts(pred, gt, overlaps=(0.1, 0.5, 0.51))
    assert counts.tolist() == [[2, 1, 0], [2, 1, 0], [0, 3, 2]]
    scores = segmentation_scores([pred], [gt])
    f1 = 2 * (2 / 3) * 1 / (2 / 3 + 1) * 100
    assert scores["F1@10"] == pytest.approx(f1)
    assert scores["F1@50"] == pytest.approx(f1)
    assert scores["edit"] == pytest.approx((1 - 1 / 3) * 100)  # [A, B, A] vs [A, B]: one deletion
    assert scores["acc"] == pytest.approx(60.0)


def test_already_matched_ground_truth_is_a_false_positive():
    # Two predicted A segments overlap the same gt A segment; the second is a FP even with IoU >= tau.
    gt = [0] * 10
    pred = [0] * 5 + [1] + [0] * 4
    tp, fp, fn = f_score_counts(pred, gt, overlaps=(0.3,))[0]
    assert (tp, fp, fn) == (1, 2, 0)


def test_ties_go_to_the_first_ground_truth():
    # pred A covers gt A1 and A2 equally (IoU 0.4 each): A1 is matched; A2 stays a FN.
    gt = [0] * 4 + [1] * 2 + [0] * 4
    pred = [0] * 10
    assert f_score_counts(pred, gt, overlaps=(0.4,))[0].tolist() == [1, 0, 2]


def test_background_counts_for_accuracy_only():
    gt = [0, 0, 1, 1, 0, 0]
    pred = [1, 0, 1, 1, 0, 0]
    with_bg = segmentation_scores([pred], [gt], background=[0])
    assert with_bg["acc"] == pytest.approx(100 * 5 / 6)
    assert with_bg["edit"] == pytest.approx(50.0)  # [1, 1] vs [1]
    assert with_bg["F1@50"] == pytest.approx(100 * 2 * 0.5 / 1.5)  # TP 1, FP 1, FN 0
    without = segmentation_scores([pred], [gt])
    assert without["F1@50"] == pytest.approx(100 * 2 * 0.75 / 1.75)  # TP 3, FP 1, FN 0
    assert without["acc"] == with_bg["acc"]


def test_empty_segment_lists():
    gt, pred = [0, 0, 1, 1], [0, 0, 0, 0]
    counts = f_score_counts(pred, gt, background=[0])
    assert counts.tolist() == [[0, 0, 1]] * 3
    assert edit_score(pred, gt, background=[0]) == 0.0
    assert edit_score(pred, pred, background=[0]) == 100.0
    scores = segmentation_scores([pred], [gt], background=[0])
    assert scores["F1@10"] == 0.0  # 0/0 precision is 0, as eval.py's nan_to_num


def test_accumulator_and_errors():
    m = SegmentationMetrics()
    with pytest.raises(ValueError, match="no videos"):
        m.compute()
    with pytest.raises(ValueError, match="same number of frames"):
        m.update([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="1-D"):
        m.update(np.zeros((2, 2)), np.zeros((2, 2)))
    m.update(np.array([0, 1, 1]), np.array([0, 1, 1]))
    m.update(["a", "b"], ["a", "a"])
    assert m.videos == 2
    assert m.compute()["acc"] == pytest.approx(100 * 4 / 5)


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    scores = segmentation_scores([torch.tensor([0, 0, 1])], [torch.tensor([0, 0, 1])])
    assert scores == {"F1@10": 100.0, "F1@25": 100.0, "F1@50": 100.0, "edit": 100.0, "acc": 100.0}


@pytest.mark.parametrize(
    ("overlaps", "error", "match"),
    [
        ((1.5, -0.5), ValueError, r"overlaps must be finite IoU thresholds in \(0, 1\], got \[1.5, -0.5\]"),
        ((float("nan"),), ValueError, r"overlaps must be finite IoU thresholds in \(0, 1\], got \[nan\]"),
        ((0.5, float("inf")), ValueError, r"in \(0, 1\], got \[inf\]"),
        ((0.0,), ValueError, r"in \(0, 1\], got \[0.0\]"),
        ((), ValueError, "overlaps must hold at least one"),
        ((0.1, 0.101), ValueError, "overlaps must differ in percent"),
        (("0.5",), TypeError, "overlaps must hold numbers"),
        ((True,), TypeError, "overlaps must hold numbers"),
        ("0.5", TypeError, "overlaps must be a sequence"),
        (0.5, TypeError, "overlaps must be a sequence"),
    ],
)
def test_bad_overlaps_named(overlaps, error, match):
    for call in (
        lambda: SegmentationMetrics(overlaps),
        lambda: segmentation_scores([[0, 1]], [[0, 1]], overlaps),
        lambda: f_score_counts([0, 1], [0, 1], overlaps),
    ):
        with pytest.raises(error, match=match):
            call()


def test_good_overlaps():
    scores = segmentation_scores([[0, 1, 1]], [[0, 1, 1]], overlaps=np.array([1.0, 0.75, 1e-3]))
    assert scores["F1@100"] == scores["F1@75"] == scores["F1@0"] == 100.0
    assert SegmentationMetrics([0.5]).overlaps == (0.5,)
