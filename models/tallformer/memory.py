"""TALLFormer's long-term memory step (released ``vedatad/partial_feedback/memory_bank.py`` and
``engines/train_engine.py``), on :class:`fastlocal.selective.LongMemory`.

The memory holds one array per video, ``[ceil(frames / 2), C]`` (the pooled backbone features
before the reduction convolutions, row r covering frames 2r and 2r + 1), initialised by one
offline pass in training mode (:func:`encode_video`, drop path active, as released). A
training window of ``n`` chunks starting at frame ``offset`` (even) covers memory rows
``offset / 2 + j * R + i`` for chunk ``j`` and row ``i < R`` (``R = chunk_frames / 2``).
:func:`memory_step`:

1. picks the kept chunks, the same for the whole batch (:func:`fastlocal.selective.sample_indices`
   with ``"random"``: ``max(1, round(n * keep_ratio))`` sorted distinct chunks; 0.15 of 15 is 2,
   0.4 of 15 is 6, as the released ``int(n * ratio)``; the two counts differ only where
   ``n * ratio`` has a fractional part >= 0.5);
2. encodes the kept chunks with autograd;
3. reads the other chunks' rows from the memory (rows past the video's end, where the window
   was zero-padded, are zeros, as released);
4. puts everything back in temporal order;
5. overwrites the memory rows of the kept chunks with their detached fresh features (rows past
   the end are not written).

:class:`fastlocal.selective.SelectiveEncoder` does the same for one whole video per key; a
TALLFormer window is a part of its video, hence this row-offset version over the same memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fastlocal.selective import LongMemory, sample_indices

from ..backbones.chunks import ChunkEncoder

__all__ = ["encode_video", "memory_rows", "memory_step"]


def memory_rows(offset: int, chunks: int, rows_per_chunk: int) -> torch.Tensor:
    """Memory rows of a window starting at frame ``offset`` (even): ``[chunks, rows_per_chunk]`` int64."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0 or offset % 2:
        raise ValueError(f"a window's offset must be an even frame index >= 0 (memory rows hold frame pairs), "
                         f"got {offset!r}")
    return offset // 2 + torch.arange(chunks * rows_per_chunk, dtype=torch.int64).view(chunks, rows_per_chunk)


def _stored_rows(memory: LongMemory, key: str, channels: int) -> int:
    if key not in memory:
        raise KeyError(f"the long-term memory ({memory.storage}) has no features for video {key!r}: build it first "
                       "(python -m fastlocal.models tallformer init-memory, or TALLFormerTask.init_memory)")
    shape = memory.shape(key)
    if len(shape) != 2 or shape[1] != channels:
        raise ValueError(f"the long-term memory holds features of shape {shape} for video {key!r}; the backbone "
                         f"gives [rows, {channels}]")
    return shape[0]


