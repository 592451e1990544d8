"""TALLFormer's anchors, segment coder and max-IoU assignment on THUMOS, as released (vedatad:
``bridge/meshgrids`` ``SegmentAnchorMeshGrid`` / ``SegmentBaseAnchor``,
``misc/segment/coders/delta_segment_coder.py``, ``misc/segment/assigners/max_iou_assigner.py``,
``criteria/segment_anchor_criterion.py``).

Everything is in frames of the window. Level l (stride ``s = 8 * 2**l``) has, at position t,
``A = scales_per_octave`` anchors ``[t*s - len/2, t*s + len/2]`` with
``len = s * octave_base_scale * 2**(a / A)``; anchors are laid out position-major
(index ``t * A + a``), the order the head's ``[B, A * C, T]`` channels flatten to.
The released training pads every window to its full length, so every anchor is valid
(``allowed_border = -1``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .config import TALLFormerConfig

_IOU_EPS = 1e-6  # released segment_overlaps: union clamped below at 1e-6
_MAX_LOG_SCALE = 1.0  # released delta2segment clamps the log length change at 1 (x e at most)


def level_anchors(config: TALLFormerConfig, sizes: list[int] | tuple[int, ...],
                  device: torch.device | str | None = None) -> list[torch.Tensor]:
    """Anchors of each level: ``[sizes[l] * A, 2]`` float32 (start, end) in frames.

    Args:
        config: strides, ``octave_base_scale`` and ``scales_per_octave``.
        sizes: positions per level (the head's output lengths), one per level.
    """
    if len(sizes) != config.num_levels:
        raise ValueError(f"sizes must give {config.num_levels} level lengths, got {list(sizes)}")
    A = config.scales_per_octave
    scales = config.octave_base_scale * 2.0 ** (torch.arange(A, dtype=torch.float32) / A)
    out = []
    for size, stride in zip(sizes, config.strides, strict=True):
        half = 0.5 * stride * scales.to(device)  # base size = stride
        centres = torch.arange(size, dtype=torch.float32, device=device) * stride
        out.append(torch.stack([centres[:, None] - half, centres[:, None] + half], dim=-1).reshape(-1, 2))
    return out


def segment_overlaps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``[N, M]`` of segments ``a [N, 2]`` and ``b [M, 2]`` (union clamped at 1e-6)."""
    inter = (torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return inter / union.clamp(min=_IOU_EPS)


def decode(anchors: torch.Tensor, deltas: torch.Tensor, max_t: float | None = None) -> torch.Tensor:
    """Segments ``[N, 2]`` from ``anchors [N, 2]`` and ``deltas [N, 2]`` = (d_centre, d_log_length)
    (released ``delta2segment``, means 0, stds 1): centre + length * d_centre, length *
    exp(min(d_log_length, 1)); clamped to ``[0, max_t]`` when ``max_t`` is given."""
    centre = (anchors[:, 0] + anchors[:, 1]) * 0.5
    length = anchors[:, 1] - anchors[:, 0]
    new_length = length * deltas[:, 1].clamp(max=_MAX_LOG_SCALE).exp()
    new_centre = centre + length * deltas[:, 0]
    start, end = new_centre - 0.5 * new_length, new_centre + 0.5 * new_length
    if max_t is not None:
        start, end = start.clamp(0, max_t), end.clamp(0, max_t)
    return torch.stack([start, end], dim=-1)


def assign(anchors: torch.Tensor, gt: torch.Tensor, config: TALLFormerConfig) -> torch.Tensor:
    """Max-IoU assignment of ``anchors [N, 2]`` to ground truth ``gt [K, 2]``.

    Returns ``[N]`` int64: 0 = negative, k + 1 = positive for ground truth k, -1 = ignored.
    Order as released: all ignored; max IoU in ``[0, neg_iou)`` -> negative; max IoU >=
    ``pos_iou`` -> its best ground truth; then every ground truth k whose best IoU is >=
    ``min_pos_iou`` takes *all* anchors reaching that IoU (later ground truths win ties). With
    the released ``min_pos_iou = 0`` a ground truth overlapping no anchor therefore takes
    every anchor of IoU 0; windows cropped to hold their segments never hit it. No ground
    truth: all negative.
    """
    N = anchors.shape[0]
    if gt.shape[0] == 0:
        return torch.zeros(N, dtype=torch.long, device=anchors.device)
    overlaps = segment_overlaps(gt.to(anchors.dtype), anchors)  # [K, N]
    best, best_gt = overlaps.max(dim=0)
    out = torch.full((N,), -1, dtype=torch.long, device=anchors.device)
    out[(best >= 0) & (best < config.neg_iou)] = 0
    positive = best >= config.pos_iou
    out[positive] = best_gt[positive] + 1
    gt_best = overlaps.max(dim=1).values
    for k in range(gt.shape[0]):
        if gt_best[k] >= config.min_pos_iou:
            out[overlaps[k] == gt_best[k]] = k + 1
    return out


class Targets(NamedTuple):
    """Training targets of a batch over the concatenated anchors of all levels (``N`` in all):
    ``labels [B, N]`` (class, or ``num_classes`` for background / ignored), ``label_weights
    [B, N]`` (1 for positives and negatives, 0 for ignored), ``segments [B, N, 2]`` (the
    assigned ground truth of positives, zeros elsewhere), ``positive [B, N]`` bool and
    ``num_positive`` = sum over videos of max(positives, 1), the losses' divisor."""

    labels: torch.Tensor
    label_weights: torch.Tensor
    segments: torch.Tensor
    positive: torch.Tensor
    num_positive: int


def make_targets(anchors: torch.Tensor, gt_segments: list[torch.Tensor], gt_labels: list[torch.Tensor],
                 config: TALLFormerConfig) -> Targets:
    """Assign every video's ground truth to the anchors (released ``get_targets``).

    Args:
        anchors: ``[N, 2]`` all levels concatenated (:func:`level_anchors`).
        gt_segments: per video ``[K_b, 2]`` (start, end) in frames of the window.
        gt_labels: per video ``[K_b]`` int class indices in ``[0, num_classes)``.
    """
    if len(gt_segments) != len(gt_labels):
        raise ValueError(f"gt_segments and gt_labels must list the same videos, got {len(gt_segments)} and "
                         f"{len(gt_labels)}")
    C = config.num_classes
    labels, weights, segments, positives = [], [], [], []
    num_positive = 0
    for b, (gt, lab) in enumerate(zip(gt_segments, gt_labels, strict=True)):
        if gt.dim() != 2 or gt.shape[1] != 2 or lab.shape != (gt.shape[0],):
            raise ValueError(f"video {b}: gt_segments must be [K, 2] and gt_labels [K], got {tuple(gt.shape)} and "
                             f"{tuple(lab.shape)}")
        if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= C):
            raise ValueError(f"video {b}: gt_labels must be in [0, {C}), got {lab.tolist()}")
        gt = gt.to(anchors)
        index = assign(anchors, gt, config)
        pos = index > 0
        label = torch.full_like(index, C)
        label[pos] = lab.to(index.device)[index[pos] - 1]
        target = torch.zeros_like(anchors)
        target[pos] = gt[index[pos] - 1]
        labels.append(label)
        weights.append((index >= 0).to(anchors.dtype))
        segments.append(target)
        positives.append(pos)
        num_positive += max(int(pos.sum()), 1)
    return Targets(torch.stack(labels), torch.stack(weights), torch.stack(segments), torch.stack(positives),
                   num_positive)
