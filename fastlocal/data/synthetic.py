"""Synthetic action-segmentation data in the MS-TCN layout (:mod:`fastlocal.data.mstcn`).

``python -m fastlocal.data.synthetic --out DIR [--videos 40 --min-length 500 --max-length 5000 ...]``

Every video follows one of a few *activities* (a small grammar): background, then the
activity's ordered steps (each step may be skipped or repeated with small probabilities),
then background. Segment lengths are random shares of the video length. Features are
class-conditional: each class has an appearance vector, a frame is its class's appearance
plus Gaussian noise, plus a per-segment offset. Some classes come in *twins* with the same
appearance that occur in different activities, so a frame-wise classifier cannot tell them
apart and order and context matter; the noise makes frame-wise predictions flicker.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._output import output_directory
from .mstcn import write_labels

__all__ = ["MAX_VIDEO_VALUES", "SyntheticSpec", "generate", "main"]

MAX_VIDEO_VALUES = 2**26  # feature values of one video (max_length * dim), and classes * dim

_NAMES = ("take", "cut", "peel", "mix", "pour", "stir", "spread", "fold", "wash", "serve", "season", "open",
          "close", "shake", "scoop")


@dataclass(frozen=True)
class SyntheticSpec:
    """What :func:`generate` writes.

    ``videos`` count; lengths uniform in ``[min_length, max_length]``; ``classes`` C >= 6
    (class 0 is background); ``dim`` D of the features; ``activities`` grammar rules;
    ``twins`` pairs of classes that look alike; ``noise`` per-frame noise std (appearance
    vectors have unit RMS per dimension times ``signal``); ``splits`` K folds written as
    ``splits/{train,test}.split<k>.bundle``; ``seed`` >= 0. Counts are ints, ``signal``,
    ``noise`` and ``segment_noise`` finite and >= 0; one video's features (``max_length * dim``)
    and the class appearances (``classes * dim``) hold at most ``MAX_VIDEO_VALUES`` (2**26) values.
    """

    videos: int = 40
    min_length: int = 500
    max_length: int = 5000
    classes: int = 10
    dim: int = 64
    activities: int = 2
    twins: int = 1
    signal: float = 0.35
    noise: float = 1.0
    segment_noise: float = 0.15
    splits: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("videos", "min_length", "max_length", "classes", "dim", "activities", "twins", "splits", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {value!r}")
        for name in ("signal", "noise", "segment_noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a float, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.videos < 2 or self.splits < 1 or self.splits > self.videos:
            raise ValueError(f"need videos >= 2 and 1 <= splits <= videos, got videos={self.videos}, "
                             f"splits={self.splits}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.max_length * self.dim > MAX_VIDEO_VALUES or self.classes * self.dim > MAX_VIDEO_VALUES:
            raise ValueError(f"max_length * dim and classes * dim must be <= 2**26 (MAX_VIDEO_VALUES, the feature "
                             f"values of one video), got max_length={self.max_length}, classes={self.classes}, "
                             f"dim={self.dim}")
        if self.activities < 1:
            raise ValueError(f"activities must be >= 1, got {self.activities}")
        if self.twins < 0:
            raise ValueError(f"twins must be >= 0, got {self.twins}")
        plain = self.classes - 1 - 2 * self.twins
        if plain < 2 * self.activities:
            raise ValueError(f"classes={self.classes} leaves {plain} classes outside background and twins; "
                             f"need at least 2 per activity ({2 * self.activities})")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def _class_names(n: int) -> list[str]:
    names = ["background"]
    for i in range(1, n):
        base = _NAMES[(i - 1) % len(_NAMES)]
        names.append(base if i <= len(_NAMES) else f"{base}{(i - 1) // len(_NAMES) + 1}")
    return names


def _grammar(spec: SyntheticSpec, rng: np.random.Generator) -> tuple[list[list[int]], np.ndarray]:
    """Activity step lists and the appearance index of every class (twins share one)."""
    others = rng.permutation(np.arange(1, spec.classes))
    twin_classes = others[: 2 * spec.twins].reshape(spec.twins, 2)
    plain = others[2 * spec.twins:]
    groups = np.array_split(plain, spec.activities)
    steps = [list(map(int, g)) for g in groups]
    for i, (a, b) in enumerate(twin_classes):
        # each twin goes after the first (activity-specific) step, so its context names it
        for member, act in ((a, i % spec.activities), (b, (i + 1) % spec.activities)):
            steps[act].insert(1 + (i // spec.activities) % max(len(steps[act]) - 1, 1), int(member))
    appearance = np.arange(spec.classes)
    for a, b in twin_classes:
        appearance[b] = appearance[a]
    return steps, appearance


def _video_labels(steps: list[int], length: int, rng: np.random.Generator) -> np.ndarray:
    sequence = [0]
    for step in steps:
        r = rng.random()
        if r < 0.08 and step != steps[0]:
            continue  # skipped step
        sequence.append(step)
        if r > 0.95:
            sequence.extend([0, step])  # interrupted and resumed
    sequence.append(0)
    share = rng.uniform(0.5, 1.5, len(sequence))
    share[[0, -1]] *= 0.4  # short background at both ends
    bounds = np.round(np.cumsum(share) / share.sum() * length).astype(np.int64)
    seg_lengths = np.diff(np.concatenate([[0], bounds]))
    seg_lengths = np.maximum(seg_lengths, 1)
    seg_lengths[-1] += length - seg_lengths.sum()
    while seg_lengths[-1] < 1:  # rounding ate the last segment: take frames from the longest
        longest = int(seg_lengths[:-1].argmax())
        seg_lengths[longest] -= 1
        seg_lengths[-1] += 1
    return np.repeat(np.asarray(sequence, np.int64), seg_lengths)


def generate(out: str | os.PathLike, spec: SyntheticSpec | None = None) -> Path:
    """Write a synthetic dataset to ``out`` (created if missing); returns its path."""
    spec = SyntheticSpec() if spec is None else spec
    if not isinstance(spec, SyntheticSpec):
        raise TypeError(f"spec must be a SyntheticSpec or None, got {type(spec).__name__}")
    root = output_directory(out)
    rng = np.random.default_rng(spec.seed)
    for sub in ("features", "groundTruth", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    classes = _class_names(spec.classes)
    (root / "mapping.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(classes)))
    steps, appearance = _grammar(spec, rng)
    looks = rng.standard_normal((spec.classes, spec.dim)) * spec.signal
    names = []
    for v in range(spec.videos):
        name = f"video{v:03d}"
        length = int(rng.integers(spec.min_length, spec.max_length + 1))
        labels = _video_labels(steps[v % spec.activities], length, rng)
        change = np.flatnonzero(np.diff(labels)) + 1
        seg_id = np.zeros(length, np.int64)
        seg_id[change] = 1
        seg_id = np.cumsum(seg_id)
        offsets = rng.standard_normal((seg_id[-1] + 1, spec.dim)) * spec.segment_noise
        features = looks[appearance[labels]] + offsets[seg_id] + rng.standard_normal((length, spec.dim)) * spec.noise
        np.save(root / "features" / f"{name}.npy", features.T.astype(np.float32))
        write_labels(root / "groundTruth" / f"{name}.txt", labels, classes)
        names.append(name)
    order = rng.permutation(len(names))
    folds = np.array_split(order, spec.splits)
    for k, fold in enumerate(folds, 1):
        test = sorted(names[i] for i in fold)
        train = sorted(set(names) - set(test))
        (root / "splits" / f"train.split{k}.bundle").write_text("".join(f"{n}.txt\n" for n in train))
        (root / "splits" / f"test.split{k}.bundle").write_text("".join(f"{n}.txt\n" for n in test))
    return root


def main(argv: list[str] | None = None) -> int:
    defaults = SyntheticSpec()
    parser = argparse.ArgumentParser(prog="python -m fastlocal.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset directory to write")
    for name in ("videos", "min_length", "max_length", "classes", "dim", "activities", "twins", "splits", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("signal", "noise", "segment_noise"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--small", action="store_true", help="a tiny dataset: 8 videos of 100-300 frames, 2 splits")
    args = vars(parser.parse_args(argv))
    out, small = args.pop("out"), args.pop("small")
    if small:
        args.update(videos=8, min_length=100, max_length=300, splits=2, dim=16)
    try:
        spec = SyntheticSpec(**args)
        root = generate(out, spec)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    print(f"wrote {spec.videos} videos ({spec.classes} classes, {spec.dim}-D features, {spec.splits} splits) to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