def memory_step(
    encoder: ChunkEncoder,
    video: torch.Tensor,
    memory: LongMemory,
    keys: Sequence[str],
    offsets: Sequence[int],
    keep_ratio: float,
    *,
    kept: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Backbone features of training windows through the long-term memory (module docstring).

    Args:
        encoder: the chunked backbone.
        video: ``[B, 3, F, H, W]`` windows (F >= one chunk; F / chunk_frames chunks, the last padded).
        memory: holds every video of ``keys`` (``[ceil(frames / 2), C]`` each).
        keys: the videos of the batch, ``B`` memory keys.
        offsets: each window's first frame in its video (even).
        keep_ratio: fraction of the chunks encoded with gradient, in (0, 1].
        kept: the kept chunk indices (sorted, distinct) instead of a random draw (tests).
        generator: CPU generator of the draw (default: the global RNG).
    Returns:
        ``[B, ceil(F / 2), C]`` features; only the kept chunks' rows carry gradient.
    """
    if not isinstance(memory, LongMemory):
        raise TypeError(f"memory must be a fastlocal.selective.LongMemory, got {type(memory).__name__}")
    chunks = encoder.split(video)  # [B, n, 3, chunk_frames, H, W]
    b, n = chunks.shape[:2]
    if len(keys) != b or len(offsets) != b:
        raise ValueError(f"keys and offsets must give one entry per video of the batch ({b}), got {len(keys)} "
                         f"and {len(offsets)}")
    if kept is None:
        kept = sample_indices(n, keep_ratio, "random", generator)
    kept = torch.as_tensor(kept, dtype=torch.int64).cpu()
    if kept.dim() != 1 or kept.numel() < 1 or bool((kept.diff() <= 0).any()) or int(kept[0]) < 0 \
            or int(kept[-1]) >= n:
        raise ValueError(f"kept must be sorted distinct chunk indices in [0, {n}), got {kept.tolist()}")
    rest = torch.ones(n, dtype=torch.bool)
    rest[kept] = False
    rest = rest.nonzero().flatten()
    fresh = encoder.encode_chunks(chunks[:, kept.to(chunks.device)])  # [B, k, R, C], with autograd
    rows_per_chunk, channels = fresh.shape[2:]
    out = fresh.new_zeros((b, n, rows_per_chunk, channels))
    for i, (key, offset) in enumerate(zip(keys, offsets, strict=True)):
        total = _stored_rows(memory, key, channels)
        rows = memory_rows(int(offset), n, rows_per_chunk)
        if rest.numel():
            wanted = rows[rest]
            valid = wanted < total
            stored = torch.zeros((*wanted.shape, channels), dtype=fresh.dtype)
            if bool(valid.any()):
                stored[valid] = memory.read(key, wanted[valid]).to(fresh.dtype)
            out[i, rest.to(out.device)] = stored.to(out.device)
    out = out.index_copy(1, kept.to(out.device), fresh)
    detached = fresh.detach()
    for i, (key, offset) in enumerate(zip(keys, offsets, strict=True)):
        total = memory.shape(key)[0]
        rows = memory_rows(int(offset), n, rows_per_chunk)[kept]
        valid = rows < total
        if bool(valid.any()):
            memory.write(key, rows[valid], detached[i][valid.to(detached.device)])
    return encoder.merge(out, video.shape[2])


@torch.no_grad()
def encode_video(
    encoder: ChunkEncoder,
    read: Callable[[int, int], torch.Tensor],
    num_frames: int,
    *,
    chunks_per_call: int = 15,
) -> torch.Tensor:
    """A whole video's features ``[ceil(num_frames / 2), C]`` float32 on the CPU, without autograd,
    ``chunks_per_call`` chunks at a time (the memory's offline initialisation; the encoder's
    train/eval mode is the caller's: released, training mode).

    ``read(start, end)`` gives frames ``[3, end - start, H, W]`` (normalised) of the video; the
    last piece is zero-padded to a whole chunk, as :meth:`ChunkEncoder.split` pads.
    """
    encoder.num_chunks(num_frames)  # ValueError for a video shorter than a chunk
    if isinstance(chunks_per_call, bool) or not isinstance(chunks_per_call, int) or chunks_per_call < 1:
        raise ValueError(f"chunks_per_call must be an int >= 1, got {chunks_per_call!r}")
    step = chunks_per_call * encoder.chunk_frames
    device = next(encoder.parameters()).device
    pieces = []
    for start in range(0, num_frames, step):
        end = min(start + step, num_frames)
        frames = read(start, end)
        if frames.dim() != 4 or frames.shape[:2] != (3, end - start):
            raise ValueError(f"read({start}, {end}) must give frames [3, {end - start}, H, W], "
                             f"got {tuple(frames.shape)}")
        chunks = encoder.split(torch.nn.functional.pad(
            frames[None], (0, 0, 0, 0, 0, max(encoder.chunk_frames - (end - start), 0))).to(device))
        features = encoder.encode_chunks(chunks).flatten(1, 2)[0]
        pieces.append(features[: -(-(end - start) // encoder.stride)].float().cpu())
    return torch.cat(pieces)
