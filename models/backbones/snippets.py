"""ETAD's end-to-end snippet encoder: a video backbone trained by encoder gradient sampling (EGS).

A video is ``T`` snippets (ETAD: 128 snippets of 16 frames); :class:`SnippetEncoder` turns
``[B, T, 3, L, H, W]`` into the detector's input ``[B, C, T]``. This module owns the
end-to-end piece only; the sampling and the re-encoding are :mod:`fastlocal.selective`'s.

The released procedure (sming256/ETAD ``lib/core/trainer.py`` and
``lib/models/build_model.py``), per iteration:

1. encode every snippet in chunks of 4 under ``no_grad`` (backbone in eval mode);
2. run the detector on the detached features, ``backward``, ``optimizer.step()``;
3. ``zero_grad``; per video, a random permutation of the snippets, whose first ``4 n``
   (``n = int(T * ratio / 4 + 0.99)``: 4 chunks = 16 snippets at ratio 0.1, 10 = 40 at 0.3,
   of 128) are re-encoded with autograd, 4 at a time, each chunk back-propagating its rows
   of the features' gradient; ``optimizer.step()``. No ``1 / ratio`` rescaling.

Here it is one autograd graph: :meth:`SnippetEncoder.forward` calls
:func:`fastlocal.selective.selective_encode` on each video (its forward is step 1, its
backward step 3), so one ``loss.backward()`` and one ``optimizer.step()`` do what the two
released steps do. They are equal because the detector's and the backbone's parameters are
disjoint, AdamW updates a parameter from its own gradient only and skips parameters whose
gradient is None (``zero_grad`` sets None since torch 2.0: the released step 2 leaves the
backbone alone, step 3 the detector), and the backbone does not change between the two
steps, so the re-encoded features are the ones the detector saw (BatchNorm in eval mode,
no dropout in R(2+1)D). Sampling: the first ``4 n`` of a uniform permutation are a uniform
``4 n``-subset, which is what ``sample_indices(T, 4 n / T, "random")`` draws; the released
code groups them into chunks in permutation order, ``selective_encode`` in temporal order,
which changes no sum of gradients.

Two learning rates (released: detector 5e-4, backbone 5e-7, AdamW with weight decay 1e-4):
:func:`parameter_groups`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastlocal import _validate as check
from fastlocal.selective import STRATEGIES, selective_encode

__all__ = ["SnippetEncoder", "parameter_groups", "sampled_snippets"]

CHUNK_SIZE = 4  # ETAD's E2E_SETTING.chunk_size


def sampled_snippets(num_snippets: int, ratio: float, chunk_size: int = CHUNK_SIZE) -> int:
    """Snippets of one video that get a gradient: ``chunk_size * int(T * ratio / chunk_size + 0.99)``,
    at most ``T`` (ETAD asserts instead; at ``T = 128`` and ``ratio <= 1`` it never exceeds T).

    ``T = 128``: ratio 0.1 gives 16, 0.3 gives 40, 1 gives 128, 0 gives 0.
    """
    check.integer("num_snippets", num_snippets, minimum=1)
    ratio = check.real("ratio", ratio, low=0.0, high=1.0)
    check.integer("chunk_size", chunk_size, minimum=1)
    return min(num_snippets, chunk_size * int(num_snippets * ratio / chunk_size + 0.99))


class SnippetEncoder(nn.Module):
    """A video's snippets ``[B, T, 3, L, H, W]`` -> features ``[B, C, T]``, trained by EGS.

    Training mode with autograd on: per video, :func:`~fastlocal.selective.selective_encode`
    encodes every snippet without autograd (``chunk_size`` per backbone call) and, in
    backward, re-encodes the :func:`sampled_snippets` drawn for that video (``strategy``;
    ETAD: ``"random"``, the paper's Table 5 also ``"grid"`` and ``"block"``) with autograd,
    ``chunk_size`` at a time. Eval mode, autograd off, or ``ratio = 0`` (ETAD's
    "augmentation only" setting: the backbone gets no gradient): every snippet is encoded
    without autograd, chunk by chunk.

    The backbone should be in the released setting: frozen early stages and BatchNorm in
    eval mode (e.g. ``r2plus1d_34(frozen_stages=2, norm_eval=True)``); a BatchNorm in
    training mode makes ``selective_encode`` warn, as its statistics would be updated twice.

    Args:
        backbone: clips ``[n, 3, L, H, W]`` -> features ``[n, C]``.
        ratio: ETAD's ``SAMPLING_RATIO.snippet`` in ``[0, 1]`` (released 0.3, paper 0.1).
        chunk_size: snippets per backbone call (ETAD: 4), and the sampling unit.
        strategy: ``"random"``, ``"grid"`` or ``"block"`` (:func:`fastlocal.selective.sample_indices`).
        generator: CPU ``torch.Generator`` for the sampling (default: the global RNG); the
            videos of a batch draw from it in order.
    """

    def __init__(
        self,
        backbone: nn.Module,
        ratio: float = 0.3,
        *,
        chunk_size: int = CHUNK_SIZE,
        strategy: str = "random",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.ratio = check.real("ratio", ratio, low=0.0, high=1.0)
        self.chunk_size = check.integer("chunk_size", chunk_size, minimum=1)
        self.strategy = check.choice("strategy", strategy, STRATEGIES)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, chunk_size={self.chunk_size}, strategy={self.strategy!r}"

    def forward(self, snippets: torch.Tensor) -> torch.Tensor:
        """Features of every snippet.

        Args:
            snippets: ``[B, T, 3, L, H, W]`` floating point (normalised frames), in temporal order.
        Returns:
            ``[B, C, T]``; requires grad in training mode when the backbone has trainable
            parameters and ``ratio > 0``.
        """
        if not isinstance(snippets, torch.Tensor):
            raise TypeError(f"snippets must be a torch.Tensor, got {type(snippets).__name__}")
        if snippets.dim() != 6 or snippets.shape[0] < 1 or snippets.shape[1] < 1 or snippets.shape[2] != 3:
            raise ValueError("snippets must be [batch, snippets, 3, frames, height, width] with at least one "
                             f"video and one snippet, got shape {tuple(snippets.shape)}")
        num = snippets.shape[1]
        sampled = sampled_snippets(num, self.ratio, self.chunk_size)
        if self.training and sampled and torch.is_grad_enabled():
            features = [selective_encode(self.backbone, video, sampled / num, strategy=self.strategy,
                                         chunk_size=self.chunk_size, generator=self.generator)
                        for video in snippets]
        else:
            with torch.no_grad():  # without autograd selective_encode only encodes, chunk by chunk
                features = [selective_encode(self.backbone, video, 1.0, chunk_size=self.chunk_size)
                            for video in snippets]
        out = torch.stack(features)
        if out.dim() != 3:
            raise ValueError(f"backbone must return features [n, C], got shape {tuple(out.shape[1:])} per video")
        return out.transpose(1, 2)


def parameter_groups(
    detector: nn.Module,
    encoder: nn.Module,
    *,
    detector_lr: float,
    backbone_lr: float,
    train_norm: bool = False,
) -> list[dict[str, Any]]:
    """The optimizer's two parameter groups: the detector's at ``detector_lr``, the backbone's at ``backbone_lr``.

    Only parameters that require grad are listed (frozen stages are in no group).

    BatchNorm affine parameters of ``encoder``: the released code means to leave them out
    (``if "bn" not in name`` in ``TAL_model.get_optimizer``; the paper: "all BN frozen"),
    but torchvision's names have no ``"bn"`` (``layer3.0.conv1.1.weight``), so the filter
    never matches and the released training optimises them at the backbone rate, on top of
    ``norm_eval``. ``train_norm=False`` (default) does what was meant: they are in no group
    and this function sets their ``requires_grad`` to False, so backward does not compute
    gradients nobody applies. ``train_norm=True`` reproduces the released behaviour.
    The optimizer is the caller's (released: ``AdamW(groups, weight_decay=1e-4)``).

    Args:
        detector: the detection head.
        encoder: the backbone, or the :class:`SnippetEncoder` holding it.
        detector_lr, backbone_lr: learning rates (released 5e-4 and 5e-7; paper 1e-3 and 1e-6).
        train_norm: optimise BatchNorm weights and biases of the encoder (released quirk).
    Returns:
        ``[{"name": "detector", "params": [...], "lr": detector_lr},
        {"name": "backbone", "params": [...], "lr": backbone_lr}]``.
    """
    for name, module in (("detector", detector), ("encoder", encoder)):
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
    detector_lr = check.real("detector_lr", detector_lr, low=0.0)
    backbone_lr = check.real("backbone_lr", backbone_lr, low=0.0)
    if not isinstance(train_norm, bool):
        raise TypeError(f"train_norm must be a bool, got {type(train_norm).__name__}")
    shared = {id(p) for p in detector.parameters()} & {id(p) for p in encoder.parameters()}
    if shared:
        raise ValueError(f"detector and encoder share {len(shared)} parameter(s); pass disjoint modules")
    if not train_norm:
        for module in encoder.modules():
            if isinstance(module, _BatchNorm):
                module.requires_grad_(False)
    return [
        {"name": "detector", "params": [p for p in detector.parameters() if p.requires_grad], "lr": detector_lr},
        {"name": "backbone", "params": [p for p in encoder.parameters() if p.requires_grad], "lr": backbone_lr},
    ]
