"""RoI-align-1D in pure PyTorch (the semantic definition of ``fastlocal.roi_align_1d``).

The op is linear in ``input``: every output bin is a weighted sum of at most
``2 * n`` input frames. We build that sampling plan (indices and weights, independent
of C) and apply it with ``embedding_bag``, so memory never holds an [N, P, n, C] gather
and autograd gives the exact scatter-add backward. The plan is built for a chunk of
bins at a time (at most ``PLAN_TAPS`` taps), so its memory stays bounded whatever
N, P and the sample count are.

A bin reads a frame only through a tap of nonzero weight: taps of weight 0 (the right
tap of a sample exactly on a frame, or past the last frame) are dropped, not multiplied,
so a NaN / inf in a frame reaches exactly the bins that sample it with nonzero weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._dtypes import acc_dtype

# Taps (index + weight, 16 bytes each) in the sampling plan of one chunk of bins: ~64 MiB.
PLAN_TAPS = 1 << 22


def sample_counts(rois: torch.Tensor, output_size: int, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """Samples per bin of every RoI (``[N]``, in the rois' dtype; <= 0 means none)."""
    shift = 0.5 if aligned else 0.0
    roi_len = (rois[:, 2] - shift) - (rois[:, 1] - shift)
    if not aligned:
        roi_len = roi_len.clamp(min=1.0)
    if sampling_ratio > 0:
        return torch.full_like(roi_len, float(sampling_ratio))
    return torch.ceil(roi_len / output_size)  # may be <= 0 for reversed aligned RoIs: no samples


def sampling_plan(
    rois: torch.Tensor,
    length: int,
    output_size: int,
    sampling_ratio: int,
    aligned: bool,
    bins: torch.Tensor | None = None,
    n_max: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat frame indices and weights of the taps of some bins.

    Args:
        rois: [N, 3] (batch index, start, end), float32/float64.
        length: T, the input length.
        bins: flat bin ids ``n * P + p`` (int64, [M]); default every bin, in order.
        n_max: taps per sample slot; default the largest sample count of ``rois``.
    Returns:
        index [M, 2 * n_max] int64 into the flattened [B*T] frame axis, -1 for the taps
        that read nothing (unused samples: padding beyond the RoI's own n, or outside
        ``[-1, T]``; and taps of weight 0), and weight [M, 2 * n_max] (0 for those).
    """
    P, T = output_size, length
    count = sample_counts(rois, P, sampling_ratio, aligned)
    if n_max is None:
        n_max = max(int(count.max().item()), 1) if rois.shape[0] else 1
    if bins is None:
        bins = torch.arange(rois.shape[0] * P, device=rois.device)
    roi, p = bins // P, (bins % P).to(rois.dtype).view(-1, 1)
    shift = 0.5 if aligned else 0.0
    start = (rois[:, 1] - shift)[roi].view(-1, 1)
    roi_len = ((rois[:, 2] - shift) - (rois[:, 1] - shift))[roi]
    if not aligned:
        roi_len = roi_len.clamp(min=1.0)
    bin_size = (roi_len / P).view(-1, 1)
    n = count[roi].view(-1, 1)
    n_safe = n.clamp(min=1)
    i = torch.arange(n_max, dtype=rois.dtype, device=rois.device).view(1, n_max)
    t = start + p * bin_size + (i + 0.5) * bin_size / n_safe
    used = (i < n) & (t >= -1) & (t <= T)
    t = t.clamp(min=0)
    lo = t.floor()
    at_end = lo >= T - 1
    lo = torch.where(at_end, torch.full_like(lo, T - 1), lo)
    t = torch.where(at_end, lo, t)
    hi = torch.where(at_end, lo, lo + 1)
    frac = t - lo
    scale = used.to(rois.dtype) / n_safe
    base = (rois[:, 0].long() * T)[roi].view(-1, 1)
    index = torch.cat([base + lo.long(), base + hi.long()], dim=-1)
    weight = torch.cat([(1 - frac) * scale, frac * scale], dim=-1)
    # Taps that read nothing are marked -1 and dropped by the caller rather than sent to
    # some frame with weight 0: 0 * inf there would put NaN in a bin that does not read
    # that frame (see the module docstring).
    index = torch.where(weight != 0, index, torch.full_like(index, -1))
    return index, weight


def roi_align_1d(
    input: torch.Tensor, rois: torch.Tensor, output_size: int, sampling_ratio: int = 0, aligned: bool = False
) -> torch.Tensor:
    """[B, C, T] x [N, 3] -> [N, C, output_size]; see ``fastlocal.roi_align_1d``."""
    B, C, T = input.shape
    n_rois = rois.shape[0]
    acc = acc_dtype(input.dtype)
    if n_rois == 0 or C == 0:
        # No output element (and no plan to build, whatever output_size is). An empty slice of
        # ``input`` rather than new_zeros: the result stays in the autograd graph, so
        # ``out.sum().backward()`` gives a zero gradient (as the cpu backend does) instead of
        # raising "does not require grad".
        return input[: min(n_rois, 1), :, :1].expand(n_rois, C, output_size).clone()
    rois = rois.to(acc)
    n_bins = n_rois * output_size
    if sampling_ratio > 0:
        n_max = sampling_ratio
        chunk = max(1, PLAN_TAPS // (2 * n_max))  # bins per plan
    else:
        n_max = max(int(sample_counts(rois, output_size, 0, aligned).max().item()), 1)
        # Traced by torch.compile, n_max is a symbol (read from the data): one plan, no chunks.
        chunk = n_bins if torch.compiler.is_compiling() else max(1, PLAN_TAPS // (2 * n_max))
    frames = input.to(acc).permute(0, 2, 1).reshape(B * T, C)
    outs = []
    for first in range(0, n_bins, chunk):
        bins = torch.arange(first, min(first + chunk, n_bins), device=rois.device)
        index, weight = sampling_plan(rois, T, output_size, sampling_ratio, aligned, bins, n_max)
        valid = index >= 0
        counts = valid.sum(dim=1)
        # One bag per bin holding only the taps that read a frame; an empty bag sums to 0.
        outs.append(F.embedding_bag(index[valid], frames, torch.cumsum(counts, 0) - counts,
                                    per_sample_weights=weight[valid], mode="sum"))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.view(n_rois, output_size, C).permute(0, 2, 1).to(input.dtype)
