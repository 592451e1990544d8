"""fastlocal.metrics.detection against an independent loop oracle of ActivityNet's evaluation code.

The oracles below follow ``Evaluation/eval_detection.py`` and ``eval_proposal.py`` step by step
(plain loops, NumPy's default argsort where the official code sorts, the same float operations
for tIoU), written for these tests. Random cases hold score and tIoU ties, duplicated ground
truth and predictions, videos missing from the predictions, classes never predicted and
predictions in videos without ground truth.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastlocal.data.detection import DatasetError, read_ground_truth, read_predictions
from fastlocal.metrics import (
    ACTIVITYNET_TIOU_THRESHOLDS,
    THUMOS_TIOU_THRESHOLDS,
    average_recall,
    detection_map,
)

# ----------------------------------------------------------------------------- oracles


def _gt_rows(gt: dict, subset: str, blocked=()) -> tuple[list, dict]:
    rows, classes = [], {}
    for vid, entry in gt["database"].items():
        if entry["subset"] != subset or vid in blocked:
            continue
        for ann in entry["annotations"]:
            classes.setdefault(ann["label"], len(classes))
            rows.append((vid, float(ann["segment"][0]), float(ann["segment"][1]), classes[ann["label"]]))
    return rows, classes


def _tiou(s, e, gs, ge):
    inter = max(min(e, ge) - max(s, gs), 0.0)
    union = (ge - gs) + (e - s) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(inter) / np.float64(union)


def _voc_ap(precision, recall):
    mprec = [0.0, *precision, 0.0]
    mrec = [0.0, *recall, 1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    terms = [(mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]]
    return np.sum(np.array(terms, np.float64))


def oracle_map(gt: dict, pred: dict, thresholds, subset="validation", blocked=()):
    gt_rows, classes = _gt_rows(gt, subset, blocked)
    preds = []
    for vid, entries in pred["results"].items():
        if vid in blocked:
            continue
        for p in entries:
            preds.append((vid, float(p["segment"][0]), float(p["segment"][1]), classes[p["label"]], p["score"]))
    ap = np.zeros((len(thresholds), len(classes)))
    for c in range(len(classes)):
        class_gt = [r for r in gt_rows if r[3] == c]
        class_pred = [p for p in preds if p[3] == c]
        if not class_pred:
            continue
        scores = np.array([p[4] for p in class_pred])
        ordered = [class_pred[i] for i in scores.argsort()[::-1]]
        locked = np.full((len(thresholds), len(class_gt)), -1)
        tp = np.zeros((len(thresholds), len(ordered)))
        fp = np.zeros((len(thresholds), len(ordered)))
        for i, (vid, s, e, _, _) in enumerate(ordered):
            here = [j for j, g in enumerate(class_gt) if g[0] == vid]
            if not here:
                fp[:, i] = 1
                continue
            tious = np.array([_tiou(s, e, class_gt[j][1], class_gt[j][2]) for j in here])
            walk = tious.argsort()[::-1]
            for k, thr in enumerate(thresholds):
                for w in walk:
                    if tious[w] < thr:
                        fp[k, i] = 1
                        break
                    if locked[k, here[w]] >= 0:
                        continue
                    tp[k, i] = 1
                    locked[k, here[w]] = i
                    break
                if tp[k, i] == 0 and fp[k, i] == 0:
                    fp[k, i] = 1
        tp_cum, fp_cum = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
        for k in range(len(thresholds)):
            ap[k, c] = _voc_ap(tp_cum[k] / (tp_cum[k] + fp_cum[k]), tp_cum[k] / float(len(class_gt)))
    per_threshold = ap.mean(axis=1)
    return ap, per_threshold, per_threshold.mean(), list(classes)


def oracle_recall(gt: dict, pred: dict, thresholds, max_avg=None, subset="validation"):
    gt_rows, _ = _gt_rows(gt, subset)
    videos = list(dict.fromkeys(r[0] for r in gt_rows))
    props = [(vid, float(p["segment"][0]), float(p["segment"][1]), p["score"])
             for vid, entries in pred["results"].items() for p in entries]
    if not max_avg:
        max_avg = float(len(props)) / len(videos)
    ratio = max_avg * float(len(videos)) / len(props)
    scores_per_video, total = [], 0
    for vid in videos:
        g = [(r[1], r[2]) for r in gt_rows if r[0] == vid]
        mine = [p for p in props if p[0] == vid]
        if not mine:
            scores_per_video.append(np.zeros((len(g), 1)))
            continue
        order = np.array([p[3] for p in mine]).argsort()[::-1]
        mine = [mine[i] for i in order]
        n = min(int(len(mine) * ratio), len(mine))
        total += n
        scores_per_video.append(np.array([[_tiou(p[1], p[2], gs, ge) for p in mine[:n]] for gs, ge in g])
                                .reshape(len(g), n))
    pcn = np.arange(1, 101) / 100.0 * (max_avg * float(len(videos)) / total)
    recall = np.zeros((len(thresholds), 100))
    for k, thr in enumerate(thresholds):
        matched = np.zeros((len(videos), 100))
        for i, score in enumerate(scores_per_video):
            for j in range(100):
                n = min(int(score.shape[1] * pcn[j]), score.shape[1])
                matched[i, j] = sum(1 for row in score if (row[:n] >= thr).any())
        recall[k] = matched.sum(axis=0) / float(sum(s.shape[0] for s in scores_per_video))
    return recall, recall.mean(axis=0), pcn * (float(total) / len(videos))


# ----------------------------------------------------------------------------- random cases


def random_case(rng, *, n_videos=12, n_classes=4):
    classes = [f"class{i}" for i in rng.permutation(n_classes)]
    grid = [0.5, 1.0, 1e-6][int(rng.integers(3))]  # coarse grids give tIoU ties
    db, results = {}, {}
    for v in range(n_videos):
        vid = f"v{v}"
        anns = []
        for _ in range(int(rng.integers(0, 5))):
            s = float(np.round(rng.uniform(0, 60) / grid) * grid)
            e = s + float(max(grid, np.round(rng.uniform(1, 15) / grid) * grid))
            anns.append({"segment": [s, e], "label": classes[int(rng.integers(n_classes))]})
            if rng.random() < 0.2:
                anns.append(dict(anns[-1]))  # duplicated ground truth
        db[vid] = {"subset": "validation" if rng.random() < 0.85 else "training", "duration": 100.0,
                   "annotations": anns}
        if rng.random() < 0.15:
            continue  # missing from the predictions
        preds = []
        for _ in range(int(rng.integers(0, 14))):
            if anns and rng.random() < 0.7:
                a = anns[int(rng.integers(len(anns)))]
                s, e = a["segment"][0] + rng.normal(0, 1.5), a["segment"][1] + rng.normal(0, 1.5)
                label = a["label"]
            else:
                s = rng.uniform(0, 70)
                e = s + rng.uniform(1, 20)
                label = classes[int(rng.integers(n_classes))]
            s, e = sorted((float(np.round(s / grid) * grid), float(np.round(e / grid) * grid)))
            preds.append({"label": label, "score": float(np.round(rng.random(), 1)), "segment": [s, e]})
            if rng.random() < 0.1:
                preds.append(dict(preds[-1]))  # duplicated prediction
        results[vid] = preds
    results["not_in_gt"] = [{"label": classes[0], "score": 0.7, "segment": [0.0, 5.0]}]
    valid = sorted({a["label"] for e in db.values() if e["subset"] == "validation" for a in e["annotations"]})
    for preds in results.values():  # predict only labels the evaluated subset has
        for p in preds:
            if p["label"] not in valid:
                p["label"] = valid[int(rng.integers(len(valid)))] if valid else p["label"]
    if rng.random() < 0.3 and len(valid) > 1:  # a class never predicted
        never = valid[0]
        for preds in results.values():
            preds[:] = [p for p in preds if p["label"] != never]
    gt = {"version": "1.3", "taxonomy": [], "database": db}
    return gt, {"version": "1.3", "external_data": {}, "results": results}


def _has_gt(gt):
    return any(e["annotations"] for e in gt["database"].values() if e["subset"] == "validation")


@pytest.mark.parametrize("seed", range(6))
def test_detection_map_equals_oracle_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    checked = 0
    for case in range(25):
        gt, pred = random_case(rng, n_videos=int(rng.integers(1, 15)), n_classes=int(rng.integers(1, 6)))
        if not _has_gt(gt):
            continue
        thresholds = ACTIVITYNET_TIOU_THRESHOLDS if case % 2 else THUMOS_TIOU_THRESHOLDS
        ap, per_threshold, average, classes = oracle_map(gt, pred, thresholds)
        ours = detection_map(gt, pred, thresholds)
        assert ours.classes == classes
        np.testing.assert_array_equal(ours.ap, ap)  # bit for bit: same sorts, same float operations
        np.testing.assert_array_equal(ours.map, per_threshold)
        assert ours.average_map == average
        checked += 1
    assert checked >= 15


def test_detection_map_many_ties_and_groups():
    """Integer scores (all tied within a class), many ground truths per video: the walk and
    the tie handling at a larger scale, where NumPy's SIMD argsort is not stable."""
    rng = np.random.default_rng(7)
    db, results = {}, {}
    for v in range(30):
        anns = [{"segment": [float(s), float(s + rng.integers(2, 6))], "label": f"c{rng.integers(3)}"}
                for s in rng.integers(0, 50, int(rng.integers(1, 25)))]
        db[f"v{v}"] = {"subset": "validation", "annotations": anns}
        results[f"v{v}"] = [{"label": f"c{rng.integers(3)}", "score": int(rng.integers(0, 3)),
                             "segment": [float(s), float(s + rng.integers(2, 6))]}
                            for s in rng.integers(0, 50, int(rng.integers(0, 40)))]
    gt, pred = {"database": db}, {"results": results}
    ap, _, average, _ = oracle_map(gt, pred, THUMOS_TIOU_THRESHOLDS)
    ours = detection_map(gt, pred, THUMOS_TIOU_THRESHOLDS)
    np.testing.assert_array_equal(ours.ap, ap)
    assert ours.average_map == average and 0.01 < average < 0.9


