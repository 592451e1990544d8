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

from .._npy import npy_layout

__all__ = [
    "DatasetError",
    "MSTCNDataset",
    "Video",
    "read_bundle",
    "read_features",
    "read_labels",
    "read_mapping",
    "write_labels",
]


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


def _path(name: str, path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike path, got {type(path).__name__}")
    return Path(path)


def _read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped); DatasetError naming the
    file when it is missing, unreadable or not UTF-8 (with the line and byte offset)."""
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be decoded); "
            f"save the {what} as UTF-8"
        ) from None


def read_mapping(path: str | os.PathLike) -> list[str]:
    """Class names ordered by index from ``mapping.txt`` (``"<index> <name>"`` per line)."""
    path = _path("path", path)
    entries: dict[int, str] = {}
    for number, line in enumerate(_read_text(path, "class mapping file").splitlines(), 1):
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
    path = _path("path", path)
    names = [Path(line.strip()).stem for line in _read_text(path, "split file").splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"split file lists no videos: {path}")
    return names


def read_labels(path: str | os.PathLike, class_index: dict[str, int]) -> np.ndarray:
    """Frame labels ``[T]`` int64 from a groundTruth file (one class name per line)."""
    path = _path("path", path)
    names = [line.strip() for line in _read_text(path, "ground-truth file").splitlines()]
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
    """Write frame labels ``[T]`` (indices) as a UTF-8 groundTruth file of class names."""
    path = _path("path", path)
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D sequence of class indices, got shape {labels.shape} {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"labels must be class indices in [0, {len(classes)}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    path.write_text("".join(classes[int(i)] + "\n" for i in labels), encoding="utf-8")


def read_features(path: str | os.PathLike) -> np.ndarray:
    """The ``[D, T]`` features array of a ``.npy`` file, memory-mapped (read only).

    The header is checked against the file's size before anything is mapped, so a file whose
    header claims more data than it holds is refused instead of allocated. DatasetError
    naming the file when it is missing, empty, a directory, not a ``.npy`` file (``.npz``,
    pickle, text), truncated, of a non-numeric dtype, or not ``[D, T]`` with D, T >= 1.
    """
    path = _path("path", path)
    if not path.is_file():
        raise DatasetError(f"features file not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        shape, dtype, fortran, offset = npy_layout(path)
    except OSError as exc:
        raise DatasetError(f"cannot read features {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DatasetError(f"cannot read features: {exc}") from None
    if dtype.kind not in "fiu":
        raise DatasetError(f"{path}: features must be real numbers, got dtype {dtype}")
    if len(shape) != 2 or 0 in shape:
        raise DatasetError(
            f"{path}: features must be a [D, T] array with D >= 1 channels and T >= 1 frames, got shape {tuple(shape)}"
        )
    try:
        return np.memmap(path, dtype, "r", offset, tuple(shape), "F" if fortran else "C")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read features {path}: {exc}") from None


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
        self.root = _path("root", root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset directory not found: {self.root}")
        if isinstance(split, bool) or not isinstance(split, int):
            raise TypeError(f"split must be an int (the K of splits/<subset>.split<K>.bundle), got {split!r}")
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
        features = read_features(feature_path)
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
        try:
            sampled = np.ascontiguousarray(features[:, ::step].T, dtype=np.float32)
        except OSError as exc:  # an I/O error while the mapped file is read
            raise DatasetError(f"cannot read features {feature_path}: {exc}") from None
        return Video(name, sampled, labels[::step].copy(), labels, step)

    def feature_dim(self) -> int:
        """D, read from the first video's features header."""
        return int(read_features(self.root / "features" / f"{self.names[0]}.npy").shape[0])
