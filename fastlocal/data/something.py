"""Something-Something v1 / v2 frame folders and label files, TSN segment sampling and TSN's
training and test transforms, as the GTA paper trains and tests 2-D backbones (its supplementary
material: "the same data augmentation as TSN"; the recipes in mit-han-lab/temporal-shift-module's
``ops/dataset.py``, ``ops/transforms.py`` and ``tools/gen_label_sthv{1,2}.py``).

**Layout.** ``<root>/<id>/`` holds the JPEG frames of video ``<id>`` (``00001.jpg``, ... as v1
ships; v2 users extract frames into the same layout; any ``.jpg``/``.jpeg``/``.png`` names read in
natural order, :mod:`fastlocal.data.video`). Frame positions here are 0-based (TSM's file numbers
are these plus one). The label files, in one ``annotations`` directory, are those users have:

- **v1** (CSV, ``;``-separated, no header): ``something-something-v1-labels.csv`` has one class
  name per line; the class index is the name's position in **sorted** order, as TSM/TRN's
  ``gen_label_sthv1.py`` assigns it (so checkpoints trained with them agree).
  ``something-something-v1-{train,validation}.csv`` hold ``<id>;<class name>`` lines.
- **v2** (JSON): ``something-something-v2-labels.json`` maps class name -> index (a string or an
  int; they must be 0..C-1). ``something-something-v2-{train,validation}.json`` is a list of
  ``{"id", "label", "template", "placeholders"}`` objects; the class is the ``template`` with its
  ``[`` ``]`` brackets removed (``"Putting [something] onto [something]"``), as TSM's
  ``gen_label_sthv2.py``; ``label`` is the filled-in caption and is not used.

Missing or malformed label files, unknown class names and missing frame folders raise
:class:`~fastlocal.data.mstcn.DatasetError` naming the file (and line or entry).

**Sampling** (TSN, ``num_segments`` S = 8 or 16): the video's n frames are cut into S segments
of ``n // S`` frames; training takes a uniform random frame in each
(:func:`segment_train_indices`), testing the centre of each of S equal segments of length n / S,
``int(n / S / 2 + k * n / S)`` (:func:`segment_test_indices`). The multi-clip protocol shifts that
position within every segment: clip ``j`` of N takes fraction ``(1/2 + j / N) mod 1`` of the
segment, so clip 0 is the centre view and N = 2 is TSM's ``twice_sample`` (centres, then starts).

**Training transform** (:func:`train_clip`): every frame resized to ``frame_size`` (240 x 320 as
the GTA paper; None keeps the decoded size, as TSM), TSN's multi-scale crop
(:func:`multiscale_crop_boxes`: crop sides ``int(min(H, W) * scale)`` for scales 1, .875, .75,
.66, a side within 3 pixels of ``crop_size`` snapped to it, height and width scale indices at
most ``max_distort`` apart, one of 13 fixed positions on a quarter grid), resized to
``crop_size`` square, a horizontal flip with probability 1/2 when the class allows it (see below),
ImageNet mean/std. Output ``[3, S, crop, crop]`` float32.

**Flip rule** (``flip``): horizontal flips turn "left to right" into "right to left".

- ``"no-left-right"`` (default, the GTA paper: "we do not flip the clips which include the words
  left or right in their class labels"): classes whose name holds the *word* ``left`` or
  ``right`` (case-insensitive, whole words: ``upright`` does not count) are never flipped. On
  SSv2 (and v1, same names) these are 86/87 ``Pulling something from left to right`` / ``...
  right to left``, 93/94 ``Pushing ...``, 166/167 ``Turning the camera left / right while
  filming something``, and also 50 ``Plugging something into something but pulling it right
  out as you remove your hand`` (the word "right", not a direction: the literal rule leaves it
  unflipped, which costs only augmentation).
- ``"swap"`` (mmaction2's ``flip_label_map`` {86: 87, 93: 94, 166: 167} both ways): every class is
  flipped, and a left/right class takes the label of the class whose name is its own with
  ``left`` and ``right`` exchanged; a left/right class without such a partner (50) is not flipped.
- ``"none"``: no flip (TSM's ``main.py`` turns the flip off for Something-Something and Jester).
- ``"all"``: TSN's flip for every class (for datasets without directions).

**Test views** (:func:`make_views`): frames resized to ``frame_size`` (if set), then the short side
to ``test_short_side`` (if set; TSM tests with ``frame_size=None, test_short_side=256``), then
``test_crops`` square crops: 1 centre crop (the paper: 240 x 320 -> centre 224, the default) or 3
along the long side (start, centre, end; :func:`fastlocal.data.kinetics.crop_offsets`), for each
of ``test_clips`` clips. Output ``[test_crops * test_clips, 3, S, crop, crop]``, crop-major (view
``c * test_clips + j`` is crop ``c`` of clip ``j``), for
:class:`fastlocal.metrics.ClassificationMetrics` to average per video.

Resizing is :func:`fastlocal.data.kinetics.resize` (bilinear, half-pixel centres, no antialiasing,
float32, no rounding to uint8 in between); TSM resizes with PIL's bilinear filter, which
antialiases when it shrinks, so downscaled pixels differ slightly.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .kinetics import IMAGENET_MEAN, IMAGENET_STD, crop_offsets, frames_to_float, normalize, resize, resize_short_side
from .mstcn import DatasetError, _path, _read_text
from .video import VideoReader

__all__ = [
    "FLIP_RULES",
    "LABEL_FILES",
    "SPLITS",
    "SomethingClips",
    "SomethingEntry",
    "SomethingSpec",
    "SomethingViews",
    "find_label_files",
    "flip_targets",
    "has_direction_word",
    "make_views",
    "multiscale_crop_boxes",
    "read_class_names",
    "read_split",
    "segment_test_indices",
    "segment_train_indices",
    "train_clip",
]

SPLITS = ("train", "validation")
LABEL_FILES = {1: "something-something-v1-{}.csv", 2: "something-something-v2-{}.json"}
FLIP_RULES = ("no-left-right", "swap", "none", "all")

_DIRECTION = re.compile(r"\b(left|right)\b", re.IGNORECASE)


# ----------------------------------------------------------------------------- label files


@dataclass(frozen=True)
class SomethingEntry:
    """One video of a split file: its ``id`` (the frame folder's name), ``label`` index, and
    ``where`` it was listed (``file:line`` or ``file entry i``) for error messages."""

    id: str
    label: int
    where: str


def _load_json(path: Path, what: str) -> object:
    try:
        return json.loads(_read_text(path, what))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None


def read_class_names(labels_file: str | os.PathLike) -> list[str]:
    """The class names in label order, from a v1 ``.csv`` (sorted, as TSM) or a v2 ``.json`` labels file."""
    path = _path("labels_file", labels_file)
    if path.suffix.lower() == ".json":
        data = _load_json(path, "labels file")
        if not isinstance(data, dict) or not data:
            raise DatasetError(f"labels file {path} must hold a non-empty JSON object of class name -> index")
        index: dict[int, str] = {}
        for name, value in data.items():
            number = value if isinstance(value, int) and not isinstance(value, bool) else \
                int(value) if isinstance(value, str) and value.strip().isdigit() else None
            if number is None:
                raise DatasetError(f"labels file {path}: the index of {name!r} must be an integer, got {value!r}")
            if number in index:
                raise DatasetError(f"labels file {path}: index {number} is given to both {index[number]!r} and "
                                   f"{name!r}")
            index[number] = name
        if sorted(index) != list(range(len(index))):
            raise DatasetError(f"labels file {path}: the indices must be 0..{len(index) - 1}, got "
                               f"{sorted(set(index) - set(range(len(index))))[:5]} outside it")
        return [index[i] for i in range(len(index))]
    if path.suffix.lower() != ".csv":
        raise DatasetError(f"labels file {path} must be a v1 .csv or a v2 .json file")
    names = [line.strip() for line in _read_text(path, "labels file").splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"labels file lists no classes: {path}")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DatasetError(f"labels file {path} lists class {name!r} twice")
        seen.add(name)
    return sorted(names)


def read_split(split_file: str | os.PathLike, class_names: Sequence[str],
               labels_file: str | os.PathLike | None = None) -> list[SomethingEntry]:
    """The videos of a v1 ``.csv`` (``<id>;<class name>`` lines) or v2 ``.json`` split file, their
    class names turned into indices of ``class_names`` (``labels_file`` only names it in errors)."""
    path = _path("split_file", split_file)
    index = {name: i for i, name in enumerate(class_names)}
    source = f" (not in {labels_file})" if labels_file is not None else ""
    entries = []
    if path.suffix.lower() == ".json":
        data = _load_json(path, "split file")
        if not isinstance(data, list):
            raise DatasetError(f"split file {path} must hold a JSON list of videos, got {type(data).__name__}")
        for i, item in enumerate(data):
            where = f"{path} entry {i}"
            if not isinstance(item, dict) or not isinstance(item.get("id"), str | int) \
                    or isinstance(item.get("id"), bool) or not isinstance(item.get("template"), str):
                raise DatasetError(f"{where}: expected an object with an 'id' and a 'template' string (a test split "
                                   f"without templates has no labels), got {str(item)[:120]}")
            name = item["template"].replace("[", "").replace("]", "")
            if name not in index:
                raise DatasetError(f"{where} (id {item['id']}): unknown class {name!r}{source}")
            entries.append(SomethingEntry(str(item["id"]), index[name], where))
    elif path.suffix.lower() == ".csv":
        for number, line in enumerate(_read_text(path, "split file").splitlines(), 1):
            if not line.strip():
                continue
            video, sep, name = line.strip().partition(";")
            where = f"{path}:{number}"
            if not sep or not video or not name:
                raise DatasetError(f"{where}: expected '<id>;<class name>', got {line!r}")
            if name not in index:
                raise DatasetError(f"{where} (id {video}): unknown class {name!r}{source}")
            entries.append(SomethingEntry(video, index[name], where))
    else:
        raise DatasetError(f"split file {path} must be a v1 .csv or a v2 .json file")
    if not entries:
        raise DatasetError(f"split file lists no videos: {path}")
    return entries


def find_label_files(annotations: str | os.PathLike, split: str,
                     version: int | None = None) -> tuple[int, Path, Path]:
    """``(version, labels_file, split_file)`` of ``split`` (``"train"`` or ``"validation"``) in the
    ``annotations`` directory; ``version`` None picks the one whose labels file is there."""
    directory = _path("annotations", annotations)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if version is not None and (isinstance(version, bool) or version not in LABEL_FILES):
        raise ValueError(f"version must be 1, 2 or None, got {version!r}")
    if not directory.is_dir():
        raise DatasetError(f"annotations directory not found: {directory}")
    if version is None:
        present = [v for v, pattern in LABEL_FILES.items() if (directory / pattern.format("labels")).is_file()]
        if len(present) != 1:
            names = " or ".join(p.format("labels") for p in LABEL_FILES.values())
            raise DatasetError(f"annotations directory {directory} must hold exactly one of {names}, found "
                               f"{len(present)}" + ("; pass version=1 or 2" if present else ""))
        version = present[0]
    pattern = LABEL_FILES[version]
    return version, directory / pattern.format("labels"), directory / pattern.format(split)


# ----------------------------------------------------------------------------- flip rule


def has_direction_word(name: str) -> bool:
    """True when the class ``name`` holds the word ``left`` or ``right`` (whole word, any case)."""
    return _DIRECTION.search(name) is not None


def _swap_directions(name: str) -> str:
    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        return other.capitalize() if word[0].isupper() else other

    return _DIRECTION.sub(swap, name)


def flip_targets(class_names: Sequence[str], rule: str = "no-left-right") -> np.ndarray:
    """``int64 [C]``: the label a flipped clip of each class takes, or -1 where the class is never flipped,
    under ``rule`` (one of :data:`FLIP_RULES`, see the module docstring)."""
    if rule not in FLIP_RULES:
        raise ValueError(f"flip rule must be one of {FLIP_RULES}, got {rule!r}")
    names = list(class_names)
    out = np.arange(len(names), dtype=np.int64)
    if rule == "none":
        out[:] = -1
    elif rule != "all":
        index = {name: i for i, name in enumerate(names)}
        for i, name in enumerate(names):
            if has_direction_word(name):
                out[i] = index.get(_swap_directions(name), -1) if rule == "swap" else -1
    return out


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SomethingSpec:
    """Sampling and transform settings; the defaults are the GTA paper's R2D-50 on SSv1/v2.

    ``num_segments`` S (8 or 16 in the paper; any >= 1); ``frame_size`` ``(height, width)`` every frame
    is resized to first (None: as decoded); ``crop_size`` the square network input; ``scales`` of the
    multi-scale crop (each in (0, 1]), ``max_distort`` (>= 0) and ``more_fix_crop`` (13 positions, or
    5 when False) as TSN's ``GroupMultiScaleCrop``; ``flip`` one of :data:`FLIP_RULES`; test:
    ``test_short_side`` (None or the short side after ``frame_size``), ``test_clips`` N (>= 1) x
    ``test_crops`` (1 or 3); ``mean``/``std`` per RGB channel on values in [0, 1].
    """

    num_segments: int = 8
    frame_size: tuple[int, int] | None = (240, 320)
    crop_size: int = 224
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_distort: int = 1
    more_fix_crop: bool = True
    flip: str = "no-left-right"
    test_short_side: int | None = None
    test_clips: int = 1
    test_crops: int = 1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        def is_int(value: object, low: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        def numbers(value: object) -> bool:
            return isinstance(value, tuple | list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)

        for name, low in (("num_segments", 1), ("crop_size", 1), ("max_distort", 0), ("test_clips", 1)):
            if not is_int(getattr(self, name), low):
                raise ValueError(f"SomethingSpec.{name} must be an int >= {low}, got {getattr(self, name)!r}")
        if self.frame_size is not None:
            if not (isinstance(self.frame_size, tuple | list) and len(self.frame_size) == 2
                    and all(is_int(v, self.crop_size) for v in self.frame_size)):
                raise ValueError(f"SomethingSpec.frame_size must be None or (height, width) ints >= crop_size "
                                 f"({self.crop_size}), got {self.frame_size!r}")
            object.__setattr__(self, "frame_size", tuple(self.frame_size))
        if self.test_short_side is not None and not is_int(self.test_short_side, self.crop_size):
            raise ValueError(f"SomethingSpec.test_short_side must be None or an int >= crop_size ({self.crop_size}), "
                             f"got {self.test_short_side!r}")
        if not (numbers(self.scales) and self.scales and all(0 < s <= 1 for s in self.scales)):
            raise ValueError(f"SomethingSpec.scales must be a non-empty tuple of numbers in (0, 1], got "
                             f"{self.scales!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not isinstance(self.more_fix_crop, bool):
            raise ValueError(f"SomethingSpec.more_fix_crop must be a bool, got {self.more_fix_crop!r}")
        if self.flip not in FLIP_RULES:
            raise ValueError(f"SomethingSpec.flip must be one of {FLIP_RULES}, got {self.flip!r}")
        if isinstance(self.test_crops, bool) or self.test_crops not in (1, 3):
            raise ValueError(f"SomethingSpec.test_crops must be 1 (centre) or 3 (along the long side), got "
                             f"{self.test_crops!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not (numbers(value) and len(value) == 3) or (name == "std" and min(value) <= 0):
                raise ValueError(f"SomethingSpec.{name} must be 3 finite numbers{' > 0' if name == 'std' else ''}, "
                                 f"got {value!r}")


# ----------------------------------------------------------------------------- sampling


def _check_counts(num_frames: int, num_segments: int) -> None:
    for name, value in (("num_frames", num_frames), ("num_segments", num_segments)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def segment_test_indices(num_frames: int, num_segments: int, clips: int = 1) -> np.ndarray:
    """``int64 [clips, num_segments]`` frame positions of the test clips: clip ``j`` takes
    ``int(tick * k + tick * ((1/2 + j / clips) mod 1))`` in segment ``k``, tick = num_frames / num_segments
    (clip 0 is TSN's centre sampling, ``clips=2`` TSM's ``twice_sample``), in float64 as TSM: for a segment
    count that is not a power of two, an index can be one below the exact floor (TSM's value)."""
    _check_counts(num_frames, num_segments)
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise ValueError(f"clips must be an int >= 1, got {clips!r}")
    tick = num_frames / num_segments
    out = np.empty((clips, num_segments), np.int64)
    for j in range(clips):
        # (1/2 + j/N) mod 1 as one division, so clips 0 and 1 of 2 are TSM's float formulas bit for bit
        shift = tick * (((clips + 2 * j) % (2 * clips)) / (2 * clips))
        out[j] = [int(shift + tick * k) for k in range(num_segments)]
    return np.minimum(out, num_frames - 1)


def segment_train_indices(num_frames: int, num_segments: int,
                          generator: torch.Generator | None = None) -> np.ndarray:
    """``int64 [num_segments]`` frame positions of a training clip: ``k * d + u_k`` with
    d = num_frames // num_segments and u_k uniform in ``[0, d)`` (TSN; frames past ``S * d`` unused).

    A video with fewer frames than segments gets the test centres instead (ordered, repeating frames);
    TSN and TSM give it frame 0 in every segment, which erases the order an order-aware model needs.
    """
    _check_counts(num_frames, num_segments)
    duration = num_frames // num_segments
    if duration == 0:
        return segment_test_indices(num_frames, num_segments)[0]
    draws = torch.randint(duration, (num_segments,), generator=generator).numpy()
    return np.arange(num_segments, dtype=np.int64) * duration + draws


def multiscale_crop_boxes(height: int, width: int, crop_size: int, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
                          max_distort: int = 1, more_fix_crop: bool = True) -> list[list[tuple[int, int, int, int]]]:
    """The crops TSN's multi-scale crop draws from, as ``(top, left, h, w)`` boxes grouped by size.

    Sizes: sides ``int(min(height, width) * s)`` for ``s`` in ``scales``, a side within 3 pixels of
    ``crop_size`` set to it (and cut to the frame), every (height i, width j) pair with
    ``|i - j| <= max_distort``, height-major. Positions of an ``h x w`` crop on the grid of steps
    ``((height - h) // 4, (width - w) // 4)``: the four corners and the centre, then (``more_fix_crop``)
    the middles of the four sides and the four quarter points, in TSN's order. A training crop draws a
    size group uniformly, then a position in it uniformly.
    """
    base = min(height, width)
    sides = [crop_size if abs(int(base * s) - crop_size) < 3 else int(base * s) for s in scales]
    groups = []
    for i, side_h in enumerate(sides):
        for j, side_w in enumerate(sides):
            if abs(i - j) > max_distort:
                continue
            h, w = min(side_h, height), min(side_w, width)
            sy, sx = (height - h) // 4, (width - w) // 4
            grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]  # (x, y) in steps, TSN's order
            if more_fix_crop:
                grid += [(0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
            groups.append([(y * sy, x * sx, h, w) for x, y in grid])
    return groups


# ----------------------------------------------------------------------------- transforms


def _frames(frames: np.ndarray | torch.Tensor, spec: SomethingSpec) -> torch.Tensor:
    x = frames_to_float(frames)  # [3, T, H, W]
    return x if spec.frame_size is None else resize(x, spec.frame_size)


def train_clip(frames: np.ndarray | torch.Tensor, spec: SomethingSpec = SomethingSpec(), flip: bool = True,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, bool]:
    """The training transform of ``frames uint8 [T, H, W, 3]`` -> ``(clip float32 [3, T, S, S], flipped)``.

    Random draws from ``generator``, in order: the crop size, its position, the flip coin (always drawn;
    a flip happens only when ``flip`` is True: the class allows it).
    """
    x = _frames(frames, spec)
    groups = multiscale_crop_boxes(*x.shape[-2:], spec.crop_size, spec.scales, spec.max_distort, spec.more_fix_crop)
    group = groups[int(torch.randint(len(groups), (), generator=generator))]
    top, left, h, w = group[int(torch.randint(len(group), (), generator=generator))]
    size = spec.crop_size
    x = resize(x[..., top:top + h, left:left + w], (size, size))
    flipped = flip and float(torch.rand((), generator=generator)) < 0.5
    if flipped:
        x = x.flip(-1)
    return normalize(x, spec.mean, spec.std).contiguous(), flipped


def make_views(frames: np.ndarray | torch.Tensor, spec: SomethingSpec = SomethingSpec()) -> torch.Tensor:
    """The test views of ``frames uint8 [clips * S, H, W, 3]`` (the clips of :func:`segment_test_indices`
    one after another) -> float32 ``[crops * clips, 3, S, size, size]``, crop-major."""
    x = _frames(frames, spec)
    if spec.test_short_side is not None:
        x = resize_short_side(x, spec.test_short_side)
    S, size, clips = spec.num_segments, spec.crop_size, spec.test_clips
    if x.shape[1] != clips * S:
        raise ValueError(f"frames must hold test_clips x num_segments = {clips} x {S} frames, got {x.shape[1]}")
    if min(x.shape[-2:]) < size:
        raise ValueError(f"frames of {tuple(x.shape[-2:])} are smaller than crop_size {size}: set "
                         "SomethingSpec.frame_size or test_short_side")
    x = x.reshape(3, clips, S, *x.shape[-2:]).transpose(0, 1)  # [clips, 3, S, H, W]
    offsets = crop_offsets(*x.shape[-2:], size, spec.test_crops)
    views = [x[..., top:top + size, left:left + size] for top, left in offsets]
    out = torch.stack(views).flatten(0, 1)  # [crops * clips, 3, S, size, size]
    return normalize(out.transpose(0, 1), spec.mean, spec.std).transpose(0, 1).contiguous()


# ----------------------------------------------------------------------------- datasets


class _SomethingSplit(torch.utils.data.Dataset):
    def __init__(self, root: str | os.PathLike, annotations: str | os.PathLike, split: str,
                 spec: SomethingSpec | None, version: int | None) -> None:
        self.spec = SomethingSpec() if spec is None else spec
        if not isinstance(self.spec, SomethingSpec):
            raise TypeError(f"spec must be a SomethingSpec or None, got {type(self.spec).__name__}")
        self.root = _path("root", root)
        self.version, self.labels_file, self.split_file = find_label_files(annotations, split, version)
        self.class_names = read_class_names(self.labels_file)
        self.entries = read_split(self.split_file, self.class_names, self.labels_file)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def _video(self, entry: SomethingEntry) -> VideoReader:
        folder = self.root / entry.id
        if not folder.is_dir():
            raise DatasetError(f"frame folder of video {entry.id} (listed at {entry.where}) not found: {folder}")
        return VideoReader(folder)


class SomethingClips(_SomethingSplit):
    """Training clips: item ``i`` is ``(clip [3, S, crop, crop] float32, label, id)``; the label is the
    flipped class's under ``spec.flip="swap"`` when the clip was flipped.

    Args:
        root: the directory of the ``<id>/`` frame folders.
        annotations: the directory of the label files (v1 CSV or v2 JSON names, see the module docstring).
        split: ``"train"`` (default) or ``"validation"``.
        spec: :class:`SomethingSpec` (default: the GTA paper's, 8 segments).
        version: 1 or 2; None picks the one whose labels file ``annotations`` holds.
        generator: the random source; torch's global generator when None (DataLoader workers seed it
            differently; a generator given here is copied into every worker, which then repeat draws).

    Attributes: ``class_names``, ``entries`` (:class:`SomethingEntry`), ``flip_targets`` (``int64 [C]``).
    """

    def __init__(self, root: str | os.PathLike, annotations: str | os.PathLike, split: str = "train",
                 spec: SomethingSpec | None = None, version: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(root, annotations, split, spec, version)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator
        self.flip_targets = flip_targets(self.class_names, self.spec.flip)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        entry = self.entries[index]
        video = self._video(entry)
        indices = segment_train_indices(video.num_frames, self.spec.num_segments, self.generator)
        target = int(self.flip_targets[entry.label])
        clip, flipped = train_clip(video.read(indices), self.spec, target >= 0, self.generator)
        return clip, target if flipped else entry.label, entry.id


class SomethingViews(_SomethingSplit):
    """Test views: item ``i`` is ``(views [V, 3, S, crop, crop] float32, label, id)`` with
    V = ``test_crops * test_clips`` (1 by default: the paper's single centre view), crop-major.

    Args as :class:`SomethingClips` (``split`` defaults to ``"validation"``; no randomness).
    """

    def __init__(self, root: str | os.PathLike, annotations: str | os.PathLike, split: str = "validation",
                 spec: SomethingSpec | None = None, version: int | None = None) -> None:
        super().__init__(root, annotations, split, spec, version)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        entry = self.entries[index]
        video = self._video(entry)
        indices = segment_test_indices(video.num_frames, self.spec.num_segments, self.spec.test_clips)
        return make_views(video.read(indices.reshape(-1)), self.spec), entry.label, entry.id
