"""Chunked video encoding (TALLFormer's ``ChunkVideoSwin``): a long video through a clip backbone,
32 frames at a time.

A video ``[B, 3, F, H, W]`` is cut into ``n = ceil(F / chunk_frames)`` chunks along time, the
last one zero-padded at the end (released ``forward_nochunk_inp_output``); every chunk goes
through the backbone on its own (no attention across chunks), giving ``chunk_frames / pt``
spatially averaged feature rows (``pt``: the backbone's temporal patch size, 2); the rows are
put back in temporal order and cut to ``ceil(F / pt)``, dropping those of the padding. With
Swin-B and 32-frame chunks: 16 rows of 1024 channels per chunk; a 480-frame THUMOS window is 15
chunks, ``[B, 240, 1024]``. A video shorter than one chunk is an error (the released pipeline
never feeds one; zero-padding most of a chunk would give features unlike any seen in training).

:meth:`ChunkEncoder.split` and :meth:`ChunkEncoder.encode_chunks` expose the two halves so the
long-term memory can encode only some chunks (``fastlocal.selective``) and
:meth:`ChunkEncoder.merge` reassembles them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastlocal import _validate as check

from .video_swin import VideoSwin

__all__ = ["CHUNK_FRAMES", "ChunkEncoder"]

CHUNK_FRAMES = 32  # TALLFormer's chunk_size


class ChunkEncoder(nn.Module):
    """Encode videos ``[B, 3, F, H, W]`` chunk by chunk into features ``[B, ceil(F / pt), C]``.

    ``backbone``: a :class:`~fastlocal.models.backbones.VideoSwin` without a head (its
    ``forward`` gives ``[N, T', C]``); ``chunk_frames``: frames per chunk, a multiple of the
    backbone's temporal patch size ``pt``. Train/eval mode, frozen stages and gradient
    checkpointing are the backbone's.
    """

    def __init__(self, backbone: VideoSwin, chunk_frames: int = CHUNK_FRAMES) -> None:
        super().__init__()
        if not isinstance(backbone, VideoSwin):
            raise TypeError(f"backbone must be a VideoSwin, got {type(backbone).__name__}")
        if backbone.head is not None:
            raise ValueError("backbone must have no classification head (VideoSwinConfig.num_classes=None)")
        check.integer("chunk_frames", chunk_frames, minimum=1)
        stride = backbone.config.patch_size[0]
        if chunk_frames % stride:
            raise ValueError(f"chunk_frames ({chunk_frames}) must be a multiple of the backbone's temporal "
                             f"patch size {stride}, so that every chunk's rows cover whole frame pairs")
        self.backbone = backbone
        self.chunk_frames = chunk_frames
        self.stride = stride

    @property
    def out_channels(self) -> int:
        """C, the backbone's feature channels (1024 for Swin-B, 768 for Swin-T)."""
        return self.backbone.out_channels

    @property
    def rows_per_chunk(self) -> int:
        """Feature rows of one chunk: ``chunk_frames / pt`` (16 for 32 frames)."""
        return self.chunk_frames // self.stride

    def num_chunks(self, frames: int) -> int:
        """Chunks of a ``frames``-frame video: ``ceil(frames / chunk_frames)``; ValueError if shorter than one."""
        check.integer("frames", frames, minimum=1)
        if frames < self.chunk_frames:
            raise ValueError(f"the video has {frames} frames, fewer than one chunk of {self.chunk_frames}: "
                             "pad or drop it before encoding")
        return -(-frames // self.chunk_frames)

    def num_rows(self, frames: int) -> int:
        """Feature rows of a ``frames``-frame video: ``ceil(frames / pt)``."""
        self.num_chunks(frames)
        return -(-frames // self.stride)

    def _check_video(self, video: object) -> torch.Tensor:
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be [batch, 3, frames, height, width], got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"video must be floating point (normalised frames), got {video.dtype}")
        return video

    def split(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, F, H, W]`` -> chunks ``[B, n, 3, chunk_frames, H, W]``, the last zero-padded at the end."""
        video = self._check_video(video)
        b, c, frames, h, w = video.shape
        n = self.num_chunks(frames)
        video = F.pad(video, (0, 0, 0, 0, 0, n * self.chunk_frames - frames))
        return video.view(b, c, n, self.chunk_frames, h, w).transpose(1, 2)

    def encode_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        """Chunks ``[..., 3, chunk_frames, H, W]`` -> features ``[..., rows_per_chunk, C]``, each chunk alone."""
        if not isinstance(chunks, torch.Tensor):
            raise TypeError(f"chunks must be a torch.Tensor, got {type(chunks).__name__}")
        if chunks.dim() < 5 or chunks.shape[-4] != 3 or chunks.shape[-3] != self.chunk_frames:
            raise ValueError(f"chunks must be [..., 3, {self.chunk_frames}, height, width], "
                             f"got shape {tuple(chunks.shape)}")
        lead = chunks.shape[:-4]
        out = self.backbone(chunks.reshape(-1, *chunks.shape[-4:]))
        return out.view(*lead, *out.shape[1:])

    def merge(self, features: torch.Tensor, frames: int) -> torch.Tensor:
        """Per-chunk features ``[B, n, rows_per_chunk, C]`` -> ``[B, ceil(frames / pt), C]`` in temporal order."""
        if not isinstance(features, torch.Tensor) or features.dim() != 4:
            raise ValueError("features must be a [batch, chunks, rows, channels] tensor")
        n = self.num_chunks(frames)
        if features.shape[1:3] != (n, self.rows_per_chunk):
            raise ValueError(f"features must have {n} chunks of {self.rows_per_chunk} rows for {frames} frames, "
                             f"got shape {tuple(features.shape)}")
        b, _, _, c = features.shape
        return features.reshape(b, n * self.rows_per_chunk, c)[:, : self.num_rows(frames)]

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Features of ``video`` ``[B, 3, F, H, W]`` (F >= chunk_frames): ``[B, ceil(F / pt), C]``."""
        return self.merge(self.encode_chunks(self.split(video)), video.shape[2])
