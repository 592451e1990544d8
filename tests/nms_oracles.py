"""Plain-Python oracles and inputs shared by tests/test_nms_1d.py and tests/test_soft_nms_1d.py.

Written from the documented rules (docs/design.md, "nms_1d, batched_nms_1d, soft_nms_1d"):
candidates by decreasing score, equal scores by lower index first; IoU of ``[start, end]``
intervals, 0 when the union is empty.
"""

from __future__ import annotations

import math

import torch


def brute_iou(a: list[float], b: list[float]) -> float:
    """IoU of two [start, end] intervals; 0 when the union is empty (two points)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def brute_soft_nms(segments, scores, sigma, iou_threshold, score_threshold, method, max_output=None):
    """Soft-NMS loop: drop scores < score_threshold, pick the max (lowest index on ties), decay the rest;
    at most ``max_output`` picks."""
    current = dict(enumerate(scores))
    picked, picked_scores = [], []
    while max_output is None or len(picked) < max_output:
        current = {i: s for i, s in current.items() if s >= score_threshold}
        if not current:
            break
        best = min(current, key=lambda i: (-current[i], i))
        picked.append(best)
        picked_scores.append(current.pop(best))
        for i in current:
            overlap = brute_iou(segments[best], segments[i])
            if method == "gaussian":
                current[i] *= math.exp(-(overlap * overlap) / sigma)
            elif overlap > iou_threshold:
                current[i] *= 1.0 - overlap
    return picked, picked_scores


def random_detections(n: int, seed: int, *, dtype=torch.float64, span: float = 50.0):
    """Random segments with ties in score, zero-length and duplicated segments."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(n, generator=g, dtype=torch.float64) * span
    length = torch.rand(n, generator=g, dtype=torch.float64) * 10
    length[torch.rand(n, generator=g) < 0.1] = 0.0  # zero-length segments
    segments = torch.stack([start, start + length], dim=1)
    if n > 4:
        dup = torch.randint(0, n, (n // 5,), generator=g)
        segments[torch.randint(0, n, (n // 5,), generator=g)] = segments[dup]  # identical segments
    # Scores on a coarse grid: many exact ties, so the stable order is exercised.
    scores = torch.randint(0, max(2, n // 3), (n,), generator=g).to(torch.float64) / 7
    return segments.to(dtype), scores.to(dtype)
