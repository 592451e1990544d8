"""ETAD's training targets and losses, as released (``lib/loss/model_loss.py``,
``lib/dataset/anet_1_3/dataset.py``).

Targets of one video: the boundary (TEM) targets ``[T]`` (:func:`boundary_targets`, by
intersection over anchor), and each sampled proposal's matched ground truth ``[K, 2]``
(:func:`~fastlocal.models.etad.proposals.match_ground_truth`, matched once with the input
proposals; later stages measure their refined proposals against the same segment).

Loss = w_tem (balanced BCE on start + balanced BCE on end) + sum over stages of
w_iou_cls IoU classification + w_iou_reg IoU regression + w_boundary_reg (smooth-L1 of ds,
de, dc, dw on proposals whose IoU exceeds the stage's threshold) + w_boundary_cls
(BCE_s + BCE_e of the proposal's boundary probabilities against the TEM targets at its
start / end snippet). The weights are :data:`~fastlocal.models.etad.config.LOSS_WEIGHTS`.

Negatives (and, for the IoU regression, the middle and low sets) are subsampled at random
to about the size of the positive (high) set, as released; ``generator`` makes that
reproducible. Differences from the released code, all in degenerate batches: a term with
an empty negative (or middle / low) set leaves that set out, where the released code
divides by zero and then counts *every* proposal in it (``rand > 1 - inf``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .config import ETADConfig
from .model import ETADOutput
from .proposals import aligned_iou, match_ground_truth, regression_targets

_EPS = 1e-6  # inside the logs, as released


class ETADTargets(NamedTuple):
    """Training targets of a batch: ``start``, ``end`` ``[B, T]`` boundary targets and ``matched
    [B, K, 2]`` the ground-truth segment of each input proposal."""

    start: torch.Tensor
    end: torch.Tensor
    matched: torch.Tensor


def boundary_targets(ground_truth: torch.Tensor, tscale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end targets ``[T]`` float32 of one video's segments ``[N, 2]`` in [0, 1]:
    the largest intersection of snippet ``[i / T, (i + 1) / T]`` with a window of width 3 / T
    centred on a ground-truth start (end), divided by the snippet's length + 1e-6 (released
    IoA, float64). No segment: zeros."""
    if ground_truth.ndim != 2 or ground_truth.shape[1] != 2:
        raise ValueError(f"ground_truth must have shape [N, 2], got {tuple(ground_truth.shape)}")
    if ground_truth.shape[0] == 0:
        zeros = torch.zeros(tscale)
        return zeros, zeros.clone()
    steps = torch.arange(tscale + 1, dtype=torch.float64) / tscale
    lo, hi = steps[:-1].view(-1, 1), steps[1:].view(-1, 1)  # [T, 1]
    half = 3.0 / tscale / 2
    out = []
    for edge in ground_truth.double().cpu().unbind(1):
        inter = (torch.minimum(hi, edge + half) - torch.maximum(lo, edge - half)).clamp(min=0)  # [T, N]
        out.append((inter / (hi - lo + _EPS)).amax(dim=1).float())
    return out[0].to(ground_truth.device), out[1].to(ground_truth.device)


def make_targets(ground_truth: list[torch.Tensor], anchors: torch.Tensor, tscale: int) -> ETADTargets:
    """:class:`ETADTargets` of a batch: one ``[N_b, 2]`` segment tensor per video (fractions of
    its duration, clipped to [0, 1] here as released) and the proposals ``[B, K, 2]`` the model
    evaluates."""
    if len(ground_truth) != anchors.shape[0]:
        raise ValueError(f"ground_truth has {len(ground_truth)} videos but anchors has {anchors.shape[0]}")
    starts, ends, matched = [], [], []
    for segments, proposals in zip(ground_truth, anchors, strict=True):
        segments = segments.clamp(0.0, 1.0)
        start, end = boundary_targets(segments, tscale)
        starts.append(start)
        ends.append(end)
        matched.append(match_ground_truth(proposals, segments.to(proposals)))
    return ETADTargets(torch.stack(starts).to(anchors.device), torch.stack(ends).to(anchors.device),
                       torch.stack(matched))


