"""1-D non-maximum suppression in pure PyTorch (the semantic definition).

Conventions shared by every backend:
- candidates are visited by decreasing score; equal scores keep index order (stable);
- IoU(a, b) = |a ∩ b| / |a ∪ b| on [start, end] intervals, and 0 when the union is empty;
- ``nms_1d`` suppresses a candidate whose IoU with an already kept segment is
  strictly greater than ``iou_threshold`` (torchvision's rule);
- ``batched_nmw_1d`` (non-maximum weighting) merges the candidates of the picked one's
  class whose IoU with it is at least ``iou_threshold`` (TALLFormer's released rule).
"""

from __future__ import annotations

import torch


def segment_iou(segment: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """IoU of one segment [2] with segments [M, 2] -> [M]."""
    inter = (torch.minimum(segment[1], others[:, 1]) - torch.maximum(segment[0], others[:, 0])).clamp(min=0)
    union = (segment[1] - segment[0]) + (others[:, 1] - others[:, 0]) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def nms_1d(segments: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the kept segments, int64, by decreasing score."""
    order = torch.sort(scores, descending=True, stable=True).indices
    candidates = segments[order]
    keep = []
    alive = torch.ones(order.numel(), dtype=torch.bool, device=segments.device)
    for i in range(order.numel()):
        if not alive[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, None)
        alive[rest] &= segment_iou(candidates[i], candidates[rest]) <= iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=segments.device)]


def soft_nms_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    sigma: float,
    iou_threshold: float,
    score_threshold: float,
    method: str,
    max_output: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS (Bodla et al. 2017): decay instead of discard.

    Repeatedly picks the highest current score (ties: lowest index), then decays every
    remaining score by ``exp(-iou**2 / sigma)`` (``gaussian``) or by ``1 - iou`` where
    ``iou > iou_threshold`` (``linear``). Segments whose score falls below
    ``score_threshold`` are dropped; the loop stops after ``max_output`` picks (None: no
    limit). Returns (indices in pick order, their decayed scores).
    """
    current = scores.clone()
    remaining = torch.arange(scores.numel(), device=scores.device)
    picked, picked_scores = [], []
    while remaining.numel() and (max_output is None or len(picked) < max_output):
        best = int(torch.argmax(current[remaining]))  # argmax returns the first maximum
        index = remaining[best]
        if current[index] < score_threshold:
            break
        picked.append(index)
        picked_scores.append(current[index])
        remaining = torch.cat([remaining[:best], remaining[best + 1 :]])
        iou = segment_iou(segments[index], segments[remaining])
        if method == "gaussian":
            decay = torch.exp(-(iou * iou) / sigma)
        else:
            decay = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
        current[remaining] = current[remaining] * decay
        remaining = remaining[current[remaining] >= score_threshold]
    if not picked:
        return torch.zeros(0, dtype=torch.long, device=scores.device), scores.new_zeros(0)
    return torch.stack(picked), torch.stack(picked_scores)


def batched_soft_nms_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor,
    sigma: float,
    iou_threshold: float,
    score_threshold: float,
    method: str,
    max_output: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`soft_nms_1d` on each video ``b`` of ``[B, N, 2]`` / ``[B, N]``, over its rows where ``valid[b]``.

    Returns (indices ``[B, max_output]`` int64 into ``N``, padded with -1; their decayed scores,
    padded with 0; the number of picks ``[B]`` int64).
    """
    batch = segments.shape[0]
    indices = torch.full((batch, max_output), -1, dtype=torch.long, device=segments.device)
    decayed = scores.new_zeros(batch, max_output)
    counts = torch.zeros(batch, dtype=torch.long, device=segments.device)
    for b in range(batch):
        rows = torch.nonzero(valid[b]).squeeze(1)
        picked, picked_scores = soft_nms_1d(segments[b, rows], scores[b, rows], sigma, iou_threshold,
                                            score_threshold, method, max_output)
        k = picked.numel()
        indices[b, :k], decayed[b, :k], counts[b] = rows[picked], picked_scores, k
    return indices, decayed, counts


def _sequential_sum(values: torch.Tensor) -> torch.Tensor:
    """``values[0] + values[1] + ...`` left to right in the dtype (``[M, ...]`` -> ``[...]``, M >= 1).

    ``torch.sum`` leaves its order to the implementation; this order is the one every backend
    follows, so the merged boundaries agree to the bit.
    """
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def batched_nmw_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    max_output: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-maximum weighting per class ``idxs`` (TALLFormer's released ``_multiclass_nmw``).

    ``segments [N, 2]``, ``scores [N]`` (> 0), ``idxs [N]`` integer class ids. Candidates are
    visited by decreasing score (equal scores: lower index first). Each round picks the first
    remaining candidate ``p``; its group is every remaining candidate ``j`` of its class with
    ``IoU(p, j) >= iou_threshold``, ``p`` included with IoU taken as 1 (its group weight is its
    score whatever its length). With weights ``w_j = scores[j] * IoU(p, j)`` in visiting order,
    ``W = w_1 + w_2 + ...`` and the merged segment ``sum_j (w_j / W) * segments[j]``, both sums
    left to right in the dtype. The group leaves the candidates; the loop stops when none is
    left or after ``max_output`` picks (None: no limit).

    Returns (merged segments ``[K, 2]``, int64 indices of the picked candidates ``[K]``), in pick
    order, which is decreasing score.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    remaining = order
    merged, picked = [], []
    while remaining.numel() and (max_output is None or len(picked) < max_output):
        top = remaining[0]
        iou = segment_iou(segments[top], segments[remaining])
        iou[0] = 1.0
        group = (idxs[remaining] == idxs[top]) & (iou >= iou_threshold)
        weights = scores[remaining[group]] * iou[group]
        coefficients = weights / _sequential_sum(weights)
        merged.append(_sequential_sum(coefficients[:, None] * segments[remaining[group]]))
        picked.append(top)
        remaining = remaining[~group]
    if not picked:
        return segments.new_zeros(0, 2), torch.zeros(0, dtype=torch.long, device=segments.device)
    return torch.stack(merged), torch.stack(picked)
