"""Action-segmentation metrics (frame-wise labels per video), exactly as MS-TCN's ``eval.py``
(github yabufarha/ms-tcn), vectorised with NumPy:

- segments are maximal runs of one label; segments of a background class are dropped
  from the segment lists (they still count for accuracy);
- F1@tau: a predicted segment is a true positive when its best-IoU ground-truth segment of
  the same class (first one on ties) has IoU >= tau and is not matched yet; TP, FP and FN
  are summed over videos before precision, recall and F1 (0 when undefined);
- edit score: ``(1 - Levenshtein(pred segments, gt segments) / max(len)) * 100`` per video,
  averaged over videos (100 when both segment lists are empty, where eval.py divides 0 by 0);
- accuracy: correct frames / frames over all videos, times 100.

Labels may be any comparable values (class indices or class names). Use
:func:`segmentation_scores` for a list of videos or :class:`SegmentationMetrics` to
accumulate video by video.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

OVERLAPS = (0.1, 0.25, 0.5)

__all__ = [
    "OVERLAPS",
    "SegmentationMetrics",
    "edit_score",
    "f_score_counts",
    "levenshtein",
    "segmentation_scores",
    "segments",
]


def _labels(x: object, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of frame labels, got shape {arr.shape}")
    return arr


def _overlaps(overlaps: object) -> tuple[float, ...]:
    """The IoU thresholds as floats: a non-empty sequence of finite numbers in (0, 1], distinct
    in percent (they name the ``F1@<percent>`` scores)."""
    if isinstance(overlaps, (str, bytes)) or not isinstance(overlaps, (Sequence, np.ndarray)):
        raise TypeError(f"overlaps must be a sequence of IoU thresholds, got {type(overlaps).__name__}")
    values = []
    for tau in overlaps:
        if isinstance(tau, (bool, np.bool_)) or not isinstance(tau, (int, float, np.integer, np.floating)):
            raise TypeError(f"overlaps must hold numbers, got {tau!r} ({type(tau).__name__}) in {overlaps!r}")
        values.append(float(tau))
    if not values:
        raise ValueError("overlaps must hold at least one IoU threshold, got an empty sequence")
    bad = [tau for tau in values if not (0.0 < tau <= 1.0)]  # NaN fails too
    if bad:
        raise ValueError(f"overlaps must be finite IoU thresholds in (0, 1], got {bad} in {tuple(values)}")
    names = [round(tau * 100) for tau in values]
    if len(set(names)) != len(names):
        raise ValueError(f"overlaps must differ in percent (each names an F1@<percent> score), got {tuple(values)}")
    return tuple(values)


def segments(labels: Sequence | np.ndarray, background: Iterable = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of ``labels [T]`` without the background ones: ``(label, start, end)`` arrays,
    ``end`` exclusive (MS-TCN's ``get_labels_start_end_time``)."""
    arr = _labels(labels, "labels")
    if arr.size == 0:
        return arr[:0], np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(arr[1:] != arr[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [arr.size]]).astype(np.int64)
    names = arr[starts]
    bg = list(background)
    if bg:
        keep = ~np.isin(names, np.asarray(bg))
        names, starts, ends = names[keep], starts[keep], ends[keep]
    return names, starts, ends


def levenshtein(a: Sequence | np.ndarray, b: Sequence | np.ndarray) -> int:
    """Edit distance between two label sequences (unit insert, delete and substitute costs).

    One row of the dynamic programme at a time; within a row the insertion chain
    ``D[i, j] = min(D[i, j-1] + 1, ...)`` is a running minimum of ``E[k] - k`` plus ``j``.
    """
    a, b = np.asarray(a), np.asarray(b)
    n = b.size
    cols = np.arange(n + 1)
    row = cols.astype(np.int64)
    for i in range(1, a.size + 1):
        best = np.empty(n + 1, np.int64)
        best[0] = i
        best[1:] = np.minimum(row[1:] + 1, row[:-1] + (b != a[i - 1]))
        row = np.minimum.accumulate(best - cols) + cols
    return int(row[-1])


def edit_score(pred: Sequence | np.ndarray, gt: Sequence | np.ndarray, background: Iterable = ()) -> float:
    """Segmental edit score of one video in [0, 100]."""
    bg = list(background)
    p, _, _ = segments(pred, bg)
    y, _, _ = segments(gt, bg)
    longest = max(p.size, y.size)
    if longest == 0:
        return 100.0
    return (1.0 - levenshtein(p, y) / longest) * 100.0


