"""Synthetic action-recognition videos in the Kinetics list layout (:mod:`fastlocal.data.kinetics`).

``python -m fastlocal.data.synthetic_video --out DIR [--videos 64 --frames 48 --height 48 --width 64 ...]``

Every video shows one bright soft-edged disc over a static smooth random background, with
per-frame pixel noise, drawn on a torus (it wraps around the borders). The class is *how the
disc changes over time*:

- ``up`` / ``down``: a disc of constant radius (uniform in ``radius``) moves vertically at a
  speed uniform in ``speed`` pixels per frame, from a uniform random position;
- ``grow`` / ``shrink``: a disc at a uniform random position whose radius goes linearly from
  ``radius[0]`` to ``radius[1]`` over the video (or back).

Each pair is a time reversal: a ``down`` video is an ``up`` video played backwards (with
the start shifted, which is uniform as well), ``shrink`` is ``grow`` backwards
(:func:`render_video` makes this exact). So any per-frame feature averaged over frames, which
cannot see order, has the same distribution for both classes of a pair: a frame-averaging
classifier is at chance within each pair (50% over the four classes at best), while frame
differences separate all four. Motion is vertical and sizes symmetric, so the horizontal flip
of the training transform keeps every label.

Written layout (``DIR``)::

    classes.txt                       "<index> <name>" per line
    frames/video0000/img_00001.jpg    one folder of frames per video (``--image-format png`` too)
    videos/video0000.mp4              H.264 (yuv420p) through PyAV (MPEG-4 without libx264)
    train_frames.txt  val_frames.txt  "frames/video0000 <frames> <label>" (root: DIR)
    train_videos.txt  val_videos.txt  "videos/video0000.mp4 <frames> <label>"

Frame folders are always written; mp4 files when PyAV is installed (or ``--formats`` asks).
The validation split takes ``val_fraction`` of each class (rounded; at least one video of each
class when ``val_fraction > 0``, and at least one stays in training).
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._output import output_directory
from .video import require_av, write_frames, write_video

__all__ = ["CLASSES", "SyntheticVideoSpec", "VideoParams", "generate", "main", "make_video", "render_video",
           "sample_params", "validation_mask"]

CLASSES = ("up", "down", "grow", "shrink")
_FORMATS = ("frames", "mp4")


def _default_formats() -> tuple[str, ...]:
    try:
        require_av()
    except ImportError:
        return ("frames",)
    return _FORMATS


@dataclass(frozen=True)
class SyntheticVideoSpec:
    """What :func:`generate` writes.

    ``videos`` count (>= 2 per class); ``frames`` per video; frame ``height`` x ``width`` pixels
    (even when mp4 is written); ``classes`` names from :data:`CLASSES`, in label order;
    ``speed`` (low, high) pixels per frame of ``up``/``down``; ``radius`` (low, high) pixels;
    ``noise`` per-pixel Gaussian noise std (0-255 scale); ``val_fraction`` of each class in
    ``val_*.txt`` (at least one when > 0; at least one per class stays in training); ``formats`` of
    ``("frames", "mp4")`` (None: both when PyAV is installed, else frames); ``image_format``
    ``"jpg"`` or ``"png"``; ``fps`` of the mp4 files; ``seed`` >= 0.
    """

    videos: int = 64
    frames: int = 48
    height: int = 48
    width: int = 64
    classes: tuple[str, ...] = CLASSES
    speed: tuple[float, float] = (0.5, 1.5)
    radius: tuple[float, float] = (4.0, 10.0)
    noise: float = 6.0
    val_fraction: float = 0.25
    formats: tuple[str, ...] | None = None
    image_format: str = "jpg"
    fps: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("videos", 2), ("frames", 2), ("height", 8), ("width", 8), ("fps", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SyntheticVideoSpec.{name} must be an int >= {low}, got {value!r}")
        classes = tuple(self.classes) if isinstance(self.classes, list | tuple) else None
        if not classes or len(set(classes)) != len(classes) or any(c not in CLASSES for c in classes):
            raise ValueError(f"SyntheticVideoSpec.classes must be distinct names from {CLASSES}, got {self.classes!r}")
        object.__setattr__(self, "classes", classes)
        if self.videos < 2 * len(classes):
            raise ValueError(f"SyntheticVideoSpec.videos must be >= 2 per class ({2 * len(classes)}), "
                             f"got {self.videos}")
        for name, low in (("speed", 0.0), ("radius", 0.5)):
            pair = getattr(self, name)
            ok = isinstance(pair, tuple | list) and len(pair) == 2 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
            if not ok or not low < pair[0] <= pair[1]:
                raise ValueError(f"SyntheticVideoSpec.{name} must be (low, high) with {low} < low <= high, "
                                 f"got {pair!r}")
        if 2 * self.radius[1] > min(self.height, self.width):
            raise ValueError(f"SyntheticVideoSpec.radius high ({self.radius[1]}) must fit the frame: 2 * radius <= "
                             f"min(height, width) = {min(self.height, self.width)}")
        if self.speed[1] >= self.height / 2:
            raise ValueError(f"SyntheticVideoSpec.speed high ({self.speed[1]}) must be < height / 2, or the motion "
                             "direction aliases on the torus")
        if isinstance(self.noise, bool) or not isinstance(self.noise, int | float) or not 0 <= self.noise < math.inf:
            raise ValueError(f"SyntheticVideoSpec.noise must be a finite number >= 0, got {self.noise!r}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, int | float) \
                or not 0 <= self.val_fraction < 1:
            raise ValueError(f"SyntheticVideoSpec.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        formats = _default_formats() if self.formats is None else tuple(self.formats)
        if not formats or any(f not in _FORMATS for f in formats) or len(set(formats)) != len(formats):
            raise ValueError(f"SyntheticVideoSpec.formats must be distinct names from {_FORMATS}, got {self.formats!r}")
        object.__setattr__(self, "formats", formats)
        if "mp4" in formats and (self.height % 2 or self.width % 2):
            raise ValueError(f"mp4 (H.264 yuv420p) needs an even height and width, got {self.height}x{self.width}")
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f"SyntheticVideoSpec.image_format must be 'jpg' or 'png', got {self.image_format!r}")


@dataclass(frozen=True)
class VideoParams:
    """The random draws of one video: disc position ``y0, x0`` at frame 0 (pixels), ``speed``
    (pixels per frame, used by up/down), ``radius`` (pixels, used by up/down), ``colour`` [3] in
    0-255, ``background`` float [H, W, 3] in 0-255, ``noise_seed``."""

    y0: float
    x0: float
    speed: float
    radius: float
    colour: np.ndarray
    background: np.ndarray
    noise_seed: int


def sample_params(rng: np.random.Generator, spec: SyntheticVideoSpec) -> VideoParams:
    """Draw one video's :class:`VideoParams` (the same distribution for every class)."""
    coarse = rng.uniform(20.0, 90.0, (4, 4, 3))
    # separable bilinear upsampling of the 4x4 grid to the frame size
    rows, cols = np.linspace(0, 3, spec.height), np.linspace(0, 3, spec.width)
    r0, c0 = np.minimum(rows.astype(int), 2), np.minimum(cols.astype(int), 2)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    background = top * (1 - fr) + bottom * fr
    return VideoParams(
        y0=float(rng.uniform(0, spec.height)),
        x0=float(rng.uniform(0, spec.width)),
        speed=float(rng.uniform(*spec.speed)),
        radius=float(rng.uniform(*spec.radius)),
        colour=rng.uniform(170.0, 255.0, 3),
        background=background,
        noise_seed=int(rng.integers(2**31)),
    )


