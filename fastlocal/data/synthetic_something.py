"""Synthetic videos in the Something-Something layout (:mod:`fastlocal.data.something`).

``python -m fastlocal.data.synthetic_something --out DIR [--version 2 --videos 48 --frames 24 ...]``

The frames are :mod:`fastlocal.data.synthetic_video`'s (one soft disc over a smooth background,
on a torus); the class is how the disc moves, named as Something-Something classes:

=========================================  ==============================================
``Moving something up`` / ``down``          ``up`` / ``down``
``Pushing something from left to right``    ``down`` rendered with height and width swapped,
``Pushing something from right to left``    then transposed (``up``): horizontal motion
``Moving something towards the camera``     ``grow``
``Moving something away from the camera``   ``shrink``
=========================================  ==============================================

Every pair is a time reversal (order, not appearance, tells them apart), and the left/right
pair is one a horizontal flip would swap: the flip rule must spare it.

Written layout (``DIR``)::

    frames/<id>/00001.jpg ...                             one folder per video (ids "1", "2", ...)
    something-something-v2-{labels,train,validation}.json (version 2), or
    something-something-v1-{labels,train,validation}.csv  (version 1)

The validation split takes ``val_fraction`` of each class
(:func:`fastlocal.data.synthetic_video.validation_mask`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._output import output_directory
from .something import LABEL_FILES
from .synthetic_video import SyntheticVideoSpec, make_video, validation_mask
from .video import write_frames

__all__ = ["CLASSES", "generate", "main"]

# class name -> (synthetic_video class, rendered transposed)
CLASSES = {
    "Moving something up": ("up", False),
    "Moving something down": ("down", False),
    "Pushing something from left to right": ("down", True),  # rows grow downwards: transposed, columns grow
    "Pushing something from right to left": ("up", True),
    "Moving something towards the camera": ("grow", False),
    "Moving something away from the camera": ("shrink", False),
}


def _template(name: str) -> str:
    return name.replace("something", "[something]")


def generate(out: str | os.PathLike, spec: SyntheticVideoSpec | None = None, version: int = 2,
             classes: Sequence[str] | None = None) -> Path:
    """Write a synthetic Something-Something ``version`` (1 or 2) set to ``out``; returns its path.

    ``spec`` sets the videos, frames, sizes, motion, noise, split, image format and seed
    (its ``classes`` and ``formats`` are not used; default: 48 videos of 24 frames of 48 x 64);
    ``classes`` are names from :data:`CLASSES` in label order (default all six; version 1 sorts them).
    """
    spec = SyntheticVideoSpec(videos=48, frames=24, formats=("frames",)) if spec is None else spec
    if not isinstance(spec, SyntheticVideoSpec):
        raise TypeError(f"spec must be a SyntheticVideoSpec or None, got {type(spec).__name__}")
    if isinstance(version, bool) or version not in LABEL_FILES:
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    names = list(CLASSES) if classes is None else list(classes)
    if not names or len(set(names)) != len(names) or any(n not in CLASSES for n in names):
        raise ValueError(f"classes must be distinct names from {list(CLASSES)}, got {classes!r}")
    if version == 1:
        names = sorted(names)  # v1 label indices are sorted positions
    if spec.videos < 2 * len(names):
        raise ValueError(f"spec.videos must be >= 2 per class ({2 * len(names)}), got {spec.videos}")
    transposed = None
    if any(CLASSES[n][1] for n in names):
        if spec.speed[1] >= spec.width / 2:
            raise ValueError(f"spec.speed high ({spec.speed[1]}) must be < width / 2 for horizontal motion")
        transposed = dataclasses.replace(spec, height=spec.width, width=spec.height, classes=("up", "down"),
                                         formats=("frames",))
    root = output_directory(out)
    rng = np.random.default_rng(spec.seed)
    labels = np.arange(spec.videos) % len(names)
    val = validation_mask(labels, len(names), spec.val_fraction, rng)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "validation": []}
    for v in range(spec.videos):
        name = names[labels[v]]
        motion, swap = CLASSES[name]
        frames = make_video(motion, rng, transposed if swap else spec)
        if swap:
            frames = frames.transpose(0, 2, 1, 3)
        video_id = str(v + 1)
        write_frames(root / "frames" / video_id, np.ascontiguousarray(frames), ext=spec.image_format, prefix="")
        splits["validation" if val[v] else "train"].append((video_id, name))
    pattern = LABEL_FILES[version]
    if version == 1:
        (root / pattern.format("labels")).write_text("".join(f"{n}\n" for n in names))
        for split, items in splits.items():
            (root / pattern.format(split)).write_text("".join(f"{i};{n}\n" for i, n in items))
    else:
        (root / pattern.format("labels")).write_text(json.dumps({n: str(i) for i, n in enumerate(names)}, indent=1))
        for split, items in splits.items():
            entries = [{"id": i, "label": n.replace("something", "disc"), "template": _template(n),
                        "placeholders": ["disc"] * n.count("something")} for i, n in items]
            (root / pattern.format(split)).write_text(json.dumps(entries, indent=1))
    return root


def main(argv: list[str] | None = None) -> int:
    defaults = SyntheticVideoSpec(videos=48, frames=24, formats=("frames",))
    parser = argparse.ArgumentParser(prog="python -m fastlocal.data.synthetic_something",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset directory to write")
    parser.add_argument("--version", type=int, choices=(1, 2), default=2, help="label files of v1 (CSV) or v2 (JSON)")
    for name in ("videos", "frames", "height", "width", "seed"):
        parser.add_argument("--" + name, type=int, default=getattr(defaults, name))
    for name in ("noise", "val_fraction"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    args = vars(parser.parse_args(argv))
    out, version = args.pop("out"), args.pop("version")
    try:
        spec = SyntheticVideoSpec(formats=("frames",), **args)
        root = generate(out, spec, version)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    print(f"wrote {spec.videos} videos ({len(CLASSES)} classes, {spec.frames} frames of {spec.height}x{spec.width}) "
          f"with Something-Something v{version} label files to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
