"""Video classification metrics: top-k accuracy per clip and per video, and the confusion matrix.

**Video level** as VidTr's released evaluation (amazon-science/gluonmm
``video_action_recognition.py``): the softmax of every view (clip x crop) of a video is
averaged, then ranked. **Clip level** ranks every view on its own.

Rules, chosen so a score is a function of the numbers only (``torch.topk`` breaks ties in an
unspecified order):

- **Ties count against the prediction.** The true class is in the top k when fewer than k other
  classes score *at least as high* as it. Scores that are all equal give 0% top-1, never
  100%, and a result never depends on the order of the classes.
- **k larger than the number of classes C is clamped to C**, as timm's ``accuracy``, which the
  released code calls, does: top-5 over 3 classes is 100%.
- The predicted class (confusion matrix, :meth:`ClassificationMetrics.video_results`) is the
  arg-max, the lowest class index on ties. With ties, top-1 accuracy can therefore be lower than
  the confusion matrix's diagonal share.
- Accuracies are percentages. NaN scores, labels outside ``[0, C)`` and mismatched shapes raise
  ``ValueError``.

Use the functions for whole arrays, or :class:`ClassificationMetrics` to accumulate batch by batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ClassificationMetrics",
    "average_views",
    "confusion_matrix",
    "softmax",
    "topk_accuracy",
    "topk_correct",
]


def _array(x: object, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _scores(scores: object, name: str = "scores") -> np.ndarray:
    s = _array(scores, name)
    if s.ndim != 2 or s.shape[1] < 1 or s.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real [N, C] array with C >= 1 classes, got shape {s.shape} dtype {s.dtype}")
    if s.dtype.kind == "f" and np.isnan(s).any():
        raise ValueError(f"{name} holds NaN (row {int(np.isnan(s).any(1).argmax())})")
    return s


def _labels(labels: object, n: int, num_classes: int, name: str = "labels") -> np.ndarray:
    y = _array(labels, name)
    if y.shape != (n,) or (n and y.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be {n} integer class indices (one per row of scores), got shape {y.shape} "
                         f"dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must be in [0, {num_classes}) (the classes of scores), got values in "
                         f"[{y.min()}, {y.max()}]")
    return y


def _ks(topk: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(topk) if not isinstance(topk, int) else (topk,)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in ks):
        raise ValueError(f"topk must be ints >= 1, got {topk!r}")
    return tuple(int(k) for k in ks)


def _ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[N]`` number of other classes scoring at least as high as the true class."""
    true = scores[np.arange(labels.size), labels]
    return (scores >= true[:, None]).sum(axis=1) - 1


def topk_correct(scores: object, labels: object, k: int) -> np.ndarray:
    """``bool [N]``: is the true class of each row of ``scores [N, C]`` among its top ``k`` (ties
    against; k clamped to C)?"""
    s = _scores(scores)
    (k,) = _ks((k,))
    return _ranks(s, _labels(labels, s.shape[0], s.shape[1])) < min(k, s.shape[1])


def topk_accuracy(scores: object, labels: object, topk: Sequence[int] = (1, 5)) -> dict[int, float]:
    """``{k: accuracy in percent}`` of ``scores [N, C]`` (N >= 1) against ``labels [N]``."""
    s = _scores(scores)
    ks = _ks(topk)
    if s.shape[0] == 0:
        raise ValueError("scores must hold at least one row")
    ranks = _ranks(s, _labels(labels, s.shape[0], s.shape[1]))
    return {k: 100.0 * float((ranks < min(k, s.shape[1])).mean()) for k in ks}


