"""Synthetic temporal action detection data in the ActivityNet layout (:mod:`fastlocal.data.detection`).

``python -m fastlocal.data.synthetic_detection --out DIR [--videos 60 --classes 5 --dim 32 ...]``

Writes::

    DIR/annotations.json        ActivityNet-1.3 ground truth (subsets "training" / "validation")
    DIR/features/<video>.npy    float32 [T, C] features, T varying from video to video
    DIR/classifier.json         video-level class scores {"results": {video: [C scores]}, "class": [names]}

Each video holds 1..``max_actions`` non-overlapping actions of random classes and random
lengths (``min_action``..``max_action`` of the video), separated by background. A step of
an action is its class's appearance vector plus noise, a background step noise around a
shared background vector, and each action gets a per-instance offset. Several actions (of
one or several classes) share a video, so a detector must find where each one starts and
ends, not only which classes occur. The classifier file scores each class present in a
video higher than the absent ones, with noise, like the external classifiers used to label
proposals. ``seconds_per_step`` converts feature steps to the seconds of the annotations.

Raw-frames mode (``frame_size > 0``, ``--frame-size``; TALLFormer's end-to-end tests): instead
of ``features/``, ``DIR/frames/<video>/img_00001.png ...`` with one tiny ``frame_size`` x
``frame_size`` RGB frame per step: background frames are grey, the frames inside an action are
filled with its class's colour (hues evenly spaced), each instance slightly brighter or darker,
plus per-pixel noise of std ``32 * noise`` grey levels; a step is a frame, so ``seconds_per_step``
is 1 / fps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._output import output_directory
from .video import write_frames

__all__ = ["SyntheticDetectionSpec", "generate", "main"]

_NAMES = ("jump", "throw", "dive", "swing", "kick", "lift", "spin", "climb", "row", "serve", "vault", "pitch")


@dataclass(frozen=True)
class SyntheticDetectionSpec:
    """What :func:`generate` writes.

    ``videos`` (>= 2) of lengths uniform in ``[min_length, max_length]`` feature steps;
    ``classes`` action classes; ``dim`` C of the features; 1..``max_actions`` actions per
    video, each spanning ``min_action``..``max_action`` of its video (fractions, as far as
    they fit); ``signal`` RMS of the class appearances, ``noise`` per-step noise std;
    ``validation`` share of the videos in the "validation" subset (at least one);
    ``seconds_per_step`` the duration of one feature step; ``seed`` >= 0; ``frame_size``: 0
    writes features, > 0 (>= 4) frames of that size instead (module docstring).
    """

    videos: int = 60
    classes: int = 5
    dim: int = 32
    min_length: int = 64
    max_length: int = 320
    max_actions: int = 4
    min_action: float = 0.05
    max_action: float = 0.4
    signal: float = 1.0
    noise: float = 1.0
    validation: float = 0.25
    seconds_per_step: float = 1.0
    seed: int = 0
    frame_size: int = 0

    def __post_init__(self) -> None:
        for name in ("videos", "classes", "dim", "min_length", "max_length", "max_actions", "seed", "frame_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {value!r}")
        for name in ("min_action", "max_action", "signal", "noise", "validation", "seconds_per_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a float, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.videos < 2:
            raise ValueError(f"videos must be >= 2 (training and validation), got {self.videos}")
        if self.classes < 1 or self.dim < 1 or self.max_actions < 1:
            raise ValueError(f"classes, dim and max_actions must be >= 1, got {self.classes}, {self.dim}, "
                             f"{self.max_actions}")
        if not 8 <= self.min_length <= self.max_length:
            raise ValueError(f"need 8 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.max_length * self.dim > 2**26:
            raise ValueError(f"max_length * dim must be <= 2**26 values per video, got {self.max_length * self.dim}")
        if not 0 < self.min_action <= self.max_action <= 1:
            raise ValueError(f"need 0 < min_action <= max_action <= 1, got {self.min_action}, {self.max_action}")
        if not 0 < self.validation < 1:
            raise ValueError(f"validation must be a fraction in (0, 1), got {self.validation}")
        if self.seconds_per_step <= 0:
            raise ValueError(f"seconds_per_step must be > 0, got {self.seconds_per_step}")
        if self.frame_size != 0 and not 4 <= self.frame_size <= 256:
            raise ValueError(f"frame_size must be 0 (features) or in [4, 256] (frames), got {self.frame_size}")


def _class_names(n: int) -> list[str]:
    return [_NAMES[i % len(_NAMES)] + ("" if i < len(_NAMES) else str(i // len(_NAMES) + 1)) for i in range(n)]


def _place_actions(length: int, spec: SyntheticDetectionSpec, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Non-overlapping ``[start, end)`` step ranges with at least one background step between them."""
    wanted = int(rng.integers(1, spec.max_actions + 1))
    spans: list[tuple[int, int]] = []
    for _ in range(20 * wanted):
        if len(spans) == wanted:
            break
        size = max(2, round(rng.uniform(spec.min_action, spec.max_action) * length))
        if size >= length:
            size = length - 1
        start = int(rng.integers(0, length - size + 1))
        end = start + size
        if all(end + 1 <= s or start >= e + 1 for s, e in spans):
            spans.append((start, end))
    return sorted(spans)


