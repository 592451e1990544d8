"""Reading and writing video frames: video files through PyAV, folders of frames through Pillow.

A video is either a **file** (any container and codec FFmpeg decodes: ``.mp4``, ``.avi``,
``.mkv``, ``.webm``, ...) or a **folder of frames** (``.jpg``/``.jpeg``/``.png`` images, one per
frame, in natural order: ``img_2.jpg`` before ``img_10.jpg``). :class:`VideoReader` opens either
and returns frames as ``uint8 [N, H, W, 3]`` RGB arrays.

PyAV (``av``) is the optional extra ``video`` (``pip install fastlocal[video]``); it is imported
only when a video file is read or written, and its absence raises
:class:`VideoDecoderMissingError` (an ``ImportError``). Frame folders need only Pillow.

Errors name the file: a missing file or folder, an empty folder, an image or video that cannot
be decoded, frames of different sizes raise :class:`~fastlocal.data.mstcn.DatasetError`
(a ``ValueError``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from .mstcn import DatasetError, _path

__all__ = [
    "FRAME_EXTENSIONS",
    "VideoDecoderMissingError",
    "VideoReader",
    "list_frame_files",
    "read_frames",
    "require_av",
    "write_frames",
    "write_video",
]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


class VideoDecoderMissingError(ImportError):
    """PyAV, the video decoder of fastlocal's optional extra ``video``, is not installed."""


def require_av() -> ModuleType:
    """The ``av`` module, or :class:`VideoDecoderMissingError` saying how to install it."""
    try:
        import av
    except ImportError as exc:
        raise VideoDecoderMissingError(
            f"reading or writing video files needs PyAV, which is not installed ({exc}); install it with "
            "`pip install fastlocal[video]` (or `pip install av`), or use folders of JPEG/PNG frames, "
            "which need only Pillow"
        ) from exc
    return av