def test_detection_map_hand_computed():
    gt = {"database": {
        "a": {"subset": "validation", "annotations": [{"segment": [1, 3], "label": "x"},
                                                      {"segment": [5, 8], "label": "y"}]},
        "b": {"subset": "validation", "annotations": [{"segment": ["1", "4"], "label": "x"}]},  # THUMOS strings
    }}
    pred = {"results": {
        "a": [{"label": "x", "score": 0.9, "segment": [1, 3]},     # tIoU 1 with a/x
              {"label": "y", "score": 0.5, "segment": [5, 7]}],    # tIoU 2/3 with a/y
        "b": [{"label": "x", "score": 0.3, "segment": [1, 2]}],    # tIoU 1/3 with b/x
    }}
    result = detection_map(gt, pred)
    assert result.classes == ["x", "y"]
    # x: TP then FP (1/3 < 0.5) -> precision [1, 1/2], recall [1/2, 1/2] -> AP 1/2 at every threshold
    np.testing.assert_allclose(result.ap[:, 0], 0.5)
    # y: TP while 2/3 >= threshold (0.5 .. 0.65), then 0
    np.testing.assert_allclose(result.ap[:, 1], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(result.map, [0.75] * 4 + [0.25] * 6)
    assert result.average_map == pytest.approx(0.45)
    assert result.as_dict()["mAP@0.50"] == pytest.approx(0.75)
    assert set(result.ap_per_class()) == {"x", "y"}


def test_tied_scores_follow_numpy_argsort():
    """Two predictions of equal score: the official order is ``argsort()[::-1]``, which on
    NumPy's sort puts the later entry first for two elements (whatever it does, it is followed)."""
    gt = {"database": {"a": {"subset": "validation", "annotations": [{"segment": [0, 10], "label": "x"}]}}}
    pred = {"results": {"a": [{"label": "x", "score": 0.5, "segment": [0, 9]},     # tIoU 0.9
                              {"label": "x", "score": 0.5, "segment": [0, 3]}]}}   # tIoU 0.3
    first = np.argsort(np.array([0.5, 0.5]))[::-1][0]
    expected = 1.0 if first == 0 else 0.5  # TP first -> AP 1; FP first -> precision 0 then 1/2
    assert detection_map(gt, pred, [0.5]).ap[0, 0] == expected


def test_tied_tiou_walk_follows_numpy_argsort():
    """A prediction with equal tIoU to several ground truths locks the one ``tiou.argsort()[::-1]``
    puts first; a later prediction that overlaps only that one then becomes a false positive."""
    gt = {"database": {"a": {"subset": "validation", "annotations": [
        {"segment": [0, 10], "label": "x"}, {"segment": [10, 20], "label": "x"}]}}}
    pred = {"results": {"a": [{"label": "x", "score": 0.9, "segment": [5, 15]},    # tIoU 1/3 with both
                              {"label": "x", "score": 0.5, "segment": [0, 10]}]}}  # tIoU 1 with the first only
    locked = np.argsort(np.array([1 / 3, 1 / 3]))[::-1][0]
    expected = 1.0 if locked == 1 else 0.5  # second locked: both TP; first locked: TP then FP
    assert detection_map(gt, pred, [0.3]).ap[0, 0] == expected
    # 20 tied candidates (NumPy's SIMD sort orders such rows its own way): one prediction covering
    # all of them at tIoU 0.05, then one exact prediction per ground truth in decreasing score
    anns = [{"segment": [10 * j, 10 * j + 10], "label": "x"} for j in range(20)]
    preds = [{"label": "x", "score": 1.0, "segment": [0, 200]}]
    preds += [{"label": "x", "score": 0.9 - 0.01 * j, "segment": [10 * j, 10 * j + 10]} for j in range(20)]
    gt = {"database": {"a": {"subset": "validation", "annotations": anns}}}
    pred = {"results": {"a": preds}}
    first = int(np.argsort(np.full(20, 0.05))[::-1][0])  # the ground truth the wide prediction locks
    ours = detection_map(gt, pred, [0.05])
    np.testing.assert_array_equal(ours.ap, oracle_map(gt, pred, [0.05])[0])
    # precision drops at the exact prediction of the locked ground truth (rank first + 2)
    tp = np.ones(21)
    tp[first + 1] = 0
    cum = np.cumsum(tp)
    assert ours.ap[0, 0] == pytest.approx(_voc_ap(cum / np.arange(1, 22), cum / 20))


def test_duplicates_locked_ground_truth_and_next_match():
    gt = {"database": {"a": {"subset": "validation", "annotations": [
        {"segment": [0, 10], "label": "x"}, {"segment": [1, 10], "label": "x"}]}}}
    pred = {"results": {"a": [{"label": "x", "score": 0.9, "segment": [0, 10]},
                              {"label": "x", "score": 0.8, "segment": [0, 10]},    # next GT (tIoU 0.9)
                              {"label": "x", "score": 0.7, "segment": [0, 10]}]}}  # both locked: FP
    result = detection_map(gt, pred, [0.5, 0.95])
    # 0.5: TP, TP, FP -> AP 1; 0.95: TP, FP (second GT has tIoU 0.9), FP -> AP 1/2
    np.testing.assert_allclose(result.ap[:, 0], [1.0, 0.5])


def test_edge_cases_unpredicted_class_missing_video_empty_predictions():
    gt = {"database": {
        "a": {"subset": "validation", "annotations": [{"segment": [0, 10], "label": "x"}]},
        "b": {"subset": "validation", "annotations": [{"segment": [0, 10], "label": "y"},
                                                      {"segment": [20, 30], "label": "x"}]},
        "c": {"subset": "training", "annotations": [{"segment": [0, 10], "label": "z"}]},
    }}
    # b is missing from the predictions (its x only adds a positive), y is never predicted
    pred = {"results": {"a": [{"label": "x", "score": 1.0, "segment": [0, 10]}]}}
    result = detection_map(gt, pred, [0.5])
    assert result.classes == ["x", "y"]  # z is in another subset
    np.testing.assert_allclose(result.ap[0], [0.5, 0.0])
    assert result.average_map == pytest.approx(0.25)
    empty = detection_map(gt, {"results": {}}, [0.5])
    assert empty.average_map == 0.0 and not empty.ap.any()
    # predictions of a video without ground truth are false positives
    extra = {"results": {"zz": [{"label": "x", "score": 2.0, "segment": [0, 10]}], **pred["results"]}}
    assert detection_map(gt, extra, [0.5]).ap[0, 0] == pytest.approx(0.25)  # FP then TP: 1/2 * 1/2
    # blocked videos leave both sides
    assert detection_map(gt, extra, [0.5], blocked=["zz", "b"]).ap[0, 0] == 1.0
    assert detection_map(gt, pred, [0.5], subset=None).classes == ["x", "y", "z"]


def test_zero_length_segments_match_as_official():
    """tIoU 0/0 is NaN; the official walk never rejects NaN (``nan < thr`` is False)."""
    gt = {"database": {"a": {"subset": "validation", "annotations": [{"segment": [5, 5], "label": "x"}]}}}
    pred = {"results": {"a": [{"label": "x", "score": 1.0, "segment": [5, 5]}]}}
    np.testing.assert_array_equal(detection_map(gt, pred).ap, oracle_map(gt, pred, ACTIVITYNET_TIOU_THRESHOLDS)[0])
    assert detection_map(gt, pred).average_map == 1.0


def test_inputs_from_json_files(tmp_path):
    gt, pred = random_case(np.random.default_rng(3))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    from_files = detection_map(tmp_path / "gt.json", str(tmp_path / "pred.json"))
    np.testing.assert_array_equal(from_files.ap, detection_map(gt, pred).ap)
    parsed = detection_map(read_ground_truth(gt), read_predictions(pred))  # already parsed inputs
    np.testing.assert_array_equal(parsed.ap, from_files.ap)


def test_thumos_ground_truth_without_ambiguous():
    """THUMOS: string segments, subset "test", thresholds 0.3..0.7; Ambiguous is a class to the
    official code, so it is dropped when reading (``ignore_labels``) before evaluating."""
    gt = {"database": {"video_test_1": {"subset": "test", "annotations": [
        {"segment": ["1.0", "3.0"], "label": "Diving"}, {"segment": ["4.0", "6.0"], "label": "Ambiguous"}]}}}
    pred = {"results": {"video_test_1": [{"label": "Diving", "score": 0.8, "segment": [1.2, 3.0]}]}}
    with_ambiguous = detection_map(gt, pred, THUMOS_TIOU_THRESHOLDS, subset="test")
    assert with_ambiguous.classes == ["Diving", "Ambiguous"]
    np.testing.assert_allclose(with_ambiguous.map, [0.5] * 5)  # Ambiguous counts as a class with AP 0
    clean = read_ground_truth(gt, ignore_labels=["Ambiguous"])
    result = detection_map(clean, pred, THUMOS_TIOU_THRESHOLDS, subset="test")
    assert result.classes == ["Diving"] and result.average_map == 1.0  # tIoU 0.9
    ambiguous_pred = {"results": {"video_test_1": [{"label": "Ambiguous", "score": 1.0, "segment": [4, 6]}]}}
    with pytest.raises(ValueError, match="predicted label 'Ambiguous'"):
        detection_map(clean, ambiguous_pred, THUMOS_TIOU_THRESHOLDS, subset="test")


def test_errors_name_the_problem(tmp_path):
    gt = {"database": {"a": {"subset": "validation", "annotations": [{"segment": [0, 10], "label": "x"}]}}}
    bad_label = {"results": {"a": [{"label": "nope", "score": 1.0, "segment": [0, 1]}]}}
    with pytest.raises(ValueError, match=r"predicted label 'nope' \(video 'a'\)"):
        detection_map(gt, bad_label)
    with pytest.raises(ValueError, match="no ground-truth annotation in subset 'test'"):
        detection_map(gt, {"results": {}}, subset="test")
    with pytest.raises(ValueError, match=r"tiou_thresholds must lie in \(0, 1\]"):
        detection_map(gt, {"results": {}}, [0.0, 0.5])
    with pytest.raises(TypeError, match="tiou_thresholds"):
        detection_map(gt, {"results": {}}, 0.5)
    with pytest.raises(DatasetError, match="'score' must be a finite number"):
        detection_map(gt, {"results": {"a": [{"label": "x", "score": float("nan"), "segment": [0, 1]}]}})
    (tmp_path / "broken.json").write_text('{"results": {"a": [}')
    with pytest.raises(DatasetError, match=r"broken.json:1:\d+: malformed JSON"):
        detection_map(gt, tmp_path / "broken.json")


# ----------------------------------------------------------------------------- average recall


@pytest.mark.parametrize("seed", range(4))
def test_average_recall_equals_oracle(seed):
    rng = np.random.default_rng(100 + seed)
    checked = 0
    for case in range(12):
        gt, pred = random_case(rng, n_videos=int(rng.integers(1, 12)), n_classes=3)
        if not _has_gt(gt) or not any(pred["results"].values()):
            continue
        thresholds = ACTIVITYNET_TIOU_THRESHOLDS if case % 2 else THUMOS_TIOU_THRESHOLDS
        max_avg = [None, 2, 5, 100][case % 4]
        recall, avg, per_video = oracle_recall(gt, pred, thresholds, max_avg)
        ours = average_recall(gt, pred, thresholds, max_avg_proposals=max_avg)
        np.testing.assert_array_equal(ours.recall, recall)
        np.testing.assert_array_equal(ours.average_recall, avg)
        np.testing.assert_array_equal(ours.proposals_per_video, per_video)
        trapezoid = getattr(np, "trapezoid", None) or np.trapz
        assert ours.auc == float(trapezoid(avg, per_video))
        assert ours.auc_percent == pytest.approx(100 * ours.auc / per_video[-1])
        checked += 1
    assert checked >= 6


def test_average_recall_hand_computed():
    gt = {"database": {"a": {"subset": "validation", "annotations": [{"segment": [0, 10], "label": "x"},
                                                                     {"segment": [20, 30], "label": "x"}]}}}
    proposals = {"results": {"a": [{"score": 0.9, "segment": [0, 10]}, {"score": 0.5, "segment": [20, 26]},
                                   {"score": 0.1, "segment": [50, 60]}]}}  # no labels: proposals
    r = average_recall(gt, proposals, [0.5, 0.7], max_avg_proposals=3)
    # 3 proposals per video: curve point j uses int(3 * j / 100) of them
    assert r.proposals_per_video[-1] == pytest.approx(3.0)
    assert r.recall[:, 32].tolist() == [0.0, 0.0]          # int(0.99) = 0 proposals
    assert r.recall[:, 33].tolist() == [0.5, 0.5]          # 1 proposal: first GT
    assert r.recall[:, 66].tolist() == [1.0, 0.5]          # 2 proposals: tIoU 0.6 passes 0.5 only
    # curve points sit at 0.03, 0.06, ... proposals per video: 0.99 still uses none
    assert r.at(0.99) == 0.0 and r.at(1.02) == pytest.approx(0.5) and r.at(3) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="n must be >="):
        r.at(0.001)


def test_average_recall_no_kept_proposal_is_zero():
    gt = {"database": {"a": {"subset": "validation", "annotations": [{"segment": [0, 10], "label": "x"}]}}}
    r = average_recall(gt, {"results": {"elsewhere": [{"score": 1.0, "segment": [0, 10]}]}})
    assert not r.recall.any() and r.auc == 0.0