def softmax(scores: object) -> np.ndarray:
    """Softmax over the last axis in float64 of ``scores [N, C]`` (logits)."""
    s = _scores(scores).astype(np.float64)
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def average_views(scores: object, video_ids: Sequence[Hashable], from_logits: bool = True
                  ) -> tuple[list[Hashable], np.ndarray]:
    """Average the views of each video: ``scores [N, C]`` with ``video_ids [N]`` -> ``(ids [V],
    mean [V, C] float64)``, videos in order of first appearance. With ``from_logits`` each row is
    softmaxed first (the released evaluation); otherwise the scores are averaged as given."""
    s = softmax(scores) if from_logits else _scores(scores).astype(np.float64)
    ids = list(video_ids)
    if len(ids) != s.shape[0]:
        raise ValueError(f"video_ids must hold one id per row of scores ({s.shape[0]}), got {len(ids)}")
    index: dict[Hashable, int] = {}
    rows = np.fromiter((index.setdefault(v, len(index)) for v in ids), np.int64, len(ids))
    sums = np.zeros((len(index), s.shape[1]))
    np.add.at(sums, rows, s)
    return list(index), sums / np.bincount(rows, minlength=len(index))[:, None]


def confusion_matrix(pred: object, labels: object, num_classes: int) -> np.ndarray:
    """``int64 [C, C]`` counts: row = true class, column = predicted class, from ``pred [N]`` and
    ``labels [N]`` class indices in ``[0, num_classes)``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    p = _array(pred, "pred")
    if p.ndim != 1:
        raise ValueError(f"pred must be a 1-D array of class indices, got shape {p.shape}")
    y = _labels(labels, p.shape[0], num_classes)
    p = _labels(p, y.size, num_classes, "pred")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class ClassificationMetrics:
    """Accumulates clip-level and video-level top-k accuracy and confusion matrices.

    Args:
        num_classes: C, the width of the scores.
        topk: the k of the accuracies (default 1 and 5; each clamped to C).
        from_logits: softmax each view's scores before averaging them per video (the released
            evaluation); False averages the scores as given (probabilities).

    ``update(scores, labels, video_ids)`` adds a batch of views; ``compute()`` gives
    ``{"clip_top1": .., "clip_top5": .., "clips": n}`` plus ``"video_top<k>"`` and ``"videos"``
    when ids were given.
    """

    num_classes: int
    topk: Sequence[int] = (1, 5)
    from_logits: bool = True
    clips: int = field(init=False, default=0)
    _clip_correct: np.ndarray = field(init=False, repr=False)
    _clip_confusion: np.ndarray = field(init=False, repr=False)
    _index: dict = field(init=False, repr=False, default_factory=dict)
    _sums: np.ndarray = field(init=False, repr=False)
    _views: np.ndarray = field(init=False, repr=False)
    _video_labels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {self.num_classes!r}")
        self.topk = _ks(self.topk)
        self._clip_correct = np.zeros(len(self.topk), np.int64)
        self._clip_confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        self._sums = np.zeros((0, self.num_classes))
        self._views = np.zeros(0, np.int64)
        self._video_labels = np.zeros(0, np.int64)

    def update(self, scores: object, labels: object, video_ids: Sequence[Hashable] | None = None) -> None:
        """Add views: ``scores [N, C]`` (logits, or probabilities with ``from_logits=False``),
        ``labels [N]``, and optionally ``video_ids [N]`` (any hashable: names or dataset indices;
        the views of one video may come in several calls and must share its label)."""
        s = _scores(scores)
        if s.shape[1] != self.num_classes:
            raise ValueError(f"scores must have num_classes={self.num_classes} columns, got {s.shape[1]}")
        y = _labels(labels, s.shape[0], self.num_classes)
        if video_ids is None:
            if self._index:
                raise ValueError("video_ids must be given in every update once one update gave them")
        else:
            if self.clips and not self._index:
                raise ValueError("video_ids were not given in earlier updates; give them in all or none")
            self._add_views(s, y, list(video_ids))
        ranks = _ranks(s, y)
        self._clip_correct += [int((ranks < min(k, self.num_classes)).sum()) for k in self.topk]
        self._clip_confusion += confusion_matrix(s.argmax(axis=1), y, self.num_classes)
        self.clips += s.shape[0]

    def _add_views(self, s: np.ndarray, y: np.ndarray, ids: list[Hashable]) -> None:
        if len(ids) != s.shape[0]:
            raise ValueError(f"video_ids must hold one id per row of scores ({s.shape[0]}), got {len(ids)}")
        fresh: dict[Hashable, int] = {}  # new videos, added only once the batch is checked
        known = len(self._index)
        rows = np.fromiter((self._index[v] if v in self._index else fresh.setdefault(v, known + len(fresh))
                            for v in ids), np.int64, len(ids))
        video_labels = np.concatenate([self._video_labels, np.full(len(fresh), -1, np.int64)])
        pairs = np.unique(np.stack([rows, y], axis=1), axis=0)  # the (video row, label) pairs of this batch
        before = video_labels[pairs[:, 0]]
        twice = np.bincount(pairs[:, 0])[pairs[:, 0]] > 1  # one video, two labels in this batch
        clash = np.flatnonzero(((before >= 0) & (before != pairs[:, 1])) | twice)
        if clash.size:
            row = int(pairs[clash[0], 0])
            seen = sorted(({int(before[clash[0]])} - {-1}) | set(pairs[pairs[:, 0] == row, 1].tolist()))
            video = ids[int(np.flatnonzero(rows == row)[0])]
            raise ValueError(f"the views of video {video!r} have different labels {seen}")
        self._index.update(fresh)
        video_labels[pairs[:, 0]] = pairs[:, 1]
        self._video_labels = video_labels
        self._sums = np.concatenate([self._sums, np.zeros((len(fresh), self.num_classes))])
        np.add.at(self._sums, rows, softmax(s) if self.from_logits else s.astype(np.float64))
        self._views = np.bincount(rows, minlength=len(self._index)) + np.pad(self._views, (0, len(fresh)))

    @property
    def videos(self) -> int:
        """Videos seen so far (0 without video ids)."""
        return len(self._index)

    def video_scores(self) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
        """``(ids [V], mean scores [V, C] float64, labels [V])`` of the videos seen, in order of first view."""
        if not self._index:
            raise ValueError("no video ids were given (pass video_ids to update)")
        return list(self._index), self._sums / self._views[:, None], self._video_labels.copy()

    def compute(self) -> dict[str, float]:
        """Accuracies in percent (``clip_top<k>``, ``video_top<k>``) and the counts ``clips``, ``videos``."""
        if self.clips == 0:
            raise ValueError("no views were added (call update first)")
        out: dict[str, float] = {f"clip_top{k}": 100.0 * float(c) / self.clips
                                 for k, c in zip(self.topk, self._clip_correct, strict=True)}
        out["clips"] = int(self.clips)
        if self._index:
            _, mean, labels = self.video_scores()
            ranks = _ranks(mean, labels)
            out.update({f"video_top{k}": 100.0 * float((ranks < min(k, self.num_classes)).mean()) for k in self.topk})
            out["videos"] = int(self.videos)
        return out

    def confusion(self, level: str = "video") -> np.ndarray:
        """``int64 [C, C]`` (row = true class, column = arg-max prediction) per ``"video"`` or ``"clip"``."""
        if level == "clip":
            return self._clip_confusion.copy()
        if level != "video":
            raise ValueError(f"level must be 'video' or 'clip', got {level!r}")
        _, mean, labels = self.video_scores()
        return confusion_matrix(mean.argmax(axis=1), labels, self.num_classes)

    def video_results(self) -> list[dict]:
        """One JSON-ready dict per video: ``video`` id, ``label``, ``pred`` (arg-max), ``top`` the
        max(topk) best classes (clamped to C) and their mean ``scores``, and ``views``."""
        ids, mean, labels = self.video_scores()
        k = min(max(self.topk), self.num_classes)
        top = np.argsort(-mean, axis=1, kind="stable")[:, :k]  # stable: lowest index first on ties
        return [
            {"video": v, "label": int(labels[i]), "pred": int(top[i, 0]), "top": top[i].tolist(),
             "scores": mean[i, top[i]].tolist(), "views": int(self._views[i])}
            for i, v in enumerate(ids)
        ]
