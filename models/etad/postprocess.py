"""ETAD's post-processing of one video, as released (``lib/dataset/anet_1_3/post_det.py``,
``lib/utils/misc.py``): boundary masks, Gaussian soft-NMS, class assignment.

1. :func:`boundary_mask` of the TEM start and end probabilities; the first snippet is
   always a start and the last always an end. A proposal is kept when the snippet of its
   start (``floor(start * T)``, clamped) is in the start mask and that of its end in the
   end mask (:func:`select_proposals`).
2. Score = iou_cls * iou_reg (of the stage average,
   :func:`~fastlocal.models.etad.model.average_stages`); Gaussian soft-NMS
   (score *= exp(-IoU^2 / sigma), sigma 0.35) through :func:`fastlocal.soft_nms_1d`, up to
   ``max_proposals`` (100) kept (:func:`soft_nms_proposals`).
3. Each kept proposal is paired with the ``topk`` best classes of a video-level classifier
   (:func:`read_classifier_scores` reads the released ``{"results": {video: [scores]},
   "class": [names]}`` file; :func:`top_classes`), score = proposal score * class score,
   segment clipped to [0, 1] and times the duration (:func:`detections`).

Differences from the released loop, each documented where it happens: soft-NMS runs in
float64 on :func:`fastlocal.soft_nms_1d` (ties: the lower proposal index first; the
released loop takes the first of a pandas quicksort, which is not stable); the released
loop never emits the last remaining proposal (``while len > 1``), which ``drop_last=True``
reproduces; proposals whose refined end precedes their start are dropped before soft-NMS
(``soft_nms_1d`` rejects them; the released loop keeps them with a signed IoU); both ends
of a segment are clipped to [0, 1] (released: the start at 0, the end at 1 only).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

import fastlocal


def boundary_mask(prob: torch.Tensor) -> torch.Tensor:
    """Snippets ``[T]`` (bool) whose probability ``prob [T]`` is above half the maximum, or a
    strict local peak (neighbours outside the sequence count as 0): released ``boundary_choose``."""
    if prob.ndim != 1 or prob.numel() == 0:
        raise ValueError(f"prob must have shape [T] with T >= 1, got {tuple(prob.shape)}")
    padded = torch.cat((prob.new_zeros(1), prob, prob.new_zeros(1)))
    peak = (prob > padded[:-2]) & (prob > padded[2:])
    return (prob > 0.5 * prob.max()) | peak


def select_proposals(anchors: torch.Tensor, start_prob: torch.Tensor, end_prob: torch.Tensor) -> torch.Tensor:
    """Indices (int64, ascending) of the proposals ``[K, 2]`` in [0, 1] whose start snippet is in
    the start mask and end snippet in the end mask (T = ``start_prob.numel()``; the first
    snippet is always a start, the last always an end)."""
    if anchors.ndim != 2 or anchors.shape[1] != 2:
        raise ValueError(f"anchors must have shape [K, 2], got {tuple(anchors.shape)}")
    if start_prob.shape != end_prob.shape:
        raise ValueError(f"start_prob and end_prob must have the same shape [T], got {tuple(start_prob.shape)} "
                         f"and {tuple(end_prob.shape)}")
    start_mask, end_mask = boundary_mask(start_prob), boundary_mask(end_prob)
    start_mask[0] = True
    end_mask[-1] = True
    tscale = start_prob.numel()
    # released: (anchor * T).astype(int) then clip; truncation and floor agree after the clip at 0
    snippet = (anchors * tscale).floor().clamp(0, tscale - 1).long()
    return torch.nonzero(start_mask[snippet[:, 0]] & end_mask[snippet[:, 1]]).view(-1)


def soft_nms_proposals(segments: torch.Tensor, scores: torch.Tensor, *, sigma: float = 0.35,
                       max_proposals: int = 100, drop_last: bool = False,
                       backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS of proposals ``[M, 2]`` with ``scores [M]`` -> (indices into them, in
    pick order ``[k]``, decayed scores ``[k]`` float64), k <= ``max_proposals``.

    The released loop decays where IoU > 0 (``iou_threshold=0``), which is every proposal
    (exp(0) = 1); it has no score threshold (scores are >= 0: ``score_threshold=0``).
    ``drop_last``: reproduce the released ``while len(scores) > 1``, which never emits the
    last remaining proposal (with M <= ``max_proposals`` it emits M - 1; with M = 1 the
    released code skips soft-NMS and keeps that one).
    """
    if segments.ndim != 2 or segments.shape[1] != 2 or scores.shape != segments.shape[:1]:
        raise ValueError(f"segments must be [M, 2] and scores [M], got {tuple(segments.shape)} and "
                         f"{tuple(scores.shape)}")
    if isinstance(max_proposals, bool) or not isinstance(max_proposals, int) or max_proposals < 1:
        raise ValueError(f"max_proposals must be an int >= 1, got {max_proposals!r}")
    count = segments.shape[0]
    keep = min(max_proposals, count - 1) if drop_last and count > 1 else min(max_proposals, count)
    # the op stops after max_output picks (it needs >= 1; with no proposal it returns nothing anyway)
    return fastlocal.soft_nms_1d(segments.double(), scores.double(), sigma=sigma, iou_threshold=0.0,
                                 score_threshold=0.0, method="gaussian", max_output=max(keep, 1), backend=backend)


