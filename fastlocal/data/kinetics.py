"""Kinetics-style video classification lists, clip sampling and transforms, as VidTr's released
code (amazon-science/gluonmm ``kinetics_datasets.py`` and ``video_transforms.py``) does them.

**List file.** One video per line, space separated, no header: ``<path> <unused> <label>``
(GluonCV's ``path num_frames label``; the middle field is ignored). ``<path>`` is joined to a
root directory (the released code concatenates strings, so its root needs a trailing ``/``;
here ``root / path`` needs none, and an absolute path is used as is). It names a video file or a
folder of JPEG/PNG frames (:mod:`fastlocal.data.video`). Blank lines are skipped; a line without
exactly three fields, a label that is not an integer, or one outside ``[0, num_classes)``
raises :class:`~fastlocal.data.mstcn.DatasetError` naming the file and line.

**Training clip** (:class:`KineticsClips`): T = ``num_frames`` frames ``sample_rate`` apart from a
random start (:func:`train_frame_indices`); short side resized to ``short_side`` (256); a random
scale in ``scale`` (x[1, 1.25]); a horizontal flip with probability 1/2; a random
``crop_size`` (224) square crop; values / 255, then ImageNet mean/std. Output ``[3, T, S, S]``.

**Test views** (:class:`KineticsViews`): ``test_clips`` (10) clips evenly spaced over the video
(:func:`view_frame_indices`) times ``test_crops`` (3) square crops of the frames resized to short
side ``crop_size`` (left, centre, right; top, centre, bottom for portrait frames). Output
``[test_crops * test_clips, 3, T, S, S]``, crop-major (view ``c * test_clips + k`` is crop ``c`` of
clip ``k``; the released code orders the crops left, right, centre: the average is the same), for
:class:`fastlocal.metrics.ClassificationMetrics` to average softmax scores per video. ``test_crops=1``
is a centre crop of frames resized to ``crop_size`` (the released single-view validation instead
resizes to ``short_side`` first).

Resizing is bilinear with half-pixel centres and no antialiasing (as the released ``cv2.resize``
with ``INTER_LINEAR``) in float32, without rounding back to uint8 in between.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .mstcn import DatasetError, _path, _read_text
from .video import VideoReader

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClipSpec",
    "KineticsClips",
    "KineticsViews",
    "VideoEntry",
    "crop_offsets",
    "frames_to_float",
    "make_views",
    "normalize",
    "read_video_list",
    "resize",
    "resize_short_side",
    "train_clip",
    "train_frame_indices",
    "view_frame_indices",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm IMAGENET_DEFAULT_MEAN, used by the released code
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VideoEntry:
    """One line of a list file: the video's ``path`` (root joined), its ``label``, the list ``line``."""

    path: Path
    label: int
    line: int
    name: str  # the path as written in the list


