"""Temporal action detection data: ground truth, per-video features and submissions.

Ground truth in the ActivityNet-1.3 layout and the THUMOS-14 variants in use::

    {"version": ..., "taxonomy": ..., "database": {<video id>: {
        "subset": "training" | "validation" | "testing" (THUMOS: "val" | "test" | "train"),
        "duration": seconds,                       # optional (G-TAD's thumos_gt.json has none)
        "annotations": [{"segment": [start, end], "label": "<class>"}, ...]}}}

Segments are seconds, numbers or numeric strings (G-TAD's THUMOS file); ``version`` and
``taxonomy`` are optional, and a bare ``database`` mapping is accepted. THUMOS' validation
annotations hold ``Ambiguous`` segments: ``read_ground_truth(..., ignore_labels=("Ambiguous",))``
drops them (the test annotations in use have none).

Predictions in the ActivityNet submission layout::

    {"version": ..., "external_data": {}, "results": {<video id>: [
        {"label": "<class>", "score": float, "segment": [start, end]}, ...]}}

(``label`` may be absent for proposal-only output). Features: one file per video,
``.npy`` ``[T, C]`` (ETAD's ``v_<id>.npy``) or ``.h5``, or one ``.h5`` file holding one
dataset per video (``pip install fastlocal[h5]``). :class:`DetectionDataset` rescales each
video's features to a fixed length with :func:`fastlocal.roi_align_1d` as ETAD does.

A problem in a file raises :class:`DatasetError` (a ``ValueError``) naming the file and the
video; a wrong argument type raises ``TypeError``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .._npy import npy_layout
from ..roi_align_1d import roi_align_1d
from .mstcn import DatasetError, _read_text

__all__ = [
    "DetectionDataset",
    "DetectionSample",
    "GroundTruth",
    "Predictions",
    "VideoAnnotations",
    "collate_detection",
    "read_feature_file",
    "read_ground_truth",
    "read_predictions",
    "rescale_features",
    "write_predictions",
]

_OUT_OF_RANGE = ("error", "clip", "drop", "keep")


def _source_name(source: object) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<dict>"


def load_json(source: str | os.PathLike | Mapping, what: str) -> tuple[Mapping, str]:
    """``(data, name)`` from a JSON file path or an already loaded mapping; DatasetError naming
    the file (with line and column) when it is missing, not UTF-8 or not valid JSON."""
    if isinstance(source, Mapping):
        return source, "<dict>"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{what} must be a JSON file path or a dict, got {type(source).__name__}")
    path = Path(source)
    text = _read_text(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}:{exc.colno}: malformed JSON in the {what} ({exc.msg})") from None
    if not isinstance(data, Mapping):
        raise DatasetError(f"{path}: the {what} must be a JSON object, got a {type(data).__name__}")
    return data, os.fspath(path)


def _number(value: object, where: str, what: str) -> float:
    """``float(value)`` for a JSON number or numeric string (THUMOS files store strings); finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DatasetError(f"{where}: {what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise DatasetError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DatasetError(f"{where}: {what} must be finite, got {value!r}")
    return number


def _segment(entry: object, where: str) -> tuple[float, float]:
    if not isinstance(entry, Mapping) or "segment" not in entry:
        raise DatasetError(f"{where}: expected an object with a 'segment' [start, end], got {entry!r}")
    seg = entry["segment"]
    if isinstance(seg, (str, bytes)) or not isinstance(seg, Sequence) or len(seg) != 2:
        raise DatasetError(f"{where}: 'segment' must be [start, end] in seconds, got {seg!r}")
    start, end = _number(seg[0], where, "segment start"), _number(seg[1], where, "segment end")
    if end < start:
        raise DatasetError(f"{where}: segment [{seg[0]}, {seg[1]}] ends before it starts")
    return start, end


def _label(entry: Mapping, where: str) -> str:
    if "label" not in entry:
        raise DatasetError(f"{where}: missing 'label'")
    label = entry["label"]
    if not isinstance(label, str):
        raise DatasetError(f"{where}: 'label' must be a string (a class name), got {label!r}")
    return label


@dataclass(frozen=True)
class VideoAnnotations:
    """The ground truth of one video: ``segments [N, 2]`` float64 seconds and their ``labels``."""

    video_id: str
    subset: str | None
    duration: float | None
    segments: np.ndarray
    labels: tuple[str, ...]


@dataclass(frozen=True)
class GroundTruth:
    """Videos of a ground-truth file in file order, after subset, blocked and label filtering.

    ``classes`` lists the labels in order of first appearance (the class order of
    ActivityNet's ``eval_detection.py``); ``source`` names the file for messages.
    """

    videos: dict[str, VideoAnnotations]
    source: str = "<dict>"
    classes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        seen: dict[str, None] = {}
        for video in self.videos.values():
            seen.update(dict.fromkeys(video.labels))
        object.__setattr__(self, "classes", list(seen))

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_instances(self) -> int:
        return sum(len(v.labels) for v in self.videos.values())


def read_ground_truth(
    source: str | os.PathLike | Mapping | GroundTruth,
    *,
    subset: str | Iterable[str] | None = None,
    blocked: Iterable[str] = (),
    ignore_labels: Iterable[str] = (),
    classes: Sequence[str] | None = None,
    out_of_range: str = "error",
) -> GroundTruth:
    """Read ground truth in the ActivityNet layout (or a THUMOS variant, module docstring).

    Args:
        source: a JSON file path, the loaded dict, or a :class:`GroundTruth` (filtered again).
        subset: keep videos whose ``subset`` is this (or one of these); None keeps all.
        blocked: video ids to leave out (ActivityNet's blocked list).
        ignore_labels: labels whose annotations are dropped (``("Ambiguous",)`` for THUMOS val).
        classes: the known class names; a label outside them raises (None: any label).
        out_of_range: a segment outside ``[0, duration]`` (where a duration is given):
            ``"error"`` (default), ``"clip"`` to it (ETAD's loader), ``"drop"`` the annotation,
            or ``"keep"`` it as is (what ``eval_detection.py`` sees).
    """
    if out_of_range not in _OUT_OF_RANGE:
        raise ValueError(f"out_of_range must be one of {_OUT_OF_RANGE}, got {out_of_range!r}")
    subsets = _names("subset", subset)
    blocked_ids, ignored = _names("blocked", blocked), _names("ignore_labels", ignore_labels)
    known = None if classes is None else set(_names("classes", classes))
    if isinstance(source, GroundTruth):
        videos = [(vid, v.subset, v.duration, list(zip(v.segments.tolist(), v.labels, strict=True)))
                  for vid, v in source.videos.items()]
        name = source.source
    else:
        data, name = load_json(source, "ground truth")
        videos = list(_database_entries(data, name))
    out: dict[str, VideoAnnotations] = {}
    for vid, video_subset, duration, entries in videos:
        if (subsets is not None and video_subset not in subsets) or vid in blocked_ids:
            continue
        segs, labels = [], []
        for i, (seg, label) in enumerate(entries):
            where = f"{name}: video {vid!r}, annotation {i}"
            if label in ignored:
                continue
            if known is not None and label not in known:
                raise DatasetError(f"{where}: unknown label {label!r} (not among the {len(known)} given classes)")
            start, end = seg
            if duration is not None and (start < 0 or end > duration):
                if out_of_range == "error":
                    raise DatasetError(
                        f"{where}: segment [{start}, {end}] lies outside the video [0, {duration}] s "
                        "(out_of_range='clip', 'drop' or 'keep' to accept it)")
                if out_of_range == "drop":
                    continue
                if out_of_range == "clip":
                    start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
            segs.append((start, end))
            labels.append(label)
        out[vid] = VideoAnnotations(vid, video_subset, duration, np.asarray(segs, np.float64).reshape(-1, 2),
                                    tuple(labels))
    return GroundTruth(out, name)


def _names(name: str, values: object) -> set[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return {values}
    if not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a string or an iterable of strings, got {type(values).__name__}")
    out = set()
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"{name} must hold strings, got {value!r}")
        out.add(value)
    return out


def _database_entries(data: Mapping, name: str):
    """``(video id, subset, duration, [((start, end), label), ...])`` per video, in file order."""
    if "database" in data:
        database = data["database"]
    elif data and all(isinstance(v, Mapping) and "annotations" in v for v in data.values()):
        database = data  # a bare database mapping
    else:
        raise DatasetError(f"{name}: not a ground-truth file: no 'database' key (keys: {sorted(data)[:8]})")
    if not isinstance(database, Mapping):
        raise DatasetError(f"{name}: 'database' must map video ids to entries, got a {type(database).__name__}")
    for vid, entry in database.items():
        where = f"{name}: video {vid!r}"
        if not isinstance(entry, Mapping):
            raise DatasetError(f"{where}: expected an object, got {entry!r}")
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list):
            raise DatasetError(f"{where}: 'annotations' must be a list, got {annotations!r}")
        duration = entry.get("duration")
        if duration is not None:
            duration = _number(duration, where, "duration")
            if duration <= 0:
                raise DatasetError(f"{where}: duration must be > 0 seconds, got {duration}")
        video_subset = entry.get("subset")
        if video_subset is not None and not isinstance(video_subset, str):
            raise DatasetError(f"{where}: 'subset' must be a string, got {video_subset!r}")
        anns = []
        for i, ann in enumerate(annotations):
            at = f"{where}, annotation {i}"
            seg = _segment(ann, at)
            anns.append((seg, _label(ann, at)))
        yield str(vid), video_subset, duration, anns


