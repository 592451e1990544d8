"""ETAD's candidate proposals, detector proposal sampling (DPS), ground-truth matching and
regression targets (released ``lib/dataset/anet_1_3/dataset.py``, ``lib/utils/sampler.py``,
``lib/loss/model_loss.py``).

Proposals are ``(start, end)`` in units of the video (or window) length, ``[0, 1]``.
Candidate ``(d, j)`` (duration index d, start snippet j, j + d < T) is
``[j / T, (j + d + 1) / T]``; candidates are listed row-major over (d, j), the order of the
released ``anchors[valid_mask]``. At T = 128 there are 128 * 129 / 2 = 8,256 of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

STRATEGIES = ("random", "grid", "block")


def _check_scale(tscale: int, max_duration: int | None) -> int:
    if isinstance(tscale, bool) or not isinstance(tscale, int) or tscale < 1:
        raise ValueError(f"tscale must be an int >= 1, got {tscale!r}")
    if max_duration is None:
        return tscale
    if isinstance(max_duration, bool) or not isinstance(max_duration, int) or not 1 <= max_duration <= tscale:
        raise ValueError(f"max_duration must be an int in [1, tscale={tscale}], got {max_duration!r}")
    return max_duration


def candidate_grid(tscale: int, max_duration: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (duration index, start snippet) of every candidate, row-major: two ``[K]`` int64 tensors."""
    duration = _check_scale(tscale, max_duration)
    d, j = torch.meshgrid(torch.arange(duration), torch.arange(tscale), indexing="ij")
    valid = (d + j) < tscale
    return d[valid], j[valid]


def num_candidates(tscale: int, max_duration: int | None = None) -> int:
    """K = the number of candidates: sum over d < D of (T - d) (T(T+1)/2 when D = T)."""
    duration = _check_scale(tscale, max_duration)
    return sum(tscale - d for d in range(duration))


def candidate_anchors(tscale: int, max_duration: int | None = None) -> torch.Tensor:
    """Every candidate proposal ``[K, 2]`` float32, ``[j / T, (j + d + 1) / T]`` in (d, j) row-major order."""
    d, j = candidate_grid(tscale, max_duration)
    # division as the released code (i / tscale per snippet edge), then float32
    return torch.stack((j.double() / tscale, (j + d + 1).double() / tscale), dim=1).float()


