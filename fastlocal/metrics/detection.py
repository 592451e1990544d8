"""Temporal action detection metrics, exactly as ActivityNet's ``Evaluation/`` code, vectorised.

:func:`detection_map` is ``eval_detection.py`` (``ANETdetection``): classes are the ground
truth's labels in order of first appearance; per class, the predictions are sorted by
``score.argsort()[::-1]`` (NumPy's default sort, whose tie order depends on the array and on
the machine's SIMD sort: the same call on the same array is made here, so ties fall as
they do in the official code); each prediction walks the ground truth of its video and
class in decreasing tIoU (``argsort()[::-1]`` again) and takes the first one not yet
locked at that threshold, or is a false positive once the tIoU drops below it (a
prediction in a video without ground truth of its class is a false positive). AP is the
VOC 2011 all-points interpolation; mAP averages the classes, a class never predicted
counting 0, and the headline number averages the thresholds. Videos missing from the
predictions only add to the positives; empty predictions give 0.

Differences, by decision: a predicted label absent from the ground truth raises a
``ValueError`` naming it (the official raises a bare ``KeyError``); non-finite scores or
segments and segments ending before they start are refused when the files are read
(:mod:`fastlocal.data.detection`); there is no server check of blocked videos (pass
``blocked``). A zero-length prediction on a zero-length ground truth gives tIoU 0/0 = NaN,
which the official walk treats as a match at every threshold; so does this.

:func:`average_recall` is ``eval_proposal.py``'s average recall against the average number
of proposals per video (AR@AN) and the area under that curve.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..data.detection import GroundTruth, Predictions, read_ground_truth, read_predictions

__all__ = [
    "ACTIVITYNET_TIOU_THRESHOLDS",
    "THUMOS_TIOU_THRESHOLDS",
    "DetectionMAP",
    "ProposalRecall",
    "average_recall",
    "detection_map",
]

ACTIVITYNET_TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
THUMOS_TIOU_THRESHOLDS = np.array([0.3, 0.4, 0.5, 0.6, 0.7])

GroundTruthLike = str | os.PathLike | Mapping | GroundTruth
PredictionsLike = str | os.PathLike | Mapping | Predictions


@dataclass(frozen=True)
class DetectionMAP:
    """``average_map`` (mean over thresholds), ``map [K]`` per threshold, ``ap [K, C]`` per
    threshold and class (columns in ``classes`` order), and the ``tiou_thresholds [K]``."""

    average_map: float
    map: np.ndarray
    ap: np.ndarray
    classes: list[str]
    tiou_thresholds: np.ndarray

    def ap_per_class(self) -> dict[str, np.ndarray]:
        """Class name -> its AP ``[K]`` at each threshold."""
        return {c: self.ap[:, i] for i, c in enumerate(self.classes)}

    def as_dict(self) -> dict[str, float]:
        """``{"average_mAP": ..., "mAP@0.50": ..., ...}`` in plain floats (for JSON and logs)."""
        out = {"average_mAP": float(self.average_map)}
        out.update({f"mAP@{t:.2f}": float(m) for t, m in zip(self.tiou_thresholds, self.map, strict=True)})
        return out


def _thresholds(tiou_thresholds: object) -> np.ndarray:
    if isinstance(tiou_thresholds, (str, bytes)) or not isinstance(tiou_thresholds, (Sequence, np.ndarray)):
        raise TypeError(f"tiou_thresholds must be a sequence of numbers, got {type(tiou_thresholds).__name__}")
    values = np.asarray(tiou_thresholds)
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "fiu":
        raise ValueError(f"tiou_thresholds must be a non-empty 1-D sequence of numbers, got {tiou_thresholds!r}")
    values = values.astype(np.float64)
    if not ((values > 0) & (values <= 1)).all():  # NaN fails too
        raise ValueError(f"tiou_thresholds must lie in (0, 1], got {values.tolist()}")
    return values


def _segment_iou(ps: np.ndarray, pe: np.ndarray, gs: np.ndarray, ge: np.ndarray) -> np.ndarray:
    """tIoU of prediction (target) and ground truth (candidate) pairs, with the same float
    operations as ``utils.segment_iou`` so that ties are bit-identical."""
    inter = (np.minimum(pe, ge) - np.maximum(ps, gs)).clip(0)
    union = (ge - gs) + (pe - ps) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def _load(ground_truth: GroundTruthLike, predictions: PredictionsLike, subset: str | None, blocked: Iterable[str],
          labels: bool) -> tuple[GroundTruth, Predictions]:
    blocked = tuple(blocked) if not isinstance(blocked, str) else (blocked,)
    gt = read_ground_truth(ground_truth, subset=subset, blocked=blocked, out_of_range="keep")
    if gt.num_instances == 0:
        raise ValueError(f"{gt.source}: no ground-truth annotation in subset {subset!r} "
                         f"({len(gt)} video(s) kept); pass subset=None to keep every video")
    return gt, read_predictions(predictions, labels=labels, blocked=blocked)


def _gt_arrays(gt: GroundTruth, class_index: dict[str, int] | None):
    """Ground truth as flat arrays in file order: ``(video ids, video [G], start, end, class [G])``."""
    ids = list(gt.videos)
    counts = [len(v.labels) for v in gt.videos.values()]
    video = np.repeat(np.arange(len(ids)), counts)
    segs = np.concatenate([v.segments for v in gt.videos.values()]) if ids else np.zeros((0, 2))
    label = None
    if class_index is not None:
        label = np.fromiter((class_index[c] for v in gt.videos.values() for c in v.labels), np.int64, video.size)
    return ids, video, segs[:, 0].copy(), segs[:, 1].copy(), label


def _interpolated_ap(tp: np.ndarray, npos: int) -> np.ndarray:
    """VOC 2011 all-points AP for each row of ``tp [K, n]`` (1 = true positive, in score order)."""
    tp_cum = np.cumsum(tp, axis=1).astype(np.float64)
    fp_cum = np.cumsum(~tp, axis=1).astype(np.float64)
    recall = tp_cum / float(npos)
    precision = tp_cum / (tp_cum + fp_cum)
    K = tp.shape[0]
    mprec = np.hstack([np.zeros((K, 1)), precision, np.zeros((K, 1))])
    mrec = np.hstack([np.zeros((K, 1)), recall, np.ones((K, 1))])
    mprec = np.maximum.accumulate(mprec[:, ::-1], axis=1)[:, ::-1]  # running max from the right
    ap = np.zeros(K)
    for k in range(K):  # one np.sum per row over the same terms as the official: same rounding
        idx = np.flatnonzero(mrec[k, 1:] != mrec[k, :-1]) + 1
        ap[k] = np.sum((mrec[k, idx] - mrec[k, idx - 1]) * mprec[k, idx])
    return ap


def detection_map(
    ground_truth: GroundTruthLike,
    predictions: PredictionsLike,
    tiou_thresholds: Sequence[float] | np.ndarray = ACTIVITYNET_TIOU_THRESHOLDS,
    *,
    subset: str | None = "validation",
    blocked: Iterable[str] = (),
) -> DetectionMAP:
    """Detection mAP of ``predictions`` against ``ground_truth`` as ActivityNet's ``eval_detection.py``.

    Args:
        ground_truth: ground-truth JSON path, loaded dict or :class:`GroundTruth` (ActivityNet
            or THUMOS layout, :mod:`fastlocal.data.detection`).
        predictions: submission JSON path, loaded dict (``{"results": ...}``) or :class:`Predictions`.
        tiou_thresholds: K thresholds in (0, 1]; ``ACTIVITYNET_TIOU_THRESHOLDS``
            (``np.linspace(0.5, 0.95, 10)``, default) or ``THUMOS_TIOU_THRESHOLDS`` (0.3..0.7).
        subset: the ground truth's ``subset`` to evaluate (THUMOS files use ``"test"``); None: all.
        blocked: video ids left out of both ground truth and predictions.
    Returns:
        :class:`DetectionMAP`. Raises ``ValueError`` for a predicted label that the ground
        truth of the subset does not have, and when that ground truth has no annotation.
    """
    thresholds = _thresholds(tiou_thresholds)
    gt, pred = _load(ground_truth, predictions, subset, blocked, labels=True)
    classes = gt.classes
    class_index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in pred.labels if c not in class_index]
    if unknown:
        row = int(np.flatnonzero(pred.label_index == pred.labels.index(unknown[0]))[0])
        raise ValueError(
            f"{pred.source}: predicted label {unknown[0]!r} (video {pred.videos[pred.video_index[row]]!r}) is not a "
            f"class of the ground truth in subset {subset!r} ({len(classes)} classes from {gt.source}); "
            f"{len(unknown)} unknown label(s) in all: {unknown[:5]}")
    K, C = thresholds.size, len(classes)
    ids, gt_video, gt_start, gt_end, gt_label = _gt_arrays(gt, class_index)
    video_id = {v: i for i, v in enumerate(ids)}
    # predictions in videos without ground truth get ids past the ground truth's (false positives)
    extra = {v: len(ids) + i for i, v in enumerate(v for v in pred.videos if v not in video_id)}
    pv_map = np.array([video_id.get(v, extra.get(v, -1)) for v in pred.videos], np.int64)
    p_video = pv_map[pred.video_index] if len(pred) else np.zeros(0, np.int64)
    p_label = np.array([class_index[c] for c in pred.labels], np.int64)[pred.label_index] if len(pred) else \
        np.zeros(0, np.int64)
    n_videos = len(ids) + len(extra)

    # score order per class: the official argsort on the class's scores in file order
    by_class = np.argsort(p_label, kind="stable")
    class_bounds = np.searchsorted(p_label[by_class], np.arange(C + 1))
    order = np.empty_like(by_class)
    for c in range(C):
        rows = by_class[class_bounds[c]:class_bounds[c + 1]]
        order[class_bounds[c]:class_bounds[c + 1]] = rows[np.argsort(pred.scores[rows])[::-1]]
    s_class, s_video = p_label[order], p_video[order]
    ps, pe = pred.segments[order, 0], pred.segments[order, 1]

    # ground truth sorted by (class, video), file order inside: each prediction's candidates
    # are one contiguous range of it, in the order the official code builds its tIoU array
    gt_key = gt_label * n_videos + gt_video
    gt_sorted = np.argsort(gt_key, kind="stable")
    gt_key_sorted = gt_key[gt_sorted]
    p_key = s_class * n_videos + s_video
    g0 = np.searchsorted(gt_key_sorted, p_key, "left")
    n_cand = np.searchsorted(gt_key_sorted, p_key, "right") - g0

    tp = np.zeros((K, order.size), bool)
    if n_cand.any():
        _match(tp, thresholds, p_key, g0, n_cand, gt_sorted, gt_start, gt_end, ps, pe)

    ap = np.zeros((K, C))
    npos = np.bincount(gt_label, minlength=C)
    for c in range(C):
        lo, hi = class_bounds[c], class_bounds[c + 1]
        if hi > lo:
            ap[:, c] = _interpolated_ap(tp[:, lo:hi], int(npos[c]))
    mean_ap = ap.mean(axis=1)
    return DetectionMAP(float(mean_ap.mean()), mean_ap, ap, list(classes), thresholds)


def _match(tp: np.ndarray, thresholds: np.ndarray, p_key: np.ndarray, g0: np.ndarray, n_cand: np.ndarray,
           gt_sorted: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray, ps: np.ndarray, pe: np.ndarray) -> None:
    """Fill ``tp [K, P]`` (predictions in score order per class) by the official greedy walk.

    Predictions of one (class, video) group compete for the same ground truth in score
    order; groups are independent. So step s processes the s-th prediction of every group
    at once, for all thresholds, against its candidate pairs in walk order.
    """
    K = thresholds.size
    active = np.flatnonzero(n_cand)
    counts = n_cand[active]
    # candidate pairs, grouped by prediction, candidates in ground-truth file order
    pair_pred = np.repeat(active, counts)
    starts = np.cumsum(counts) - counts
    offset = np.arange(pair_pred.size) - np.repeat(starts, counts)
    pair_gt = gt_sorted[np.repeat(g0[active], counts) + offset]
    tiou = _segment_iou(ps[pair_pred], pe[pair_pred], gt_start[pair_gt], gt_end[pair_gt])

    # walk order: decreasing tIoU (NaN first, as argsort()[::-1] puts it); ties that can
    # decide a match (equal values at or above the lowest threshold) take the official
    # argsort of that prediction's own row
    key = np.where(np.isnan(tiou), -np.inf, -tiou)
    walk = np.lexsort((key, pair_pred))
    k_sorted, p_sorted = key[walk], pair_pred[walk]
    tie = (p_sorted[1:] == p_sorted[:-1]) & (k_sorted[1:] == k_sorted[:-1]) & ~(tiou[walk[1:]] < thresholds.min())
    if tie.any():
        pos = dict(zip(active.tolist(), starts.tolist(), strict=True))
        for p in np.unique(p_sorted[1:][tie]).tolist():
            lo = pos[p]
            hi = lo + int(n_cand[p])
            walk[lo:hi] = lo + np.argsort(tiou[lo:hi])[::-1]

    # rank of each active prediction inside its group (score order within the class)
    by_group = np.argsort(p_key[active], kind="stable")
    gk = p_key[active][by_group]
    run_start = np.flatnonzero(np.concatenate([[True], gk[1:] != gk[:-1]]))
    run_id = np.cumsum(np.concatenate([[False], gk[1:] != gk[:-1]]))
    rank = np.empty(active.size, np.int64)
    rank[by_group] = np.arange(active.size) - run_start[run_id]

    # pairs in walk order, regrouped by (rank, prediction): one contiguous block per step
    pred_slot = np.empty(tp.shape[1], np.int64)
    pred_slot[active] = np.arange(active.size)
    pair_rank = rank[pred_slot[pair_pred[walk]]]
    step_order = np.argsort(pair_rank, kind="stable")  # keeps prediction and walk order inside a step
    w = walk[step_order]
    s_pred, s_gt, s_tiou = pair_pred[w], pair_gt[w], tiou[w]
    step_bounds = np.searchsorted(pair_rank[step_order], np.arange(rank.max() + 2))
    locked = np.zeros((K, gt_start.size), bool)
    for s in range(rank.max() + 1):
        lo, hi = step_bounds[s], step_bounds[s + 1]
        preds, gts, t = s_pred[lo:hi], s_gt[lo:hi], s_tiou[lo:hi]
        first = np.flatnonzero(np.concatenate([[True], preds[1:] != preds[:-1]]))
        ok = ~(t[None, :] < thresholds[:, None]) & ~locked[:, gts]  # NaN passes, as in the walk
        m = t.size
        candidate = np.where(ok, np.arange(m), m)
        chosen = np.minimum.reduceat(candidate, first, axis=1)  # [K, predictions of this step]
        hit = chosen < m
        kk, jj = np.nonzero(hit)
        locked[kk, gts[chosen[kk, jj]]] = True
        tp[kk, preds[first[jj]]] = True


@dataclass(frozen=True)
class ProposalRecall:
    """``eval_proposal.py``'s AR@AN curve: ``recall [K, 100]`` per threshold, ``average_recall
    [100]`` (mean over thresholds) at ``proposals_per_video [100]`` average proposals per
    video, ``auc`` (``np.trapz`` of that curve) and ``auc_percent`` (``100 * auc / AN_max``,
    the number the official code prints)."""

    recall: np.ndarray
    average_recall: np.ndarray
    proposals_per_video: np.ndarray
    auc: float
    auc_percent: float
    tiou_thresholds: np.ndarray

    def at(self, n: float) -> float:
        """Average recall at the last curve point with at most ``n`` proposals per video
        (``AR@n``; with ``max_avg_proposals=100``, ``at(1)``, ``at(10)``, ``at(100)`` are BMN's AR@1/10/100)."""
        j = np.flatnonzero(self.proposals_per_video <= n * (1 + 1e-9))
        if j.size == 0:
            raise ValueError(f"n must be >= {self.proposals_per_video[0]} (the first curve point), got {n}")
        return float(self.average_recall[j[-1]])


def average_recall(
    ground_truth: GroundTruthLike,
    proposals: PredictionsLike,
    tiou_thresholds: Sequence[float] | np.ndarray = ACTIVITYNET_TIOU_THRESHOLDS,
    *,
    max_avg_proposals: float | None = None,
    subset: str | None = "validation",
    blocked: Iterable[str] = (),
) -> ProposalRecall:
    """Average recall vs average number of proposals per video, as ``eval_proposal.py``.

    Each video keeps its ``int(n * ratio)`` best-scored proposals, ``ratio = max_avg_proposals
    * videos / proposals`` (all proposals of the file count, those of videos outside the
    ground truth too); ``max_avg_proposals`` defaults to proposals / videos. Curve point j
    (1..100) uses the first ``int(kept * j / 100 * scale)`` of them; a ground-truth instance
    is recalled when one of those has tIoU >= the threshold. Labels are ignored. Where no
    proposal is kept (the official code divides by zero) recall is 0 everywhere.
    """
    thresholds = _thresholds(tiou_thresholds)
    if max_avg_proposals is not None and (isinstance(max_avg_proposals, bool) or not isinstance(
            max_avg_proposals, (int, float)) or not math.isfinite(max_avg_proposals) or max_avg_proposals < 0):
        raise ValueError(f"max_avg_proposals must be a finite number >= 0 or None, got {max_avg_proposals!r}")
    gt, prop = _load(ground_truth, proposals, subset, blocked, labels=False)
    ids, gt_video, gt_start, gt_end, _ = _gt_arrays(gt, None)
    with_gt = np.unique(gt_video)  # videos with annotations, in file order (pandas' unique)
    n_videos = with_gt.size
    n_props = len(prop)
    if not max_avg_proposals:
        max_avg_proposals = float(n_props) / n_videos
    ratio = max_avg_proposals * float(n_videos) / n_props if n_props else 0.0

    # proposals of each ground-truth video, best first (the official argsort on its scores)
    where = {v: i for i, v in enumerate(prop.videos)}
    by_video = np.argsort(prop.video_index, kind="stable")
    bounds = np.searchsorted(prop.video_index[by_video], np.arange(len(prop.videos) + 1))
    kept = np.zeros(len(ids), np.int64)  # columns of the official score matrix (1 for no proposals)
    cols = np.ones(len(ids), np.int64)
    pair_gt, pair_rank, pair_prop = [], [], []
    gt_rows = np.split(np.arange(gt_video.size), np.cumsum(np.bincount(gt_video, minlength=len(ids)))[:-1])
    for v in with_gt.tolist():
        i = where.get(ids[v])
        if i is None or bounds[i + 1] == bounds[i]:
            continue
        rows = by_video[bounds[i]:bounds[i + 1]]
        rows = rows[np.argsort(prop.scores[rows])[::-1]]
        n = min(int(rows.size * ratio), rows.size)
        kept[v] = cols[v] = n
        g = gt_rows[v]
        pair_gt.append(np.repeat(g, n))
        pair_rank.append(np.tile(np.arange(n), g.size))
        pair_prop.append(np.tile(rows[:n], g.size))
    total = int(kept.sum())
    pcn = np.arange(1, 101) / 100.0 * (max_avg_proposals * float(n_videos) / total) if total else \
        np.arange(1, 101) / 100.0
    recall = np.zeros((thresholds.size, pcn.size))
    if total:
        pg, pr, pp = (np.concatenate(x) for x in (pair_gt, pair_rank, pair_prop))
        # wrapper_segment_iou(proposals, gt): target = proposal, candidates = ground truth
        tiou = _segment_iou(prop.segments[pp, 0], prop.segments[pp, 1], gt_start[pg], gt_end[pg])
        # per ground-truth video: the number of its kept proposals each curve point uses
        limit = np.minimum((cols[:, None] * pcn[None, :]).astype(np.int64), cols[:, None])  # [videos, 100]
        big = np.iinfo(np.int64).max
        for k, thr in enumerate(thresholds):
            first = np.full(gt_video.size, big)
            hit = tiou >= thr
            np.minimum.at(first, pg[hit], pr[hit])  # first rank that recalls each instance
            recall[k] = (first[:, None] < limit[gt_video]).sum(axis=0) / float(gt_video.size)
    avg = recall.mean(axis=0)
    per_video = pcn * (float(total) / n_videos) if total else pcn * max_avg_proposals
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    auc = float(trapezoid(avg, per_video))
    auc_percent = float(100.0 * auc / per_video[-1]) if per_video[-1] > 0 else 0.0
    return ProposalRecall(recall, avg, per_video, auc, auc_percent, thresholds)