# ----------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """Predictions as flat arrays, in file order (video by video, then entry by entry).

    ``videos`` lists the video ids (those with an empty list included); row i belongs to
    ``videos[video_index[i]]``, spans ``segments[i]`` (float64 seconds), scores ``scores[i]``
    (int64 when every score is an integer, as pandas would store them, else float64) and has
    label ``labels[label_index[i]]`` (``label_index`` is None for proposals without labels).
    """

    videos: list[str]
    video_index: np.ndarray
    segments: np.ndarray
    scores: np.ndarray
    labels: list[str] | None
    label_index: np.ndarray | None
    source: str = "<dict>"

    def __len__(self) -> int:
        return int(self.video_index.size)


def read_predictions(
    source: str | os.PathLike | Mapping | Predictions,
    *,
    labels: bool = True,
    blocked: Iterable[str] = (),
) -> Predictions:
    """Read a submission (``{"results": {video: [{label, score, segment}, ...]}}``).

    ``labels=False`` reads proposals (``label`` ignored, may be absent). Videos in ``blocked``
    are left out. Scores must be finite numbers, segments finite with start <= end.
    """
    blocked_ids = _names("blocked", blocked)
    if isinstance(source, Predictions):
        if labels and source.label_index is None:
            raise ValueError(f"{source.source}: these predictions have no labels")
        keep_video = np.array([v not in blocked_ids for v in source.videos], bool)
        if keep_video.all():
            return source
        rows = keep_video[source.video_index]
        new_id = np.cumsum(keep_video) - 1
        kept = [v for v, k in zip(source.videos, keep_video, strict=True) if k]
        return Predictions(kept, new_id[source.video_index[rows]], source.segments[rows], source.scores[rows],
                           source.labels,
                           None if source.label_index is None else source.label_index[rows], source.source)
    data, name = load_json(source, "predictions")
    if "results" not in data:
        raise DatasetError(f"{name}: not a submission file: no 'results' key (keys: {sorted(data)[:8]})")
    results = data["results"]
    if not isinstance(results, Mapping):
        raise DatasetError(f"{name}: 'results' must map video ids to lists of predictions")
    videos, video_index, segs, scores = [], [], [], []
    label_ids: dict[str, int] = {}
    label_index = []
    for vid, entries in results.items():
        if vid in blocked_ids:
            continue
        where = f"{name}: video {vid!r}"
        if not isinstance(entries, list):
            raise DatasetError(f"{where}: expected a list of predictions, got {type(entries).__name__}")
        v = len(videos)
        videos.append(str(vid))
        for i, entry in enumerate(entries):
            at = f"{where}, prediction {i}"
            segs.append(_segment(entry, at))
            score = entry.get("score")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise DatasetError(f"{at}: 'score' must be a finite number, got {score!r}")
            scores.append(score)
            video_index.append(v)
            if labels:
                label_index.append(label_ids.setdefault(_label(entry, at), len(label_ids)))
    # pandas keeps int64 when every score is an int: the official sort runs on that dtype
    all_int = all(isinstance(s, int) for s in scores)
    if all_int and scores and any(abs(s) >= 2**63 for s in scores):
        all_int = False
    score_array = np.asarray(scores, np.int64 if all_int and scores else np.float64)
    return Predictions(videos, np.asarray(video_index, np.int64), np.asarray(segs, np.float64).reshape(-1, 2),
                       score_array, list(label_ids) if labels else None,
                       np.asarray(label_index, np.int64) if labels else None, name)


def write_predictions(
    path: str | os.PathLike,
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    version: str = "VERSION 1.3",
    external_data: Mapping | None = None,
) -> Path:
    """Write ``results`` (video id -> list of ``{"label", "score", "segment"}``, segments in
    seconds) as an ActivityNet submission JSON; checked first so that :func:`read_predictions`
    reads it back. NumPy and torch scalars are written as plain numbers."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike path, got {type(path).__name__}")
    if not isinstance(results, Mapping):
        raise TypeError(f"results must map video ids to lists of predictions, got {type(results).__name__}")
    out: dict[str, list[dict[str, Any]]] = {}
    for vid, entries in results.items():
        if not isinstance(vid, str):
            raise TypeError(f"results keys must be video id strings, got {vid!r}")
        rows = []
        for i, entry in enumerate(entries):
            at = f"results[{vid!r}][{i}]"
            if not isinstance(entry, Mapping):
                raise TypeError(f"{at} must be a dict with 'score' and 'segment', got {type(entry).__name__}")
            row: dict[str, Any] = {}
            if "label" in entry:
                if not isinstance(entry["label"], str):
                    raise TypeError(f"{at}['label'] must be a class name string, got {entry['label']!r}")
                row["label"] = entry["label"]
            row["score"] = _plain(entry.get("score"), f"{at}['score']")
            seg = entry.get("segment")
            if seg is None or len(seg) != 2:
                raise ValueError(f"{at}['segment'] must be [start, end] in seconds, got {seg!r}")
            start, end = _plain(seg[0], f"{at}['segment'][0]"), _plain(seg[1], f"{at}['segment'][1]")
            if end < start:
                raise ValueError(f"{at}['segment'] ends before it starts: [{start}, {end}]")
            row["segment"] = [start, end]
            rows.append(row)
        out[vid] = rows
    path = Path(path)
    doc = {"version": version, "results": out, "external_data": dict(external_data or {})}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _plain(value: object, name: str) -> float:
    if hasattr(value, "item"):  # NumPy / torch scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