def render_video(label: str, params: VideoParams, spec: SyntheticVideoSpec) -> np.ndarray:
    """The frames ``uint8 [frames, height, width, 3]`` of a video of class ``label``."""
    n, h, w = spec.frames, spec.height, spec.width
    t = np.arange(n, dtype=np.float64)
    if label in ("up", "down"):
        cy = params.y0 + (-1.0 if label == "up" else 1.0) * params.speed * t  # image rows grow downwards
        radius = np.full(n, params.radius)
    elif label in ("grow", "shrink"):
        cy = np.full(n, params.y0)
        low, high = spec.radius
        ramp = t / (n - 1)
        radius = low + (high - low) * (ramp if label == "grow" else 1.0 - ramp)
    else:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}")
    # distances on the torus: the disc wraps around the borders, so no position is special
    dy = (np.arange(h)[None, :] - cy[:, None] + h / 2) % h - h / 2  # [n, h]
    dx = (np.arange(w) - params.x0 + w / 2) % w - w / 2  # [w]
    dist = np.sqrt(dy[:, :, None] ** 2 + dx[None, None, :] ** 2)  # [n, h, w]
    alpha = np.clip(radius[:, None, None] - dist + 0.5, 0.0, 1.0)[..., None]  # anti-aliased edge
    frames = params.background[None] * (1 - alpha) + params.colour * alpha
    if spec.noise:
        frames = frames + np.random.default_rng(params.noise_seed).normal(0.0, spec.noise, frames.shape)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def make_video(label: str, rng: np.random.Generator, spec: SyntheticVideoSpec) -> np.ndarray:
    """A random video of class ``label``: ``uint8 [frames, height, width, 3]``."""
    return render_video(label, sample_params(rng, spec), spec)


