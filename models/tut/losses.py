"""TUT's training losses: frame-wise cross-entropy, MS-TCN's truncated MSE smoothing loss and
the boundary-aware KL loss (paper Eq. 6-11; docs/design.md, "TUT's boundary-aware loss").

The boundary-aware loss reads the attention distribution of boundary frames only, through
:class:`fastlocal.nn.LocalAttention`'s ``need_weights_rows`` (which calls
:func:`fastlocal.local_attention_probs`): nothing of size T x window is built for it.

Batches of different lengths: cross-entropy averages over valid frames (as
``ignore_index``); the smoothing loss averages over valid frame pairs and classes (for one
unpadded video this is MS-TCN's mean); the boundary loss averages over every video's
boundary rows x heads, starts and ends separately. The released code (batch size 1) adds
the start and end terms only when both kinds occur; here each term is added when its kind
occurs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import TUTConfig
from .model import TUTOutput, level_lengths, padding_mask, resample_index

IGNORE_INDEX = -100
KL_EPS = 1e-5


class BoundaryRows(NamedTuple):
    """Boundary frames of a batch at one resolution, padded to R per video.

    ``rows [B, R]`` frame indices, ``is_start [B, R]`` (False = end frame), ``valid [B, R]``
    (False = padding entry, index 0)."""

    rows: torch.Tensor
    is_start: torch.Tensor
    valid: torch.Tensor


class BoundaryTargets(NamedTuple):
    """Boundary rows of the first encoder layer (``T // 2`` frames) and, when the config's
    ``boundary_layers`` is "encoder+decoder", of the last decoder layer (``T`` frames)."""

    encoder: BoundaryRows | None
    decoder: BoundaryRows | None


class TUTLoss(NamedTuple):
    """``total = sum_s (ce_s + lambda * smooth_s) + beta * boundary`` (scalars; the parts are
    summed over stages and not yet weighted)."""

    total: torch.Tensor
    ce: torch.Tensor
    smooth: torch.Tensor
    boundary: torch.Tensor


def _pack(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the True entries of each row of ``mask [B, T]``, in order, padded: ``(rows, valid)``."""
    counts = mask.sum(dim=1)
    R = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :R]
    valid = torch.arange(R, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)
    return order.masked_fill(~valid, 0), valid


def boundary_rows(labels: torch.Tensor, lengths: torch.Tensor) -> BoundaryRows:
    """Start and end frames of ``labels [B, T]`` (valid lengths ``[B]``).

    Start frame t: ``y[t] != y[t-1]``; end frame t: ``y[t] == y[t-1]`` and ``y[t] != y[t+1]``;
    frames 0 and ``length-1`` are never boundaries (released code's ``class2boundary``).
    """
    T = labels.shape[1]
    t = torch.arange(T, device=labels.device).unsqueeze(0)
    inner = (t >= 1) & (t <= lengths.to(labels.device).unsqueeze(1) - 2)
    prev_diff = torch.zeros_like(inner)
    next_diff = torch.zeros_like(inner)
    if T > 1:
        prev_diff[:, 1:] = labels[:, 1:] != labels[:, :-1]
        next_diff[:, :-1] = labels[:, :-1] != labels[:, 1:]
    starts = inner & prev_diff
    ends = inner & ~prev_diff & next_diff
    start_rows, start_valid = _pack(starts)
    end_rows, end_valid = _pack(ends)
    return BoundaryRows(
        torch.cat([start_rows, end_rows], dim=1),
        torch.cat([torch.ones_like(start_valid), torch.zeros_like(end_valid)], dim=1),
        torch.cat([start_valid, end_valid], dim=1),
    )