# ----------------------------------------------------------------------------- features


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading .h5 features needs h5py: pip install 'fastlocal[h5]'") from None
    return h5py


def _is_h5(path: Path) -> bool:
    return path.suffix.lower() in (".h5", ".hdf5")


def read_feature_file(path: str | os.PathLike, *, key: str | None = None, video: str | None = None) -> np.ndarray:
    """The ``[T, C]`` features of one video as float32.

    ``path`` is a ``.npy`` file (memory-mapped, header checked against the file size), or
    an ``.h5``/``.hdf5`` file: its dataset ``key``, or its only dataset when ``key`` is None.
    DatasetError naming the file (and ``video`` when given) when it is missing, unreadable,
    not ``[T, C]`` with T, C >= 1, or holds NaN or inf.
    """
    path = Path(path)
    where = f"{path}" + (f" (video {video!r})" if video is not None else "")
    if not path.is_file():
        raise DatasetError(f"features file not found: {where}")
    if _is_h5(path):
        array = _read_h5(path, key, where)
    else:
        try:
            shape, dtype, fortran, offset = npy_layout(path)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read features {where}: {exc}") from None
        if dtype.kind not in "fiu":
            raise DatasetError(f"{where}: features must be real numbers, got dtype {dtype}")
        array = np.memmap(path, dtype, "r", offset, shape, "F" if fortran else "C") if 0 not in shape else None
        if len(shape) != 2 or array is None:
            raise DatasetError(f"{where}: features must be a [T, C] array with T, C >= 1, got shape {tuple(shape)}")
    features = np.asarray(array, np.float32)
    if features.ndim != 2 or 0 in features.shape:
        raise DatasetError(f"{where}: features must be a [T, C] array with T, C >= 1, got shape {features.shape}")
    if not np.isfinite(features).all():
        t = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise DatasetError(f"{where}: features hold NaN or inf (first at time step {t})")
    return features