def sample_size(count: int, ratio: float) -> int:
    """``int(count * ratio)`` (released: 495 of 8,256 at 6%); at least 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    return max(int(count * ratio), 1)


def grid_index(tscale: int, ratio: float, max_duration: int | None = None) -> torch.Tensor:
    """Indices into :func:`candidate_anchors` of the released grid: durations and starts both
    at ``round(1 + m * sqrt(1 / ratio))`` (NumPy's ``arange(1, ., step).round()``), j + d < T.
    At T = 128 and 6% this is 496 candidates. ``[k]`` int64, ascending."""
    duration = _check_scale(tscale, max_duration)
    sample_size(1, ratio)  # validates ratio
    step = math.sqrt(1.0 / ratio)
    rows = np.arange(1, duration, step).round().astype(np.int64)
    cols = np.arange(1, tscale, step).round().astype(np.int64)
    mask = torch.zeros(duration, tscale, dtype=torch.bool)
    for d in rows[rows < duration]:  # the released mask would index out of range at d == D < T
        for j in cols:
            if d + j < tscale:
                mask[d, j] = True
    d, j = candidate_grid(tscale, max_duration)
    return torch.nonzero(mask[d, j]).view(-1)


def block_index(tscale: int, ratio: float, max_duration: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices into :func:`candidate_anchors` of one square block of w = floor(sqrt(n))
    durations x w starts (n = :func:`sample_size`), at a random duration offset x in
    [0, D - 2w] and start offset y in [0, T - 2w - x] (the released ranges; every entry is a
    valid candidate). ``[w * w]`` int64, ascending."""
    duration = _check_scale(tscale, max_duration)
    width = int(math.sqrt(sample_size(num_candidates(tscale, max_duration), ratio)))
    if duration - 2 * width < 0:
        raise ValueError(f"block sampling needs max_duration >= 2 * {width} (the block width), got {duration}")
    x = int(torch.randint(0, duration - 2 * width + 1, (1,), generator=generator))
    y = int(torch.randint(0, tscale - 2 * width - x + 1, (1,), generator=generator))
    d, j = candidate_grid(tscale, max_duration)
    inside = (d >= x) & (d < x + width) & (j >= y) & (j < y + width)
    return torch.nonzero(inside).view(-1)


def sample_proposals(tscale: int, ratio: float, strategy: str = "random", *, max_duration: int | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Detector proposal sampling: a subset of the candidates ``[k, 2]`` float32 in random order.

    ``random``: :func:`sample_size` candidates uniformly without replacement (495 at T = 128,
    6%); ``grid``: :func:`grid_index` (496); ``block``: :func:`block_index` (484). The
    order is shuffled, as released ("to avoid over fitting"). ``generator``: a CPU
    ``torch.Generator`` for reproducible draws.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    anchors = candidate_anchors(tscale, max_duration)
    if strategy == "random":
        index = torch.randperm(anchors.shape[0], generator=generator)[:sample_size(anchors.shape[0], ratio)]
        return anchors[index]  # a random subset, already in random order
    index = grid_index(tscale, ratio, max_duration) if strategy == "grid" else \
        block_index(tscale, ratio, max_duration, generator)
    return anchors[index[torch.randperm(index.numel(), generator=generator)]]


def _check_segments(name: str, segments: torch.Tensor) -> None:
    if not isinstance(segments, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(segments).__name__}")
    if segments.ndim < 1 or segments.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [..., 2] (start, end), got {tuple(segments.shape)}")
    if not segments.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {segments.dtype}")


def aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of paired segments ``a[..., 2]`` and ``b[..., 2]`` -> ``[...]`` (released
    ``iou_with_anchors_batch_aligned``, no epsilon); 0 where the union is empty (released: NaN)."""
    _check_segments("a", a)
    _check_segments("b", b)
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return torch.where(union != 0, inter / torch.where(union != 0, union, torch.ones_like(union)),
                       torch.zeros_like(union))


def match_ground_truth(anchors: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
    """The ground-truth segment each proposal is trained against: the one of highest IoU
    (first on ties), IoU = inter / (union + 1e-6) in float64 as released.

    Args:
        anchors: ``[K, 2]`` proposals in [0, 1].
        ground_truth: ``[N, 2]`` segments in [0, 1] (start <= end). N = 0 (a window without
            actions) matches every proposal to the empty segment ``[0, 0]``: IoU 0, negatives only.
    Returns:
        ``[K, 2]`` in ``anchors.dtype``.
    """
    _check_segments("anchors", anchors)
    _check_segments("ground_truth", ground_truth)
    if anchors.ndim != 2 or ground_truth.ndim != 2:
        raise ValueError(f"anchors and ground_truth must be [K, 2] and [N, 2], got {tuple(anchors.shape)} "
                         f"and {tuple(ground_truth.shape)}")
    if ground_truth.shape[0] == 0:
        return anchors.new_zeros(anchors.shape)
    if not torch.isfinite(ground_truth).all() or (ground_truth[:, 1] < ground_truth[:, 0]).any():
        raise ValueError("ground_truth segments must be finite with start <= end")
    a, g = anchors.double().unsqueeze(1), ground_truth.double().unsqueeze(0)  # [K, 1, 2], [1, N, 2]
    inter = (torch.minimum(a[..., 1], g[..., 1]) - torch.maximum(a[..., 0], g[..., 0])).clamp(min=0)
    iou = inter / ((a[..., 1] - a[..., 0]) + (g[..., 1] - g[..., 0]) - inter + 1e-6)
    return ground_truth[iou.argmax(dim=1)].to(anchors.dtype)  # torch's argmax returns the first maximum


def regression_targets(anchors: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    """Boundary regression targets ``[..., 4]`` = (ds, de, dc, dw) of proposals ``[..., 2]``
    towards their matched segments ``[..., 2]``: ds = (g_s - a_s) / L_a, de = (g_e - a_e) / L_a,
    dc = (ds + de) / 2, dw = log(L_g / L_a + 1e-6), lengths clamped to >= 1e-6 (released).
    :func:`fastlocal.models.etad.model.reg_to_anchors` inverts it (up to the 1e-6)."""
    _check_segments("anchors", anchors)
    _check_segments("matched", matched)
    anchor_len = (anchors[..., 1] - anchors[..., 0]).clamp(min=1e-6)
    gt_len = (matched[..., 1] - matched[..., 0]).clamp(min=1e-6)
    delta_s = (matched[..., 0] - anchors[..., 0]) / anchor_len
    delta_e = (matched[..., 1] - anchors[..., 1]) / anchor_len
    return torch.stack((delta_s, delta_e, (delta_s + delta_e) * 0.5, torch.log(gt_len / anchor_len + 1e-6)), -1)