def _class_colour(c: int, classes: int) -> np.ndarray:
    """RGB (0..255) of class ``c``: hue ``c / classes`` at saturation 0.8, value 0.9."""
    h = 6.0 * c / classes
    x = 1 - abs(h % 2 - 1)
    rgb = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h) % 6]
    return 255 * 0.9 * (1 - 0.8 + 0.8 * np.asarray(rgb, np.float64))


def generate(out: str | os.PathLike, spec: SyntheticDetectionSpec | None = None) -> Path:
    """Write a synthetic detection dataset to ``out`` (created if missing); returns its path."""
    spec = SyntheticDetectionSpec() if spec is None else spec
    if not isinstance(spec, SyntheticDetectionSpec):
        raise TypeError(f"spec must be a SyntheticDetectionSpec or None, got {type(spec).__name__}")
    root = output_directory(out)
    (root / ("frames" if spec.frame_size else "features")).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    classes = _class_names(spec.classes)
    looks = rng.standard_normal((spec.classes, spec.dim)) * spec.signal
    background = rng.standard_normal(spec.dim) * spec.signal * 0.5
    n_val = max(1, round(spec.videos * spec.validation))
    validation = set(rng.choice(spec.videos, n_val, replace=False).tolist())
    database, scores = {}, {}
    for v in range(spec.videos):
        vid = f"video_{v:04d}"
        length = int(rng.integers(spec.min_length, spec.max_length + 1))
        features = background + rng.standard_normal((length, spec.dim)) * spec.noise
        annotations, present = [], np.zeros(spec.classes, bool)
        colours = np.full((length, 3), 128.0)  # raw-frames mode: grey background
        for start, end in _place_actions(length, spec, rng):
            c = int(rng.integers(spec.classes))
            offset = rng.standard_normal(spec.dim) * spec.signal * 0.2
            features[start:end] += looks[c] - background + offset
            if spec.frame_size:  # drawn only here: feature mode keeps its random stream
                colours[start:end] = _class_colour(c, spec.classes) + rng.uniform(-16, 16)
            present[c] = True
            annotations.append({"segment": [round(start * spec.seconds_per_step, 6),
                                            round(end * spec.seconds_per_step, 6)], "label": classes[c]})
        if spec.frame_size:
            pixels = colours[:, None, None, :] + rng.standard_normal((length, spec.frame_size, spec.frame_size, 3)) \
                * 32 * spec.noise
            write_frames(root / "frames" / vid, np.clip(np.rint(pixels), 0, 255).astype(np.uint8), ext="png")
        else:
            np.save(root / "features" / f"{vid}.npy", features.astype(np.float32))
        database[vid] = {"subset": "validation" if v in validation else "training",
                         "duration": round(length * spec.seconds_per_step, 6), "resolution": "", "url": "",
                         "annotations": annotations}
        noisy = np.clip(np.where(present, rng.uniform(0.55, 1.0, spec.classes), rng.uniform(0.0, 0.45, spec.classes))
                        + rng.normal(0, 0.1, spec.classes), 0, 1)
        scores[vid] = [round(float(s), 6) for s in noisy]
    taxonomy = [{"nodeId": i + 1, "nodeName": c, "parentId": 0, "parentName": "Root"} for i, c in enumerate(classes)]
    ground_truth = {"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database}
    (root / "annotations.json").write_text(json.dumps(ground_truth, indent=1), encoding="utf-8")
    (root / "classifier.json").write_text(json.dumps({"results": scores, "class": classes}), encoding="utf-8")
    return root


def main(argv: list[str] | None = None) -> int:
    defaults = SyntheticDetectionSpec()
    parser = argparse.ArgumentParser(prog="python -m fastlocal.data.synthetic_detection",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset directory to write")
    for name in ("videos", "classes", "dim", "min_length", "max_length", "max_actions", "seed", "frame_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("min_action", "max_action", "signal", "noise", "validation", "seconds_per_step"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--small", action="store_true", help="a tiny dataset: 8 videos of 32-96 steps, 8-D features")
    args = vars(parser.parse_args(argv))
    out, small = args.pop("out"), args.pop("small")
    if small:
        args.update(videos=8, min_length=32, max_length=96, dim=8)
    try:
        spec = SyntheticDetectionSpec(**args)
        root = generate(out, spec)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    print(f"wrote {spec.videos} videos ({spec.classes} classes, {spec.dim}-D features) to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