def _read_h5(path: Path, key: str | None, where: str) -> np.ndarray:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if key is None:
                names = [k for k in f if isinstance(f[k], h5py.Dataset)]
                if len(names) != 1:
                    raise DatasetError(f"{where}: expected one dataset in the file, found {names[:5]} "
                                       "(give the dataset key)")
                key = names[0]
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise DatasetError(f"{where}: no dataset {key!r} in the file")
            data = f[key]
            if data.dtype.kind not in "fiu":
                raise DatasetError(f"{where}: dataset {key!r} must hold real numbers, got dtype {data.dtype}")
            return data[()]
    except OSError as exc:
        raise DatasetError(f"cannot read features {where}: {exc}") from None


def rescale_features(features: torch.Tensor, length: int) -> torch.Tensor:
    """Resample ``features [C, T]`` to ``[C, length]`` as ETAD's ``torchvision_pool_data``:
    one RoI over ``[0, T]`` pooled into ``length`` bins with aligned RoI-align (linear
    interpolation, adaptive ``ceil(T / length)`` samples per bin). ETAD also rounds the
    features to float16 first (to dodge non-determinism on GPU); this does not."""
    if features.ndim != 2:
        raise ValueError(f"features must be [C, T], got shape {tuple(features.shape)}")
    T = features.shape[1]
    rois = torch.tensor([[0.0, 0.0, float(T)]], dtype=torch.float64 if features.dtype == torch.float64 else
                        torch.float32)
    return roi_align_1d(features[None], rois, length, aligned=True)[0]