def read_classifier_scores(path: str | os.PathLike) -> tuple[dict[str, list[float]], list[str]]:
    """A video-level classifier file ``{"results": {video: [C scores]}, "class": [C names]}``
    (released ``cuhk_val_simp_7.json``) -> (scores per video, class names).
    ``ValueError`` naming the file (and the video) when it is malformed."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not isinstance(
            data.get("class"), list):
        raise ValueError(f"{path}: expected {{\"results\": {{video: [scores]}}, \"class\": [names]}}")
    names = [str(name) for name in data["class"]]
    for video, scores in data["results"].items():
        if not isinstance(scores, list) or len(scores) != len(names) or not all(
                isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) for s in scores):
            raise ValueError(f"{path}: video {video!r} must have {len(names)} finite scores (one per class)")
    return data["results"], names


def top_classes(scores: Sequence[float], names: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` best (class name, score) pairs, best first (ties: the earlier class)."""
    if len(scores) != len(names):
        raise ValueError(f"scores has {len(scores)} entries but names has {len(names)}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(names):
        raise ValueError(f"k must be an int in [1, {len(names)}], got {k!r}")
    order = sorted(range(len(names)), key=lambda i: -scores[i])  # sorted() is stable
    return [(names[i], float(scores[i])) for i in order[:k]]


def detections(segments: torch.Tensor, scores: torch.Tensor, classes: Sequence[tuple[str, float]],
               duration: float) -> list[dict[str, Any]]:
    """Submission entries ``{"label", "score", "segment"}`` of proposals ``[k, 2]`` in [0, 1] with
    ``scores [k]``, each paired with every (label, class score) of ``classes`` (proposal-major
    order, as released); score = proposal score * class score; segment in seconds."""
    if not (isinstance(duration, int | float) and math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a finite number > 0 (seconds), got {duration!r}")
    clipped = segments.double().clamp(0.0, 1.0) * duration
    out = []
    for (start, end), score in zip(clipped.tolist(), scores.double().tolist(), strict=True):
        for label, class_score in classes:
            out.append({"label": label, "score": score * class_score, "segment": [start, end]})
    return out


def postprocess_video(anchors: torch.Tensor, iou: torch.Tensor, tem: torch.Tensor, *, duration: float,
                      classes: Sequence[tuple[str, float]], sigma: float = 0.35, max_proposals: int = 100,
                      drop_last: bool = False, backend: str | None = None) -> list[dict[str, Any]]:
    """One video's detections from the model's stage-averaged output.

    Args:
        anchors: ``[K, 2]`` refined proposals in [0, 1]; ``iou``: ``[K, 2]`` (iou_cls, iou_reg);
            ``tem``: ``[2, T]`` start / end probabilities.
        duration: the video's length in seconds; ``classes``: its (label, score) pairs
            (:func:`top_classes`).
    Returns:
        ``max_proposals * len(classes)`` entries at most, in the ActivityNet submission layout.
    """
    if tem.ndim != 2 or tem.shape[0] != 2:
        raise ValueError(f"tem must have shape [2, T], got {tuple(tem.shape)}")
    if iou.shape != anchors.shape:
        raise ValueError(f"iou must have the shape of anchors {tuple(anchors.shape)}, got {tuple(iou.shape)}")
    anchors, iou, tem = anchors.detach().cpu(), iou.detach().cpu(), tem.detach().cpu()
    index = select_proposals(anchors, tem[0], tem[1])
    index = index[anchors[index, 1] >= anchors[index, 0]]  # soft_nms_1d needs start <= end
    segments, scores = anchors[index], (iou[index, 0] * iou[index, 1])
    picked, decayed = soft_nms_proposals(segments, scores, sigma=sigma, max_proposals=max_proposals,
                                         drop_last=drop_last, backend=backend)
    return detections(segments[picked], decayed, classes, duration)
