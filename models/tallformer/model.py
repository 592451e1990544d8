"""TALLFormer (Cheng and Bertasius, ECCV 2022) on THUMOS-14, assembled end to end.

``video [B, 3, F, H, W]`` -> :class:`~fastlocal.models.backbones.ChunkEncoder` over a
:class:`~fastlocal.models.backbones.VideoSwin` (``F / 32`` chunks of 32 frames, gradient
checkpointing, 2 frozen stages; ``[B, F / 2, C]``) -> in training, the long-term memory step
(:func:`~.memory.memory_step`: the kept chunks encoded with gradient, the others read from a
:class:`fastlocal.selective.LongMemory`) -> :class:`~.head.ReductionConvs` (``[B, dim, F / 8]``)
-> :attr:`TALLFormer.temporal_consistency` (:class:`~.consistency.TemporalConsistencyModule`)
-> :class:`~.head.THUMOSHead` (per level logits and deltas).

Evaluation mode (or autograd off) encodes every chunk and leaves the memory alone. Training
without a memory, or with ``keep_ratio`` 1, back-propagates through every chunk (full end-to-end
training; with ``gradient_checkpointing`` the backbone recomputes its blocks in backward).

The ActivityNet model (the AFSD-based head, its classifier and the padded 768-frame inputs) is
not part of this work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastlocal.selective import LongMemory

from ..backbones.chunks import ChunkEncoder
from ..backbones.video_swin import VideoSwin
from .config import TALLFormerConfig
from .consistency import TemporalConsistencyModule
from .head import ReductionConvs, THUMOSHead
from .memory import memory_step

__all__ = ["TALLFormer"]


class TALLFormer(nn.Module):
    """The whole detector (module docstring).

    Args:
        config: architecture, backbone and ``keep_ratio``; ``feature_dim`` must be the
            backbone's output channels.
        memory: the long-term memory used in training when ``keep_ratio < 1`` (None: every chunk
            is encoded with gradient). It is not a parameter or buffer: it is data, kept by the
            task (one array per video) and never saved in the model's state dict.
        generator: CPU generator of the kept chunks (default: the global RNG, which the engine
            seeds and checkpoints).
    """

    def __init__(self, config: TALLFormerConfig, memory: LongMemory | None = None, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(config, TALLFormerConfig):
            raise TypeError(f"config must be a TALLFormerConfig, got {type(config).__name__}")
        if memory is not None and not isinstance(memory, LongMemory):
            raise TypeError(f"memory must be a fastlocal.selective.LongMemory or None, got {type(memory).__name__}")
        backbone = VideoSwin(config.backbone_config)
        if backbone.out_channels != config.feature_dim:
            raise ValueError(f"TALLFormerConfig.feature_dim={config.feature_dim} must equal the backbone's output "
                             f"channels {backbone.out_channels}")
        self.config = config
        self.encoder = ChunkEncoder(backbone, config.chunk_frames)
        self.reduction = ReductionConvs(config)
        self.temporal_consistency = TemporalConsistencyModule(config)
        self.head = THUMOSHead(config)
        self.memory = memory
        self.generator = generator

    @property
    def backbone(self) -> VideoSwin:
        return self.encoder.backbone

    def uses_memory(self) -> bool:
        """Whether a training step goes through the memory (a memory and ``keep_ratio < 1``)."""
        return self.memory is not None and self.config.keep_ratio < 1

    def features(self, video: torch.Tensor, keys: Sequence[str] | None = None,
                 offsets: Sequence[int] | None = None, *, kept: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features ``[B, ceil(F / 2), C]`` of ``video [B, 3, F, H, W]``.

        In training with a memory (:meth:`uses_memory`) ``keys`` (the videos' memory keys) and
        ``offsets`` (each window's first frame, even) are required and ``kept`` may fix the kept
        chunks (tests); otherwise every chunk is encoded and they are ignored.
        """
        if self.training and torch.is_grad_enabled() and self.uses_memory():
            if keys is None or offsets is None:
                raise ValueError("training through the long-term memory needs keys= and offsets= (each window's "
                                 "video and first frame)")
            return memory_step(self.encoder, video, self.memory, keys, offsets, self.config.keep_ratio, kept=kept,
                               generator=self.generator)
        return self.encoder(video)

    def forward(self, video: torch.Tensor, keys: Sequence[str] | None = None, offsets: Sequence[int] | None = None,
                *, kept: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``video [B, 3, F, H, W]`` (``F <= window_frames``) -> per level ``[B, A * num_classes, T_l]``
        logits and ``[B, A * 2, T_l]`` deltas (:class:`~.head.THUMOSHead`)."""
        features = self.features(video, keys, offsets, kept=kept)
        return self.head_forward(features)

    def head_forward(self, features: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The temporal part on backbone features ``[B, T, C]``: reduction, TCM, THUMOS head."""
        x = self.reduction(features.transpose(1, 2)).transpose(1, 2)
        return self.head(self.temporal_consistency(x))