# ----------------------------------------------------------------------------- dataset


class DetectionSample(NamedTuple):
    """One video: ``features [C, L]`` float32, ``segments [N, 2]`` float32 in [0, 1] (fractions
    of the duration), ``labels [N]`` int64 class indices, the video id and its duration (s)."""

    features: torch.Tensor
    segments: torch.Tensor
    labels: torch.Tensor
    video_id: str
    duration: float


def collate_detection(batch: Sequence[DetectionSample]) -> dict[str, Any]:
    """Stack a batch: ``features [B, C, L]``; ``segments``, ``labels``, ``video_ids`` and
    ``durations`` as lists (videos hold different numbers of actions)."""
    return {
        "features": torch.stack([s.features for s in batch]),
        "segments": [s.segments for s in batch],
        "labels": [s.labels for s in batch],
        "video_ids": [s.video_id for s in batch],
        "durations": [s.duration for s in batch],
    }


class DetectionDataset(torch.utils.data.Dataset):
    """Videos of one subset with their features rescaled to ``length`` steps (ETAD's feature mode).

    Args:
        ground_truth: ground-truth JSON path, dict, or :class:`GroundTruth`.
        features: a directory of per-video files named by ``name_template`` (``.npy`` ``[T, C]``
            or ``.h5``), or one ``.h5``/``.hdf5`` file with a dataset per video (named by
            ``name_template`` too, default ``"{video}"``).
        subset: the ``subset`` value to keep (None: every video).
        length: L, the fixed temporal length (ETAD: 128).
        name_template: the file (or dataset) name of a video, ``"{video}.npy"`` by default for
            a directory; ETAD's ActivityNet features are ``"v_{video}.npy"``.
        classes: class names giving the label indices (default: the labels of every subset of
            the ground truth, sorted); a label outside them raises.
        missing: a video without features: ``"error"`` (default) or ``"skip"`` it (the skipped
            ids are in ``self.skipped``, and a warning gives the count).
        out_of_range, ignore_labels, blocked: as :func:`read_ground_truth` (``"clip"`` is ETAD's).
        min_action: drop videos whose actions all span at most this fraction of the video
            (ETAD uses 0.01 on its training subset; default 0 keeps every video).
    """

    def __init__(
        self,
        ground_truth: str | os.PathLike | Mapping | GroundTruth,
        features: str | os.PathLike,
        subset: str | None = None,
        *,
        length: int = 128,
        name_template: str | None = None,
        classes: Sequence[str] | None = None,
        missing: str = "error",
        out_of_range: str = "error",
        ignore_labels: Iterable[str] = (),
        blocked: Iterable[str] = (),
        min_action: float = 0.0,
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an int >= 1, got {length!r}")
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        if isinstance(min_action, bool) or not isinstance(min_action, (int, float)) or not 0 <= min_action < 1:
            raise ValueError(f"min_action must be a fraction in [0, 1), got {min_action!r}")
        if not isinstance(features, (str, os.PathLike)):
            raise TypeError(f"features must be a directory or .h5 file path, got {type(features).__name__}")
        self.features_path = Path(features)
        self.h5_file = _is_h5(self.features_path)
        if not self.h5_file and not self.features_path.is_dir():
            raise DatasetError(f"features directory not found: {self.features_path}")
        if self.h5_file and not self.features_path.is_file():
            raise DatasetError(f"features file not found: {self.features_path}")
        self.name_template = name_template or ("{video}" if self.h5_file else "{video}.npy")
        if "{video}" not in self.name_template:
            raise ValueError(f"name_template must contain '{{video}}', got {self.name_template!r}")
        self.length = length
        everything = read_ground_truth(ground_truth, ignore_labels=ignore_labels, classes=classes, out_of_range="keep")
        # default classes from every subset, sorted: the same indices for training and validation
        self.classes = list(classes) if classes is not None else sorted(
            {c for v in everything.videos.values() for c in v.labels})
        self.ground_truth = read_ground_truth(everything, subset=subset, blocked=blocked, out_of_range=out_of_range)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        videos = []
        for vid, video in self.ground_truth.videos.items():
            if video.duration is None:
                raise DatasetError(f"{self.ground_truth.source}: video {vid!r} has no 'duration', which "
                                   "normalising its segments needs")
            spans = (video.segments[:, 1] - video.segments[:, 0]) / video.duration
            if min_action > 0 and not (spans > min_action).any():
                continue
            videos.append(vid)
        if not videos:
            raise DatasetError(f"{self.ground_truth.source}: no video in subset {subset!r}")
        available = self._available(videos)
        self.skipped = [v for v in videos if v not in available]
        if self.skipped:
            if missing == "error":
                raise DatasetError(
                    f"{len(self.skipped)} of {len(videos)} video(s) in {self.ground_truth.source} have no features, "
                    f"e.g. video {self.skipped[0]!r}: {self._where(self.skipped[0])} (missing='skip' leaves them out)")
            warnings.warn(f"DetectionDataset: skipped {len(self.skipped)} of {len(videos)} video(s) without features "
                          f"in {self.features_path}", stacklevel=2)
        self.video_ids = [v for v in videos if v in available]
        if not self.video_ids:
            raise DatasetError(f"no video of {self.ground_truth.source} has features in {self.features_path}")

    def _where(self, vid: str) -> str:
        name = self.name_template.format(video=vid)
        return f"{self.features_path}[{name!r}]" if self.h5_file else os.fspath(self.features_path / name)

    def _available(self, videos: list[str]) -> set[str]:
        if self.h5_file:
            h5py = _h5py()
            try:
                with h5py.File(self.features_path, "r") as f:
                    return {v for v in videos if self.name_template.format(video=v) in f}
            except OSError as exc:
                raise DatasetError(f"cannot read features file {self.features_path}: {exc}") from None
        return {v for v in videos if (self.features_path / self.name_template.format(video=v)).is_file()}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.video_ids)

    def raw_features(self, index: int) -> np.ndarray:
        """The ``[T, C]`` float32 features of video ``index`` as stored."""
        vid = self.video_ids[index]
        name = self.name_template.format(video=vid)
        if self.h5_file:
            return read_feature_file(self.features_path, key=name, video=vid)
        return read_feature_file(self.features_path / name, video=vid)

    def __getitem__(self, index: int) -> DetectionSample:
        vid = self.video_ids[index]
        video = self.ground_truth.videos[vid]
        features = torch.from_numpy(np.ascontiguousarray(self.raw_features(index).T))
        segments = torch.from_numpy(video.segments / video.duration).float()
        labels = torch.tensor([self.class_index[label] for label in video.labels], dtype=torch.int64)
        return DetectionSample(rescale_features(features, self.length), segments, labels, vid, video.duration)