def _natural_key(path: Path) -> list:
    # digit runs compare as numbers, so frame_2 sorts before frame_10
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frame images of ``folder`` (extensions :data:`FRAME_EXTENSIONS`, any case) in natural order."""
    folder = _path("folder", folder)
    if not folder.is_dir():
        raise DatasetError(f"frame folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()]
    if not files:
        raise DatasetError(f"frame folder holds no {'/'.join(FRAME_EXTENSIONS)} images: {folder}")
    return sorted(files, key=_natural_key)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode image {path}: {exc}") from None


class VideoReader:
    """One video, a file or a folder of frames, read frame by frame on demand.

    Args:
        path: a video file or a folder of JPEG/PNG frames.

    Attributes:
        path: the path given.
        is_folder: True for a folder of frames.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = _path("path", path)
        self.is_folder = self.path.is_dir()
        self._num_frames: int | None = None
        self._files: list[Path] | None = None
        if self.is_folder:
            self._files = list_frame_files(self.path)
            self._num_frames = len(self._files)
        elif not self.path.is_file():
            raise DatasetError(f"video not found: {self.path}")

    def _open(self):  # -> av.container.InputContainer (av is imported lazily)
        av = require_av()
        try:
            container = av.open(os.fspath(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot decode video {self.path}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise DatasetError(f"cannot decode video {self.path}: the file has no video stream")
        return container

    @property
    def num_frames(self) -> int:
        """Frames in the video: images in the folder; for a file the stream's frame count from its
        header, or the number of packets demuxed when the header has none (no frame is decoded)."""
        if self._num_frames is None:
            av = require_av()
            with self._open() as container:
                stream = container.streams.video[0]
                count = int(stream.frames or 0)
                if count <= 0:
                    try:
                        count = sum(1 for packet in container.demux(stream) if packet.size > 0)
                    except av.FFmpegError as exc:
                        raise DatasetError(f"cannot decode video {self.path}: {exc}") from None
            if count <= 0:
                raise DatasetError(f"cannot decode video {self.path}: it holds no frames")
            self._num_frames = count
        return self._num_frames

    def read(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Frames ``uint8 [N, H, W, 3]`` (RGB) at ``indices`` (any order, repeats allowed; all frames
        when None), each in ``[0, num_frames)``.

        A video file is decoded from its start up to the largest index (seeking is frame-inexact in
        many containers). When a damaged file ends before its header's frame count, indices past its
        last decodable frame get that frame; a file with no decodable frame raises DatasetError.
        """
        n = self.num_frames
        if indices is None:
            idx = np.arange(n)
        else:
            idx = np.asarray(indices)
            if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
                raise TypeError(f"indices must be a 1-D sequence of ints, got shape {idx.shape} dtype {idx.dtype}")
            idx = idx.astype(np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise IndexError(f"frame indices must be in [0, {n}) for {self.path} ({n} frames), "
                                 f"got values in [{idx.min()}, {idx.max()}]")
        if idx.size == 0:
            raise ValueError(f"indices must select at least one frame of {self.path}")
        unique = np.unique(idx)
        frames = self._read_folder(unique) if self.is_folder else self._read_file(unique)
        shapes = {f.shape for f in frames.values()}
        if len(shapes) > 1:
            raise DatasetError(f"frames of {self.path} differ in size: {sorted(shapes)}")
        return np.stack([frames[int(i)] for i in idx])

    def _read_folder(self, unique: np.ndarray) -> dict[int, np.ndarray]:
        assert self._files is not None
        return {int(i): _read_image(self._files[int(i)]) for i in unique}

    def _read_file(self, unique: np.ndarray) -> dict[int, np.ndarray]:
        av = require_av()
        wanted = set(unique.tolist())
        last = int(unique[-1])
        frames: dict[int, np.ndarray] = {}
        previous = None
        count = 0
        with self._open() as container:
            try:
                for frame in container.decode(video=0):
                    if count in wanted:
                        frames[count] = frame.to_ndarray(format="rgb24")
                    previous = frame
                    count += 1
                    if count > last:
                        break
            except av.FFmpegError as exc:
                if count == 0:
                    raise DatasetError(f"cannot decode video {self.path}: {exc}") from None
                # a damaged tail: keep what decoded (the missing indices take the last frame below)
            if count == 0:
                raise DatasetError(f"cannot decode video {self.path}: no frame could be decoded")
            if len(frames) < len(wanted):
                tail = previous.to_ndarray(format="rgb24")
                frames.update({i: tail for i in wanted if i >= count})
        return frames


def read_frames(path: str | os.PathLike, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Frames ``uint8 [N, H, W, 3]`` of a video file or frame folder (:meth:`VideoReader.read`)."""
    return VideoReader(path).read(indices)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise ValueError(f"frames must be a non-empty uint8 array [N, H, W, 3], got shape {frames.shape} "
                         f"dtype {frames.dtype}")
    return frames


def write_frames(
    folder: str | os.PathLike, frames: np.ndarray, ext: str = "jpg", quality: int = 95, prefix: str = "img_"
) -> list[Path]:
    """Write ``frames uint8 [N, H, W, 3]`` as ``folder/<prefix>00001.<ext>``, ... (created if missing).

    ``ext`` is ``"jpg"`` (JPEG at ``quality``, 1-95) or ``"png"`` (lossless). Returns the paths.
    """
    from PIL import Image

    frames = _check_frames(frames)
    if ext not in ("jpg", "png"):
        raise ValueError(f"ext must be 'jpg' or 'png', got {ext!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"quality must be an int in [1, 95], got {quality!r}")
    folder = _path("folder", folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames, 1):
        path = folder / f"{prefix}{i:05d}.{ext}"
        options = {"quality": quality} if ext == "jpg" else {}
        Image.fromarray(frame).save(path, **options)
        paths.append(path)
    return paths


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: int = 25, codec: str | None = None, crf: int = 18
) -> Path:
    """Encode ``frames uint8 [N, H, W, 3]`` to a video file through PyAV (container from the suffix).

    ``codec`` ``"libx264"`` (the default when this PyAV build has it, else ``"mpeg4"``) writes
    yuv420p H.264 (H and W must be even; ``crf`` 0-51, lower is better); ``"libx264rgb"`` with
    ``crf=0`` is lossless RGB (exact round trips); any other FFmpeg encoder name is used with its
    default pixel format.
    """
    av = require_av()
    frames = _check_frames(frames)
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path = _path("path", path)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be an int >= 1, got {fps!r}")
    height, width = frames.shape[1:3]
    if codec == "libx264" and (height % 2 or width % 2):
        raise ValueError(f"codec 'libx264' (yuv420p) needs an even height and width, got {height}x{width}")
    try:
        with av.open(os.fspath(path), "w") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = width, height
            if codec in ("libx264", "libx264rgb"):
                stream.pix_fmt = "yuv420p" if codec == "libx264" else "rgb24"
                stream.options = {"crf": str(crf)}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    except (av.FFmpegError, ValueError) as exc:
        raise ValueError(f"cannot write video {path} with codec {codec!r}: {exc}") from None
    return path