def f_score_counts(
    pred: Sequence | np.ndarray,
    gt: Sequence | np.ndarray,
    overlaps: Sequence[float] = OVERLAPS,
    background: Iterable = (),
) -> np.ndarray:
    """``[len(overlaps), 3]`` TP, FP, FN counts of one video (MS-TCN's ``f_score`` per threshold).

    Every predicted segment picks its best-IoU ground-truth segment (IoU with a segment of
    another class counts as 0, a non-overlapping one of the same class is negative, ties go
    to the first); it is a TP at tau when that IoU >= tau and no earlier TP took the same
    ground truth, which is the first valid prediction for each ground-truth segment.
    """
    taus = np.asarray(_overlaps(overlaps), dtype=np.float64)
    bg = list(background)
    p_label, p_start, p_end = segments(pred, bg)
    y_label, y_start, y_end = segments(gt, bg)
    counts = np.zeros((taus.size, 3), np.float64)
    if p_label.size == 0 or y_label.size == 0:
        counts[:, 1] = p_label.size
        counts[:, 2] = y_label.size
        return counts
    inter = np.minimum(p_end[:, None], y_end[None]) - np.maximum(p_start[:, None], y_start[None])
    union = np.maximum(p_end[:, None], y_end[None]) - np.minimum(p_start[:, None], y_start[None])
    iou = inter / union * (p_label[:, None] == y_label[None])
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(p_label.size), best]
    for k, tau in enumerate(taus):
        tp = np.unique(best[best_iou >= tau]).size
        counts[k] = (tp, p_label.size - tp, y_label.size - tp)
    return counts


def _f1(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = 2.0 * precision * recall / (precision + recall)
    return np.nan_to_num(f1) * 100.0


@dataclass
class SegmentationMetrics:
    """Accumulates MS-TCN's metrics video by video.

    Args:
        overlaps: IoU thresholds of the F1 scores (default 0.1, 0.25, 0.5), each finite in
            ``(0, 1]`` and distinct in percent.
        background: labels left out of the segment lists (e.g. ``["background"]`` or a class index).
    """

    overlaps: Sequence[float] = OVERLAPS
    background: Sequence = ()
    counts: np.ndarray = field(init=False)
    edit_total: float = field(init=False, default=0.0)
    correct: int = field(init=False, default=0)
    frames: int = field(init=False, default=0)
    videos: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.overlaps = _overlaps(self.overlaps)
        self.counts = np.zeros((len(self.overlaps), 3))

    def update(self, pred: Sequence | np.ndarray, gt: Sequence | np.ndarray) -> None:
        """Add one video: ``pred`` and ``gt`` are ``[T]`` frame labels of equal length."""
        p, y = _labels(pred, "pred"), _labels(gt, "gt")
        if p.shape != y.shape:
            raise ValueError(f"pred and gt must have the same number of frames, got {p.size} and {y.size}")
        self.counts += f_score_counts(p, y, self.overlaps, self.background)
        self.edit_total += edit_score(p, y, self.background)
        self.correct += int((p == y).sum())
        self.frames += y.size
        self.videos += 1

    def compute(self) -> dict[str, float]:
        """``{"F1@10": .., "F1@25": .., "F1@50": .., "edit": .., "acc": ..}`` in percent."""
        if self.videos == 0:
            raise ValueError("no videos were added (call update first)")
        out = {f"F1@{round(tau * 100):d}": float(f) for tau, f in zip(self.overlaps, _f1(self.counts), strict=True)}
        out["edit"] = self.edit_total / self.videos
        out["acc"] = 100.0 * self.correct / self.frames
        return out


def segmentation_scores(
    preds: Iterable[Sequence | np.ndarray],
    gts: Iterable[Sequence | np.ndarray],
    overlaps: Sequence[float] = OVERLAPS,
    background: Sequence = (),
) -> dict[str, float]:
    """MS-TCN's F1@overlaps, edit and accuracy over a list of videos (see :class:`SegmentationMetrics`)."""
    metrics = SegmentationMetrics(overlaps, background)
    for p, y in zip(preds, gts, strict=True):
        metrics.update(p, y)
    return metrics.compute()