def balanced_bce(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class-balanced BCE (TEM): positives target > ``threshold``, weighted 0.5 N / N_pos, negatives
    0.5 N / N_neg, mean over all N entries; one class only: the mean over that class."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    positive = target > threshold
    log_pos, log_neg = torch.log(pred + _EPS), torch.log(1.0 - pred + _EPS)
    num_pos, num = int(positive.sum()), positive.numel()
    if num_pos == 0:
        return -log_neg.mean()
    if num_pos == num:
        return -log_pos.mean()
    loss = torch.where(positive, 0.5 * num / num_pos * log_pos, 0.5 * num / (num - num_pos) * log_neg)
    return -loss.mean()


def _subsample(candidates: torch.Tensor, ratio: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Keep each ``candidates`` entry with probability ``ratio`` (released: ``rand > 1 - ratio``)."""
    noise = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    return candidates & (noise > 1 - ratio)


def sampled_bce(pred: torch.Tensor, target: torch.Tensor, threshold: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """BCE with positives target > ``threshold`` and negatives kept with probability N_pos / N_neg:
    -(sum log p over positives + sum log(1 - p) over kept negatives) / (N_pos + N_kept).
    No positive: -mean log(1 - p) over all."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    positive = target > threshold
    num_pos = positive.sum()
    if num_pos == 0:
        return -torch.log(1.0 - pred + _EPS).mean()
    negative = ~positive
    kept = _subsample(negative, num_pos / negative.sum().clamp(min=1), generator)
    loss = torch.log(pred + _EPS)[positive].sum() + torch.log(1.0 - pred + _EPS)[kept].sum()
    return -loss / (num_pos + kept.sum())


def sampled_l2(pred: torch.Tensor, target: torch.Tensor, high: float, low: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """IoU regression: MSE over the high set (target > ``high``) and the middle (``low``, ``high``]
    and low (<= ``low``) sets, each kept with probability N_high / N_set. No high entry: the
    MSE over all."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    squared = (pred - target) ** 2
    high_set = target > high
    num_high = high_set.sum()
    if num_high == 0:
        return squared.mean()
    mask = high_set
    for subset in ((target <= high) & (target > low), target <= low):
        mask = mask | _subsample(subset, num_high / subset.sum().clamp(min=1), generator)
    return squared[mask].sum() / mask.sum()


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, iou: torch.Tensor, threshold: float) -> torch.Tensor:
    """Smooth-L1 (beta 1) averaged over the entries with ``iou > threshold``; 0 when there is none."""
    mask = (iou > threshold).reshape(-1)
    if not mask.any():
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred.reshape(-1)[mask], target.reshape(-1)[mask], reduction="mean")


def snippet_targets(boundary: torch.Tensor, anchors: torch.Tensor, side: int) -> torch.Tensor:
    """The boundary target ``[B, T]`` at each proposal's start (``side`` 0) or end (1) snippet
    ``floor(anchor * T)`` clamped to [0, T - 1] -> ``[B, K]``."""
    tscale = boundary.shape[1]
    index = (anchors[..., side] * tscale).floor().long().clamp(0, tscale - 1)
    return torch.gather(boundary, 1, index)


def stage_loss(output: ETADOutput, stage: int, targets: ETADTargets, config: ETADConfig,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The unweighted terms of one cascade stage: ``iou_cls``, ``iou_reg``, ``reg_se`` (smooth-L1
    ds + de), ``reg_cw`` (dc + dw), ``boundary_cls`` (BCE_s + BCE_e)."""
    anchors, iou, reg = output.anchors[stage], output.iou[stage], output.reg[stage]
    gt_iou = aligned_iou(targets.matched, anchors)
    deltas = regression_targets(anchors, targets.matched)
    threshold = config.stages[stage]
    terms = {
        "iou_cls": sampled_bce(iou[..., 0], gt_iou, config.iou_positive, generator),
        "iou_reg": sampled_l2(iou[..., 1], gt_iou, config.iou_high, config.iou_low, generator),
    }
    smooth = [masked_smooth_l1(reg[..., i], deltas[..., i], gt_iou, threshold) for i in range(4)]
    terms["reg_se"], terms["reg_cw"] = smooth[0] + smooth[1], smooth[2] + smooth[3]
    terms["boundary_cls"] = sum(
        sampled_bce(reg[..., 4 + side], snippet_targets(boundary, anchors, side), 0.5, generator)
        for side, boundary in ((0, targets.start), (1, targets.end)))
    return terms


def etad_loss(output: ETADOutput, targets: ETADTargets, config: ETADConfig,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss and every term as a float: ``tem``, ``stage{i}`` (weighted),
    ``stage{i}/<term>`` (unweighted, :func:`stage_loss`) and ``loss``.

    As released, every term pools the whole batch (the balanced and subsampled sets are
    drawn over all B x K proposals, B x T snippets), so the total is not a mean of
    per-video losses. ``generator`` (on the tensors' device) drives the subsampling.
    """
    weights = config.weights
    tem = balanced_bce(output.tem[:, 0], targets.start) + balanced_bce(output.tem[:, 1], targets.end)
    total = weights["tem"] * tem
    log = {"tem": tem.item()}
    for stage in range(output.anchors.shape[0]):
        terms = stage_loss(output, stage, targets, config, generator)
        weighted = (weights["iou_cls"] * terms["iou_cls"] + weights["iou_reg"] * terms["iou_reg"]
                    + weights["boundary_reg"] * (terms["reg_se"] + terms["reg_cw"])
                    + weights["boundary_cls"] * terms["boundary_cls"])
        total = total + weighted
        log[f"stage{stage + 1}"] = weighted.item()
        log.update({f"stage{stage + 1}/{name}": value.item() for name, value in terms.items()})
    log["loss"] = total.item()
    return total, log