def read_video_list(
    list_file: str | os.PathLike, root: str | os.PathLike, num_classes: int | None = None
) -> list[VideoEntry]:
    """The entries of a ``<path> <unused> <label>`` list file, paths joined to ``root``.

    Labels must be integers in ``[0, num_classes)`` (``>= 0`` when ``num_classes`` is None).
    Files are not opened here: a missing video raises when it is read.
    """
    list_file, root = _path("list_file", list_file), _path("root", root)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}")
    entries = []
    for number, line in enumerate(_read_text(list_file, "video list file").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise DatasetError(f"{list_file}:{number}: expected '<path> <unused> <label>' (3 space-separated "
                               f"fields; paths cannot hold spaces), got {len(fields)} fields in {line!r}")
        name, _, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise DatasetError(f"{list_file}:{number}: the label must be an integer, got {label_text!r}") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise DatasetError(f"{list_file}:{number}: label {label} is out of range (must be {bound})")
        entries.append(VideoEntry(root / name, label, number, name))
    if not entries:
        raise DatasetError(f"video list file lists no videos: {list_file}")
    return entries


def _check_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"ClipSpec.{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ClipSpec:
    """Clip sampling and transform settings; the defaults are VidTr-S 8x8 at 224 as released.

    ``num_frames`` T and ``sample_rate`` (frames between samples); training: ``short_side`` the
    resize before scale jitter, ``scale`` the jitter range ``(low, high)`` with
    ``1 <= low <= high``, ``flip`` a horizontal flip with probability 1/2, ``crop_size`` S <=
    ``short_side``; test: frames resized to short side S, ``test_clips`` clips x ``test_crops``
    (1: centre, or 3) crops; ``mean``/``std`` per RGB channel on values in [0, 1].
    """

    num_frames: int = 8
    sample_rate: int = 8
    short_side: int = 256
    crop_size: int = 224
    scale: tuple[float, float] = (1.0, 1.25)
    flip: bool = True
    test_clips: int = 10
    test_crops: int = 3
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("num_frames", "sample_rate", "short_side", "crop_size", "test_clips"):
            _check_int(name, getattr(self, name))
        if self.test_crops not in (1, 3) or isinstance(self.test_crops, bool):
            raise ValueError(f"ClipSpec.test_crops must be 1 (centre) or 3 (two ends and centre), got "
                             f"{self.test_crops!r}")
        if self.crop_size > self.short_side:
            raise ValueError(f"ClipSpec.crop_size ({self.crop_size}) must be <= short_side ({self.short_side})")
        low, high = _floats("scale", self.scale, 2)
        if not 1.0 <= low <= high:
            raise ValueError(f"ClipSpec.scale must be (low, high) with 1 <= low <= high, got {self.scale!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"ClipSpec.flip must be a bool, got {self.flip!r}")
        _floats("mean", self.mean, 3)
        if min(_floats("std", self.std, 3)) <= 0:
            raise ValueError(f"ClipSpec.std must be > 0, got {self.std!r}")


def _floats(name: str, value: object, n: int) -> tuple[float, ...]:
    ok = isinstance(value, Sequence) and len(value) == n and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        raise ValueError(f"ClipSpec.{name} must be {n} finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An int uniform in ``[low, high]`` (both included)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def train_frame_indices(
    length: int, num_frames: int, sample_rate: int, generator: torch.Generator | None = None
) -> np.ndarray:
    """``[num_frames]`` int64 frame indices of a training clip of a ``length``-frame video, as released.

    A video longer than ``num_frames * sample_rate`` (= L) gets an end uniform in ``[L, length - 1]``
    and T indices ``linspace(end - L, end, T)`` floored, clipped to ``end - 1``. A shorter video gets
    ``length // sample_rate`` indices ``linspace(0, length, ...)`` padded with its last frame.
    """
    span = num_frames * sample_rate
    if length <= span:
        count = length // sample_rate
        index = np.concatenate([np.linspace(0, length, num=count), np.full(num_frames - count, length)])
        return np.clip(index, 0, length - 1).astype(np.int64)
    end = _randint(span, length - 1, generator)
    start = end - span
    return np.clip(np.linspace(start, end, num=num_frames), start, end - 1).astype(np.int64)


def view_frame_indices(length: int, num_frames: int, sample_rate: int, clips: int) -> np.ndarray:
    """``[clips, num_frames]`` int64 frame indices of the evenly spaced test clips, as released.

    Clip ``k`` starts at ``floor(k * (length - L + 1) / clips)`` with L = ``num_frames * sample_rate``
    (all at 0 when ``length < L``) and steps ``sample_rate`` frames while the next step stays inside
    the video; otherwise it repeats the frame it is on.
    """
    span = num_frames * sample_rate
    if length < span:
        starts = np.zeros(clips, np.int64)
    else:
        tick = (length - span + 1) / clips
        starts = np.array([int(tick * k) for k in range(clips)], np.int64)
    out = np.empty((clips, num_frames), np.int64)
    for k, offset in enumerate(starts):
        for t in range(num_frames):
            out[k, t] = offset
            if offset + sample_rate < length:
                offset += sample_rate
    return out


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``frames [..., H, W]`` (float) so the short side is ``size`` and the long side
    ``int(size * long / short)`` (as released); unchanged when the short side already is ``size``."""
    h, w = frames.shape[-2:]
    if min(h, w) == size:
        return frames
    new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return resize(frames, new)


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``frames [..., H, W]`` (float) to ``size = (height, width)``, bilinear (see the module docstring)."""
    lead = frames.shape[:-2]
    flat = frames.reshape(-1, 1, *frames.shape[-2:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(*lead, *size)


def normalize(clip: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(clip / 255 - mean) / std`` per channel of ``clip [3, ...]`` with values in [0, 255]."""
    shape = (3,) + (1,) * (clip.dim() - 1)
    m = torch.tensor(mean, dtype=clip.dtype).reshape(shape)
    s = torch.tensor(std, dtype=clip.dtype).reshape(shape)
    return (clip / 255.0 - m) / s


def frames_to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8 [T, H, W, 3]`` frames -> float32 ``[3, T, H, W]`` in [0, 255]; ValueError for another shape."""
    x = torch.as_tensor(np.asarray(frames))
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(x.shape)}")
    return x.permute(3, 0, 1, 2).to(torch.float32)


def train_clip(frames: np.ndarray | torch.Tensor, spec: ClipSpec = ClipSpec(),
               generator: torch.Generator | None = None) -> torch.Tensor:
    """The training transform of ``frames uint8 [T, H, W, 3]`` -> float32 ``[3, T, S, S]`` (S = crop_size).

    Random draws, in order: the scale factor, the flip, the crop's x then y offset, all from
    ``generator`` (torch's global generator when None).
    """
    x = resize_short_side(frames_to_float(frames), spec.short_side)
    low, high = spec.scale
    factor = low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))
    h, w = x.shape[-2:]
    scaled = (int(h * factor), int(w * factor))
    if scaled != (h, w):
        x = resize(x, scaled)
    if spec.flip and float(torch.rand((), generator=generator)) < 0.5:
        x = x.flip(-1)
    h, w = x.shape[-2:]  # short side >= short_side >= crop_size: the scale factor is >= 1
    size = spec.crop_size
    left, top = _randint(0, w - size, generator), _randint(0, h - size, generator)
    return normalize(x[..., top:top + size, left:left + size], spec.mean, spec.std).contiguous()


def crop_offsets(height: int, width: int, size: int, crops: int = 3) -> list[tuple[int, int]]:
    """``(top, left)`` of the ``crops`` (1 or 3) square test crops of side ``size`` in a frame whose
    short side is at least ``size``: along the long side (the width of a square frame), the start, the
    centre and the end (3) or the centre (1); centred (floored) along the short side."""
    if min(height, width) < size:
        raise ValueError(f"the frame's short side must be at least the crop size {size}, got {height}x{width}")
    step_y, step_x = (height - size) // 2, (width - size) // 2
    if width >= height:
        positions = [(step_y, 0), (step_y, step_x), (step_y, 2 * step_x)]
    else:
        positions = [(0, step_x), (step_y, step_x), (2 * step_y, step_x)]
    return positions if crops == 3 else positions[1:2]


def make_views(frames: np.ndarray | torch.Tensor, spec: ClipSpec = ClipSpec()) -> torch.Tensor:
    """The test views of ``frames uint8 [clips * T, H, W, 3]`` (the clips of :func:`view_frame_indices`
    one after another) -> float32 ``[crops * clips, 3, T, S, S]``, crop-major."""
    x = resize_short_side(frames_to_float(frames), spec.crop_size)
    T, size = spec.num_frames, spec.crop_size
    if x.shape[1] != spec.test_clips * T:
        raise ValueError(f"frames must hold test_clips x num_frames = {spec.test_clips} x {T} frames, "
                         f"got {x.shape[1]}")
    clips = x.reshape(3, spec.test_clips, T, *x.shape[-2:]).transpose(0, 1)  # [clips, 3, T, H, W]
    views = [clips[..., top:top + size, left:left + size]
             for top, left in crop_offsets(*x.shape[-2:], size, spec.test_crops)]
    out = torch.stack(views).flatten(0, 1)  # [crops * clips, 3, T, S, S]
    return normalize(out.transpose(0, 1), spec.mean, spec.std).transpose(0, 1).contiguous()


class _KineticsList(torch.utils.data.Dataset):
    def __init__(self, list_file: str | os.PathLike, root: str | os.PathLike, spec: ClipSpec | None,
                 num_classes: int | None) -> None:
        self.spec = ClipSpec() if spec is None else spec
        if not isinstance(self.spec, ClipSpec):
            raise TypeError(f"spec must be a ClipSpec or None, got {type(self.spec).__name__}")
        self.entries = read_video_list(list_file, root, num_classes)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]


class KineticsClips(_KineticsList):
    """Training clips of a Kinetics-style list: item ``i`` is ``(clip [3, T, S, S] float32, label, name)``.

    Args:
        list_file: the ``<path> <unused> <label>`` list.
        root: the directory the paths are joined to.
        spec: clip and transform settings (:class:`ClipSpec`; default VidTr-S 8x8 at 224).
        num_classes: labels must be below it (checked when the list is read).
        generator: the random source of clip starts and augmentations; torch's global generator
            when None, which DataLoader workers seed differently (a generator given here is copied
            into every worker, so workers would repeat each other's draws).
    """

    def __init__(self, list_file: str | os.PathLike, root: str | os.PathLike, spec: ClipSpec | None = None,
                 num_classes: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__(list_file, root, spec, num_classes)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        entry = self.entries[index]
        video = VideoReader(entry.path)
        spec = self.spec
        indices = train_frame_indices(video.num_frames, spec.num_frames, spec.sample_rate, self.generator)
        return train_clip(video.read(indices), spec, self.generator), entry.label, entry.name


class KineticsViews(_KineticsList):
    """Test views of a Kinetics-style list: item ``i`` is ``(views [V, 3, T, S, S] float32, label, name)``
    with V = ``test_crops * test_clips`` (30 by default), crop-major (see :func:`make_views`).

    Args as :class:`KineticsClips` (no randomness here).
    """

    def __init__(self, list_file: str | os.PathLike, root: str | os.PathLike, spec: ClipSpec | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__(list_file, root, spec, num_classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        entry = self.entries[index]
        video = VideoReader(entry.path)
        spec = self.spec
        indices = view_frame_indices(video.num_frames, spec.num_frames, spec.sample_rate, spec.test_clips)
        return make_views(video.read(indices.reshape(-1)), spec), entry.label, entry.name
