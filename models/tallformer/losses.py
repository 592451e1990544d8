"""TALLFormer's THUMOS losses, as released (vedatad ``criteria/losses/focal_loss.py``,
``iou_loss.py``, ``criteria/segment_anchor_criterion.py``): a sigmoid focal loss on every
assigned anchor and a DIoU loss on the positives' decoded segments, both summed and divided
by the number of positives (at least 1 per video), weighted ``cls_weight`` / ``reg_weight``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .anchors import Targets, decode
from .config import TALLFormerConfig


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *, gamma: float = 2.0,
                       alpha: float = 0.25) -> torch.Tensor:
    """Element-wise focal loss ``[N, C]`` of ``logits [N, C]`` against ``labels [N]`` (a class in
    ``[0, C)``, or ``C`` = background: every class negative), times ``weights [N]``.

    ``-alpha (1 - p)^gamma log p`` where the class is the label, ``-(1 - alpha) p^gamma
    log(1 - p)`` elsewhere (``p = sigmoid(logit)``).
    """
    C = logits.shape[-1]
    target = F.one_hot(labels, C + 1)[:, :C].to(logits.dtype)
    p = logits.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    focal = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal * weights[:, None]


def diou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Element-wise DIoU loss ``[N]`` of segments ``pred [N, 2]`` against ``target [N, 2]``:
    ``1 - IoU + (centre distance)^2 / (enclosing length^2 + eps)``, with ``IoU = inter /
    (union + eps)`` (released ``diou_loss`` with ``DIoULoss``'s eps 1e-6)."""
    inter = (torch.minimum(pred[:, 1], target[:, 1]) - torch.maximum(pred[:, 0], target[:, 0])).clamp(min=0)
    union = (pred[:, 1] - pred[:, 0]) + (target[:, 1] - target[:, 0]) - inter + eps
    enclose = (torch.maximum(pred[:, 1], target[:, 1]) - torch.minimum(pred[:, 0], target[:, 0])).clamp(min=0)
    rho2 = ((target[:, 0] + target[:, 1]) * 0.5 - (pred[:, 0] + pred[:, 1]) * 0.5) ** 2
    return 1 - (inter / union - rho2 / (enclose**2 + eps))


class TALLFormerLoss(NamedTuple):
    """``loss`` = ``cls`` + ``reg`` (each already weighted), all scalars."""

    loss: torch.Tensor
    cls: torch.Tensor
    reg: torch.Tensor


def flatten_levels(outputs: list[torch.Tensor], channels: int) -> torch.Tensor:
    """Per-level head outputs ``[B, A * channels, T_l]`` -> ``[B, sum_l T_l * A, channels]`` in the
    anchors' order (position-major)."""
    return torch.cat([o.permute(0, 2, 1).reshape(o.shape[0], -1, channels) for o in outputs], dim=1)


def detection_loss(cls_scores: list[torch.Tensor], seg_preds: list[torch.Tensor], anchors: torch.Tensor,
                   targets: Targets, config: TALLFormerConfig) -> TALLFormerLoss:
    """The released training loss of one batch.

    Args:
        cls_scores: per level ``[B, A * num_classes, T_l]`` logits (:class:`~.head.THUMOSHead`).
        seg_preds: per level ``[B, A * 2, T_l]`` deltas.
        anchors: ``[N, 2]`` all levels concatenated (:func:`~.anchors.level_anchors`).
        targets: :func:`~.anchors.make_targets` of the batch.
    """
    logits = flatten_levels(cls_scores, config.num_classes)
    deltas = flatten_levels(seg_preds, 2)
    if logits.shape[1] != anchors.shape[0] or targets.labels.shape != logits.shape[:2]:
        raise ValueError(f"head outputs cover {logits.shape[1]} anchors per video but anchors has "
                         f"{anchors.shape[0]} and targets {tuple(targets.labels.shape)}")
    C = config.num_classes
    focal = sigmoid_focal_loss(logits.reshape(-1, C), targets.labels.reshape(-1), targets.label_weights.reshape(-1),
                               gamma=config.focal_gamma, alpha=config.focal_alpha)
    cls = config.cls_weight * focal.sum() / targets.num_positive
    pos = targets.positive
    if bool(pos.any()):
        pred = decode(anchors.expand(pos.shape[0], -1, -1)[pos], deltas[pos])
        reg = config.reg_weight * diou_loss(pred, targets.segments[pos], config.diou_eps).sum() / targets.num_positive
    else:
        reg = deltas.sum() * 0.0  # released: (pred * weight).sum() == 0, still in the graph
    return TALLFormerLoss(cls + reg, cls, reg)