def boundary_targets(labels: torch.Tensor, lengths: torch.Tensor | None, config: TUTConfig) -> BoundaryTargets:
    """Boundary rows for :meth:`TUT.forward`'s ``encoder_rows`` / ``decoder_rows``.

    The labels are downsampled to the first encoder layer's length by the same per-video
    nearest index as the model's features (``F.interpolate(mode="nearest")`` for one video).
    Empty (no boundary anywhere in the batch) or ``beta == 0`` gives None.
    """
    if config.beta == 0:
        return BoundaryTargets(None, None)
    B, T = labels.shape
    lengths = _lengths(lengths, B, T, labels.device)
    per_level = level_lengths(lengths.cpu(), 1)
    size1 = max(T // 2, 1)
    index = resample_index(per_level[0], per_level[1], size1).to(labels.device)
    encoder = boundary_rows(torch.gather(labels, 1, index), per_level[1].to(labels.device))
    decoder = boundary_rows(labels, lengths) if config.boundary_layers == "encoder+decoder" else None
    return BoundaryTargets(*(r if r is not None and r.rows.shape[1] else None for r in (encoder, decoder)))


def boundary_prior(window: int, device: torch.device | None = None) -> torch.Tensor:
    """``[2, window]`` priors by offset ``-w//2 .. w//2``: row 0 for start frames (uniform over
    offsets ``0 .. w//2``, the anchor included), row 1 for end frames (its mirror)."""
    half = window // 2
    start = torch.zeros(window, device=device)
    start[half:] = 1.0 / (half + 1)
    return torch.stack([start, start.flip(0)])


def boundary_kl(probs: torch.Tensor, rows: BoundaryRows, window: int) -> torch.Tensor:
    """``KL(prior || attention)`` with ``eps = 1e-5`` inside both logs, averaged over
    batch x heads x boundary rows for starts and for ends separately, then summed.

    Args:
        probs: ``[B, H, R, window]`` attention distributions of ``rows`` (by window offset).
        rows: the :class:`BoundaryRows` the probabilities were read at.
    """
    prior = boundary_prior(window, probs.device)[(~rows.is_start).long()]  # [B, R, w]
    prior = prior.unsqueeze(1).to(probs.dtype)
    kl = (prior * (torch.log(prior + KL_EPS) - torch.log(probs + KL_EPS))).sum(-1)  # [B, H, R]
    H = probs.shape[1]
    total = probs.new_zeros(())
    for kind in (rows.is_start, ~rows.is_start):
        select = (rows.valid & kind).unsqueeze(1).to(kl.dtype)  # [B, 1, R]
        count = select.sum() * H
        if count > 0:
            total = total + (kl * select).sum() / count
    return total


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Frame-wise cross-entropy of ``logits [B, T, C]`` against ``labels [B, T]``, mean over valid frames."""
    if pad is not None:
        labels = labels.masked_fill(pad, IGNORE_INDEX)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def smoothing_loss(logits: torch.Tensor, pad: torch.Tensor | None, threshold: float = 4.0) -> torch.Tensor:
    """MS-TCN's truncated MSE: ``mean min((log p_t - log p_{t-1})^2, theta^2)`` over valid frame
    pairs and classes, with no gradient through frame t-1. ``logits [B, T, C]``."""
    T, C = logits.shape[1:]
    if T < 2:
        return logits.sum() * 0.0
    logp = F.log_softmax(logits, dim=-1)
    sq = (logp[:, 1:] - logp[:, :-1].detach()).square().clamp(max=threshold**2)
    if pad is None:
        return sq.mean()
    keep = (~pad[:, 1:]).unsqueeze(-1).to(sq.dtype)
    return (sq * keep).sum() / (keep.sum() * C).clamp(min=1)


def tut_loss(
    output: TUTOutput,
    labels: torch.Tensor,
    lengths: torch.Tensor | None,
    config: TUTConfig,
    targets: BoundaryTargets | None = None,
) -> TUTLoss:
    """The loss of paper Eq. 11 summed over stages.

    Args:
        output: :meth:`TUT.forward`'s result, called with the ``targets``' rows.
        labels: ``[B, T]`` class indices (padding values are ignored).
        lengths: ``[B]`` valid lengths or None.
        targets: :func:`boundary_targets` (None or ``beta == 0``: no boundary term).
    """
    B, T = output.logits.shape[1:3]
    lengths = _lengths(lengths, B, T, labels.device)
    pad = padding_mask(lengths, T)
    pad = pad if bool(pad.any()) else None
    ce = sum(cross_entropy(logits, labels, pad) for logits in output.logits)
    smooth = sum(smoothing_loss(logits, pad, config.smooth_threshold) for logits in output.logits)
    boundary = output.logits.new_zeros(())
    if targets is not None and config.beta > 0:
        for site, probs_list in ((targets.encoder, output.encoder_probs), (targets.decoder, output.decoder_probs)):
            if site is None:
                continue
            for probs in probs_list:
                if probs is None:
                    raise ValueError("boundary targets were given but the model returned no attention rows; "
                                     "call the model with encoder_rows=/decoder_rows= from the same targets")
                boundary = boundary + boundary_kl(probs, site, config.window)
    total = ce + config.smooth_weight * smooth + config.beta * boundary
    return TUTLoss(total, ce, smooth, boundary)


def compute_loss(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    lengths: torch.Tensor | None = None,
    config: TUTConfig | None = None,
) -> tuple[TUTLoss, TUTOutput]:
    """One forward pass with the boundary rows the loss needs, and the loss.

    ``model`` is a :class:`~fastlocal.models.tut.TUT` or a wrapper of one (DDP; then pass its
    ``config``); ``features [B, T, D]``, ``labels [B, T]``, ``lengths [B]`` or None."""
    config = model.config if config is None else config
    targets = boundary_targets(labels, lengths, config)
    output = model(
        features, lengths,
        encoder_rows=None if targets.encoder is None else targets.encoder.rows,
        decoder_rows=None if targets.decoder is None else targets.decoder.rows,
    )
    return tut_loss(output, labels, lengths, config, targets), output


def _lengths(lengths: torch.Tensor | None, B: int, T: int, device: torch.device) -> torch.Tensor:
    if lengths is None:
        return torch.full((B,), T, dtype=torch.long, device=device)
    return lengths.to(device=device, dtype=torch.long)
