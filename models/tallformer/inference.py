"""TALLFormer's THUMOS inference, as released (vedatad ``OverlapCropAug``, ``TemporalCrop``,
``SegmentAnchorConverter``, ``multiclass_nms`` with ``typename="nmw"``):

1. :func:`inference_windows`: windows of ``window_frames`` frames every
   ``int(window_frames * (1 - test_overlap))`` frames from frame 0, the last one ending at
   the video's end (it may be shorter; the model sees it zero-padded).
2. :func:`window_detections`: per window and level, the ``nms_pre`` anchors with the best
   class score, decoded and clamped to ``[0, window length]``, shifted to video frames;
   sigmoid scores of every class.
3. :func:`merge_detections`: all windows of a video together, one candidate per (anchor,
   class) with score > ``score_threshold``, non-maximum weighting at IoU ``nmw_iou`` keeping
   at most ``max_per_video``.

Non-maximum weighting is the op :func:`fastlocal.batched_nmw_1d` (:func:`nmw_hook`); any other merge
with the protocol :data:`NMW` can be passed as ``nmw=`` to :func:`merge_detections`, e.g.
:func:`nms_hook` (per-class greedy NMS, the released ``multiclass_nms`` with ``typename="nms"``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import fastlocal

from .anchors import decode, level_anchors
from .config import TALLFormerConfig

#: ``nmw(segments [n, 2], scores [n], labels [n], iou_threshold, max_output) -> (segments [k, 2],
#: scores [k], labels [k])``: greedy in decreasing score; each kept segment is the average of the
#: same-label segments with IoU >= iou_threshold (itself included), weighted score x IoU, keeps
#: its own score, and removes them.
NMW = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def nmw_hook(segments: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
             max_output: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The default :data:`NMW`: :func:`fastlocal.batched_nmw_1d` (classes apart, picks by decreasing score)."""
    merged, picked = fastlocal.batched_nmw_1d(segments, scores, labels, iou_threshold, max_output=max_output)
    return merged, scores[picked], labels[picked]


def nms_hook(segments: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
             max_output: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An :data:`NMW` that suppresses instead of weighting: per-class greedy NMS
    (:func:`fastlocal.batched_nms_1d`)."""
    keep = fastlocal.batched_nms_1d(segments, scores, labels, iou_threshold)[:max_output]
    return segments[keep], scores[keep], labels[keep]


def inference_windows(num_frames: int, config: TALLFormerConfig) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` frame ranges of the test windows of a video of ``num_frames`` frames."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    stride = int(config.window_frames * (1 - config.test_overlap))
    windows, start = [], 0
    while True:
        end = min(start + config.window_frames, num_frames)
        windows.append((start, end))
        if end == num_frames:
            return windows
        start += stride


def window_detections(cls_scores: list[torch.Tensor], seg_preds: list[torch.Tensor], config: TALLFormerConfig, *,
                      length: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates of one window.

    Args:
        cls_scores: per level ``[A * num_classes, T_l]`` logits of this window (one batch item).
        seg_preds: per level ``[A * 2, T_l]`` deltas.
        length: the window's real length in frames (decoded segments are clamped to it).
        shift: the window's first frame in the video.
    Returns:
        ``segments [n, 2]`` in video frames and ``scores [n, num_classes]`` (sigmoid), at most
        ``nms_pre`` anchors per level.
    """
    C = config.num_classes
    if len(cls_scores) != config.num_levels or len(seg_preds) != config.num_levels:
        raise ValueError(f"cls_scores and seg_preds must hold {config.num_levels} levels each, got "
                         f"{len(cls_scores)} and {len(seg_preds)}")
    anchors = level_anchors(config, [s.shape[-1] for s in cls_scores], device=cls_scores[0].device)
    segments, scores = [], []
    for logits, deltas, level in zip(cls_scores, seg_preds, anchors, strict=True):
        prob = logits.detach().t().reshape(-1, C).sigmoid()
        delta = deltas.detach().t().reshape(-1, 2)
        if prob.shape[0] > config.nms_pre:
            keep = prob.max(dim=1).values.topk(config.nms_pre).indices
            prob, delta, level = prob[keep], delta[keep], level[keep]
        segments.append(decode(level.to(delta.dtype), delta, max_t=length) + shift)
        scores.append(prob)
    return torch.cat(segments), torch.cat(scores)


def merge_detections(segments: list[torch.Tensor], scores: list[torch.Tensor], config: TALLFormerConfig, *,
                     nmw: NMW = nmw_hook) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A video's detections from its windows' candidates (:func:`window_detections`).

    Returns ``segments [k, 2]`` (video frames), ``scores [k]``, ``labels [k]`` with
    ``k <= max_per_video``, in decreasing score.
    """
    seg = torch.cat(segments)
    prob = torch.cat(scores)
    keep = prob > config.score_threshold  # [n, C]: one candidate per (anchor, class)
    rows, labels = keep.nonzero(as_tuple=True)
    return nmw(seg[rows], prob[rows, labels], labels, config.nmw_iou, config.max_per_video)
