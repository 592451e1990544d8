"""Reader for the MS-TCN dataset layout (GTEA, 50Salads, Breakfast as distributed with MS-TCN).

::

    DIR/mapping.txt                     "<index> <class name>" per line
    DIR/features/<video>.npy            float array [D, T] (I3D features: D = 2048)
    DIR/groundTruth/<video>.txt         one class name per frame (T lines)
    DIR/splits/train.split<K>.bundle    one "<video>.txt" per line
    DIR/splits/test.split<K>.bundle

``sample_rate`` keeps every n-th frame of the features and labels for training (50Salads
uses 2, as MS-TCN); predictions are repeated ``sample_rate`` times to go back to the
full frame rate for evaluation (:meth:`Video.upsample`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DatasetError", "MSTCNDataset", "Video", "read_bundle", "read_labels", "read_mapping", "write_labels"]


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


def read_mapping(path: str | os.PathLike) -> list[str]:
    """Class names ordered by index from ``mapping.txt`` (``"<index> <name>"`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class mapping file not found: {path}")
    entries: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{number}: expected '<index> <class name>', got {line!r}")
        index, name = int(parts[0]), parts[1]
        if index in entries or name in entries.values():
            raise DatasetError(f"{path}:{number}: duplicate class index or name in {line!r}")
        entries[index] = name
    if not entries:
        raise DatasetError(f"class mapping file is empty: {path}")
    if sorted(entries) != list(range(len(entries))):
        raise DatasetError(f"{path}: class indices must be 0..{len(entries) - 1}, got {sorted(entries)}")
    return [entries[i] for i in range(len(entries))]


def read_bundle(path: str | os.PathLike) -> list[str]:
    """Video names (file extension removed) listed in a split bundle."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file not found: {path}")
    names = [Path(line.strip()).stem for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"split file lists no videos: {path}")
    return names


def read_labels(path: str | os.PathLike, class_index: dict[str, int]) -> np.ndarray:
    """Frame labels ``[T]`` int64 from a groundTruth file (one class name per line)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ground-truth file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DatasetError(f"ground-truth file is empty: {path}")
    unknown = sorted({n for n in names if n not in class_index})
    if unknown:
        line = next(i for i, n in enumerate(names, 1) if n not in class_index)
        raise DatasetError(f"{path}:{line}: unknown class name(s) {unknown[:5]} (not in mapping.txt)")
    return np.fromiter((class_index[n] for n in names), dtype=np.int64, count=len(names))


def write_labels(path: str | os.PathLike, labels: Sequence[int] | np.ndarray, classes: Sequence[str]) -> None:
    """Write frame labels ``[T]`` (indices) as a groundTruth file of class names."""
    Path(path).write_text("".join(classes[int(i)] + "\n" for i in labels))


@dataclass
class Video:
    """One video: ``features [T', D]`` float32 and ``labels [T']`` int64 at the sampled rate,
    ``full_labels [T]`` at the original rate (for evaluation)."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    full_labels: np.ndarray
    sample_rate: int

    def upsample(self, pred: np.ndarray) -> np.ndarray:
        """Predictions at the sampled rate ``[T']`` -> ``[T]`` at the original rate (each repeated)."""
        return np.repeat(np.asarray(pred), self.sample_rate)[: self.full_labels.size]


class MSTCNDataset:
    """The videos of one split of a dataset in the MS-TCN layout, loaded on access.

    Args:
        root: the dataset directory (holding ``mapping.txt``, ``features/``, ``groundTruth/``, ``splits/``).
        split: split number K (``splits/<subset>.split<K>.bundle``).
        subset: ``"train"`` or ``"test"``.
        sample_rate: keep every n-th frame (>= 1).
        length_mismatch: ``"error"`` (default) when the features and the ground truth have
            different frame counts, or ``"truncate"`` to the shorter as MS-TCN's loader does.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: int = 1,
        subset: str = "train",
        *,
        sample_rate: int = 1,
        length_mismatch: str = "error",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset directory not found: {self.root}")
        if subset not in ("train", "test"):
            raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise ValueError(f"sample_rate must be an int >= 1, got {sample_rate!r}")
        if length_mismatch not in ("error", "truncate"):
            raise ValueError(f"length_mismatch must be 'error' or 'truncate', got {length_mismatch!r}")
        self.split, self.subset = split, subset
        self.sample_rate, self.length_mismatch = sample_rate, length_mismatch
        self.classes = read_mapping(self.root / "mapping.txt")
        self.class_index = {name: i for i, name in enumerate(self.classes)}
        bundle = self.root / "splits" / f"{subset}.split{split}.bundle"
        if not bundle.is_file():
            available = sorted(p.name for p in (self.root / "splits").glob("*.bundle"))
            raise DatasetError(f"split file not found: {bundle} (available: {available or 'none'})")
        self.names = read_bundle(bundle)
        missing = [n for n in self.names if not (self.root / "features" / f"{n}.npy").is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} video(s) of {bundle.name} have no features file, e.g. "
                               f"{self.root / 'features' / (missing[0] + '.npy')}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Video]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int) -> Video:
        name = self.names[index]
        feature_path = self.root / "features" / f"{name}.npy"
        try:
            features = np.load(feature_path)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read features {feature_path}: {exc}") from exc
        if features.ndim != 2 or features.shape[1] == 0:
            raise DatasetError(f"{feature_path}: features must be a [D, T] array, got shape {features.shape}")
        labels = read_labels(self.root / "groundTruth" / f"{name}.txt", self.class_index)
        T = features.shape[1]
        if labels.size != T:
            if self.length_mismatch == "error":
                raise DatasetError(
                    f"video {name!r}: {feature_path} has {T} frames but groundTruth/{name}.txt has "
                    f"{labels.size} lines (length_mismatch='truncate' keeps the shorter, as MS-TCN)")
            T = min(T, labels.size)
            features, labels = features[:, :T], labels[:T]
        step = self.sample_rate
        sampled = np.ascontiguousarray(features[:, ::step].T, dtype=np.float32)
        return Video(name, sampled, labels[::step].copy(), labels, step)

    def feature_dim(self) -> int:
        """D, read from the first video's features header."""
        return int(np.load(self.root / "features" / f"{self.names[0]}.npy", mmap_mode="r").shape[0])