def validation_mask(labels: np.ndarray, num_classes: int, val_fraction: float,
                    rng: np.random.Generator) -> np.ndarray:
    """``bool [N]``: which of the videos with ``labels [N]`` go to validation: ``val_fraction`` of each
    class (rounded), at least one when ``val_fraction > 0``, and at least one stays in training."""
    val = np.zeros(len(labels), bool)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        share = max(round(val_fraction * members.size), 1) if val_fraction > 0 else 0
        val[members[: min(share, members.size - 1)]] = True
    return val


def generate(out: str | os.PathLike, spec: SyntheticVideoSpec | None = None) -> Path:
    """Write a synthetic dataset to ``out`` (created if missing); returns its path."""
    spec = SyntheticVideoSpec() if spec is None else spec
    if not isinstance(spec, SyntheticVideoSpec):
        raise TypeError(f"spec must be a SyntheticVideoSpec or None, got {type(spec).__name__}")
    root = output_directory(out)
    rng = np.random.default_rng(spec.seed)
    labels = np.arange(spec.videos) % len(spec.classes)
    val = validation_mask(labels, len(spec.classes), spec.val_fraction, rng)
    lines: dict[str, list[str]] = {f"{s}_{f}": [] for s in ("train", "val") for f in ("frames", "videos")}
    for v in range(spec.videos):
        name = f"video{v:04d}"
        frames = make_video(spec.classes[labels[v]], rng, spec)
        subset = "val" if val[v] else "train"
        if "frames" in spec.formats:
            write_frames(root / "frames" / name, frames, ext=spec.image_format)
            lines[f"{subset}_frames"].append(f"frames/{name} {spec.frames} {labels[v]}\n")
        if "mp4" in spec.formats:
            (root / "videos").mkdir(exist_ok=True)
            write_video(root / "videos" / f"{name}.mp4", frames, fps=spec.fps)
            lines[f"{subset}_videos"].append(f"videos/{name}.mp4 {spec.frames} {labels[v]}\n")
    (root / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(spec.classes)))
    for key, entries in lines.items():
        if entries:
            (root / f"{key}.txt").write_text("".join(entries))
    return root


def main(argv: list[str] | None = None) -> int:
    defaults = SyntheticVideoSpec(formats=("frames",))
    parser = argparse.ArgumentParser(prog="python -m fastlocal.data.synthetic_video",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset directory to write")
    for name in ("videos", "frames", "height", "width", "fps", "seed"):
        parser.add_argument("--" + name, type=int, default=getattr(defaults, name))
    for name in ("noise", "val_fraction"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    for name in ("speed", "radius"):
        parser.add_argument("--" + name, type=float, nargs=2, default=getattr(defaults, name), metavar=("LOW", "HIGH"))
    parser.add_argument("--classes", default=",".join(CLASSES), help=f"comma-separated subset of {','.join(CLASSES)}")
    parser.add_argument("--formats", default=None,
                        help="comma-separated subset of frames,mp4 (default: both when PyAV is installed)")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    args["classes"] = tuple(args["classes"].split(","))
    args["formats"] = None if args["formats"] is None else tuple(args["formats"].split(","))
    args["speed"], args["radius"] = tuple(args["speed"]), tuple(args["radius"])
    try:
        spec = SyntheticVideoSpec(**args)
        root = generate(out, spec)
    except (ValueError, TypeError, ImportError) as exc:
        parser.error(str(exc))
    print(f"wrote {spec.videos} videos ({len(spec.classes)} classes, {spec.frames} frames of "
          f"{spec.height}x{spec.width}, as {' and '.join(spec.formats)}) to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
