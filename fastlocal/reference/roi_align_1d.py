"""RoI-align-1D in pure PyTorch (the semantic definition of ``fastlocal.roi_align_1d``).

The op is linear in ``input``: every output bin is a weighted sum of at most
``2 * n`` input frames. We build that sampling plan (indices and weights, of size
N x P x 2n, independent of C) and apply it with ``embedding_bag``, so memory never
holds an [N, P, n, C] gather and autograd gives the exact scatter-add backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dtypes import acc_dtype


def sampling_plan(
    rois: torch.Tensor, length: int, output_size: int, sampling_ratio: int, aligned: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat frame indices and weights of every bin.

    Args:
        rois: [N, 3] (batch index, start, end), float32/float64.
        length: T, the input length.
    Returns:
        index [N, P, 2n] int64 into the flattened [B*T] frame axis, -1 for the taps of
        unused samples (padding beyond the RoI's own n, or outside ``[-1, T]``), and
        weight [N, P, 2n] (zero for those), with n the largest per-RoI sample count.
    """
    P, T = output_size, length
    shift = 0.5 if aligned else 0.0
    start = rois[:, 1] - shift
    roi_len = rois[:, 2] - shift - start
    if not aligned:
        roi_len = roi_len.clamp(min=1.0)
    bin_size = roi_len / P
    if sampling_ratio > 0:
        count = torch.full_like(roi_len, float(sampling_ratio))
        n_max = sampling_ratio
    else:
        count = torch.ceil(roi_len / P)  # may be <= 0 for reversed aligned RoIs: no samples
        n_max = max(int(count.max().item()), 1)

    p = torch.arange(P, dtype=rois.dtype, device=rois.device).view(1, P, 1)
    i = torch.arange(n_max, dtype=rois.dtype, device=rois.device).view(1, 1, n_max)
    n = count.view(-1, 1, 1)
    n_safe = n.clamp(min=1)
    t = start.view(-1, 1, 1) + p * bin_size.view(-1, 1, 1) + (i + 0.5) * bin_size.view(-1, 1, 1) / n_safe
    used = (i < n) & (t >= -1) & (t <= T)
    t = t.clamp(min=0)
    lo = t.floor()
    at_end = lo >= T - 1
    lo = torch.where(at_end, torch.full_like(lo, T - 1), lo)
    t = torch.where(at_end, lo, t)
    hi = torch.where(at_end, lo, lo + 1)
    frac = t - lo
    scale = used.to(rois.dtype) / n_safe
    base = (rois[:, 0].long() * T).view(-1, 1, 1)
    index = torch.cat([base + lo.long(), base + hi.long()], dim=-1)
    weight = torch.cat([(1 - frac) * scale, frac * scale], dim=-1)
    # Unused taps are marked -1 and dropped by the caller rather than sent to some frame
    # with weight 0: 0 * inf there would put NaN in bins that never read that frame (the
    # cpu kernel skips them). Used taps of weight 0 stay, as in the cpu kernel and torchvision.
    index = torch.where(torch.cat([used, used], dim=-1), index, torch.full_like(index, -1))
    return index, weight


def roi_align_1d(
    input: torch.Tensor, rois: torch.Tensor, output_size: int, sampling_ratio: int = 0, aligned: bool = False
) -> torch.Tensor:
    """[B, C, T] x [N, 3] -> [N, C, output_size]; see ``fastlocal.roi_align_1d``."""
    B, C, T = input.shape
    n_rois = rois.shape[0]
    acc = acc_dtype(input.dtype)
    if n_rois == 0:
        # An empty slice of ``input`` rather than new_zeros: the result stays in the autograd
        # graph, so ``out.sum().backward()`` gives a zero gradient (as the cpu backend does)
        # instead of raising "does not require grad".
        return input[:0, :, :1].expand(0, C, output_size).clone()
    index, weight = sampling_plan(rois.to(acc), T, output_size, sampling_ratio, aligned)
    frames = input.to(acc).permute(0, 2, 1).reshape(B * T, C)
    index, weight = index.view(n_rois * output_size, -1), weight.view(n_rois * output_size, -1)
    valid = index >= 0
    counts = valid.sum(dim=1)
    # One bag per (RoI, bin) holding only its used taps; an empty bag sums to 0.
    out = F.embedding_bag(
        index[valid], frames, torch.cumsum(counts, 0) - counts, per_sample_weights=weight[valid], mode="sum"
    )
    return out.view(n_rois, output_size, C).permute(0, 2, 1).to(input.dtype)
