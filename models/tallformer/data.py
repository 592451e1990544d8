"""TALLFormer's glue to the engine: THUMOS-14 frames and annotations, training windows, the
long-term memory's offline pass, inference windows, merging, detection mAP and submissions.

Data, as users have it: one folder of frames per video (15 fps, JPEG or PNG, natural order) or
one video file per video (``name_template`` ``"{video}.mp4"``, decoded by
:class:`fastlocal.data.VideoReader` through PyAV), and the annotations JSON in the ActivityNet
layout or a THUMOS variant (:func:`fastlocal.data.read_ground_truth`; segments in seconds,
converted to frames at ``fps``). ``Ambiguous`` annotations are dropped by default.

Training (:class:`THUMOSWindows` with ``training=True``, one window per video and epoch, as
released): a window of ``window_frames`` frames at a random even start (the memory stores frame
pairs) keeping the ground truth whose intersection over its own length (IoF) with the window
is >= ``iof`` (0.75), clipped to the window; up to 50 draws until one keeps an action (vedatad
``TemporalRandomCrop``); a video shorter than the window is zero-padded at the end. Frames are
resized to a short side of ``short_side``, randomly cropped to ``image_size`` and flipped
horizontally with probability 0.5, then normalised with the ImageNet mean and std.
Evaluation: every test window of every video (:func:`~.inference.inference_windows`),
centre-cropped, zero-padded to ``window_frames``.

:class:`TALLFormerTask` (loss, predictions, mAP, submission) runs on the engine;
:meth:`TALLFormerTask.init_memory` is the memory's offline pass; :class:`CLI` adds
``python -m fastlocal.models tallformer init-memory|train|eval|info``. The ActivityNet (AFSD-based)
head and data are not part of this work.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fastlocal.data import DatasetError, VideoReader
from fastlocal.data.detection import GroundTruth, read_ground_truth, write_predictions
from fastlocal.data.kinetics import normalize, resize_short_side
from fastlocal.metrics.detection import THUMOS_TIOU_THRESHOLDS, detection_map
from fastlocal.selective import LongMemory

from ..configs import replace
from ..engine import Task, autocast, backend_scope, seed_everything
from .anchors import level_anchors, make_targets
from .config import TALLFormerConfig, TALLFormerTrainConfig
from .head import convert_sync_batchnorm
from .inference import NMW, inference_windows, merge_detections, nms_hook, nmw_hook, window_detections
from .losses import detection_loss
from .memory import encode_video
from .model import TALLFormer

__all__ = [
    "CLI",
    "DETECTIONS",
    "TALLFormerTask",
    "THUMOSWindows",
    "Window",
    "WindowDetections",
    "collate_windows",
    "temporal_random_crop",
]

#: what ``write`` names the submission under the run folder
DETECTIONS = "detections.json"
_CROP_TRIES = 50  # vedatad TemporalRandomCrop's attempts


def temporal_random_crop(num_frames: int, window: int, segments: np.ndarray, iof: float,
                         rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """A training window's start and the kept ground truth (vedatad ``TemporalRandomCrop``).

    Args:
        num_frames: frames of the video; window: frames of the window.
        segments: ``[K, 2]`` ground truth in frames.
        iof: minimal intersection of a kept segment with the window over the segment's length.
        rng: the draw's generator.
    Returns:
        ``start`` (even, in ``[0, max(num_frames - window, 0)]``) and the boolean ``[K]`` mask of
        kept segments; the first of 50 draws keeping one, else the last draw.
    """
    high = max(num_frames - window, 0) // 2  # even starts: memory rows are frame pairs
    segments = np.asarray(segments, np.float64).reshape(-1, 2)
    length = np.maximum(segments[:, 1] - segments[:, 0], 1e-6)
    for _ in range(_CROP_TRIES):
        start = 2 * int(rng.integers(0, high + 1))
        inter = np.clip(np.minimum(segments[:, 1], start + window) - np.maximum(segments[:, 0], start), 0, None)
        keep = inter / length >= iof
        if keep.any():
            break
    return start, keep


class Window(NamedTuple):
    """One window: ``frames [3, window_frames, S, S]`` float32 (normalised, zero-padded past
    ``length``), ground truth ``segments [K, 2]`` float32 in frames of the window and ``labels
    [K]`` int64, the video id, ``offset`` (its first frame in the video) and ``length`` (real frames)."""

    frames: torch.Tensor
    segments: torch.Tensor
    labels: torch.Tensor
    video_id: str
    offset: int
    length: int


def collate_windows(items: Sequence[Window]) -> dict[str, Any]:
    """``frames [B, 3, W, S, S]``; ``segments``, ``labels`` (lists), ``video_ids``, ``offsets``, ``lengths``."""
    return {"frames": torch.stack([w.frames for w in items]), "segments": [w.segments for w in items],
            "labels": [w.labels for w in items], "video_ids": [w.video_id for w in items],
            "offsets": [w.offset for w in items], "lengths": [w.length for w in items]}


class THUMOSWindows(torch.utils.data.Dataset):
    """The videos of one subset as training windows (one per video) or test windows (all of them).

    Args:
        ground_truth: annotations JSON path, dict or :class:`~fastlocal.data.detection.GroundTruth`.
        videos: the directory holding one frame folder or video file per video.
        subset: the subset to keep (THUMOS: ``"val"`` trains, ``"test"`` evaluates; None: all).
        config: ``window_frames``, ``chunk_frames``, ``short_side``, ``image_size``, ``test_overlap``.
        training: training windows (random crop, augmentation) or every test window.
        fps: frames per second of the frames (THUMOS as released: 15).
        name_template: a video's folder or file name under ``videos`` (default ``"{video}"``).
        classes: class names in label order (default: every subset's labels, sorted).
        ignore_labels: labels dropped from the ground truth (default ``("Ambiguous",)``).
        iof: the training crop's IoF threshold (0.75).
        seed: seed of the training crops and augmentation (drawn per item from it and the
            global torch RNG, so DataLoader workers and epochs differ).
    Raises:
        DatasetError naming the video: a missing folder or file, an empty folder, a video
        shorter than one chunk, or fewer frames than the annotated duration needs.
    """

    def __init__(
        self,
        ground_truth: str | os.PathLike | Mapping | GroundTruth,
        videos: str | os.PathLike,
        subset: str | None,
        config: TALLFormerConfig,
        *,
        training: bool,
        fps: float = 15.0,
        name_template: str = "{video}",
        classes: Sequence[str] | None = None,
        ignore_labels: Iterable[str] = ("Ambiguous",),
        iof: float = 0.75,
    ) -> None:
        if not isinstance(config, TALLFormerConfig):
            raise TypeError(f"config must be a TALLFormerConfig, got {type(config).__name__}")
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
        if "{video}" not in name_template:
            raise ValueError(f"name_template must contain '{{video}}', got {name_template!r}")
        if isinstance(iof, bool) or not isinstance(iof, int | float) or not 0 < iof <= 1:
            raise ValueError(f"iof must be in (0, 1], got {iof!r}")
        self.root = Path(videos)
        if not self.root.is_dir():
            raise DatasetError(f"videos directory not found: {self.root}")
        self.config, self.training, self.fps, self.iof = config, bool(training), float(fps), float(iof)
        self.name_template = name_template
        everything = read_ground_truth(ground_truth, ignore_labels=ignore_labels, out_of_range="keep")
        self.classes = list(classes) if classes is not None else sorted(
            {c for v in everything.videos.values() for c in v.labels})
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.ground_truth = read_ground_truth(everything, subset=subset, classes=self.classes, out_of_range="keep")
        if not self.ground_truth.videos:
            raise DatasetError(f"{self.ground_truth.source}: no video in subset {subset!r}")
        self.video_ids = list(self.ground_truth.videos)
        self.num_frames = {vid: self._count(vid) for vid in self.video_ids}
        self._sizes: dict[str, tuple[int, int]] = {}  # frame sizes, read once per video
        self.items: list[tuple[str, int, int]] = []  # (video, start, end)
        if not self.training:
            for vid in self.video_ids:
                self.items += [(vid, s, e) for s, e in inference_windows(self.num_frames[vid], config)]

    def path(self, video_id: str) -> Path:
        """The frame folder or video file of ``video_id``."""
        return self.root / self.name_template.format(video=video_id)

    def _count(self, vid: str) -> int:
        path = self.path(vid)
        if not path.exists():
            raise DatasetError(f"video {vid!r} of {self.ground_truth.source} has no frames: {path} does not exist")
        n = VideoReader(path).num_frames
        if n < self.config.chunk_frames:
            raise DatasetError(f"video {vid!r} ({path}) has {n} frames, fewer than one chunk of "
                               f"{self.config.chunk_frames}: drop it from the annotations")
        duration = self.ground_truth.videos[vid].duration
        if duration is not None and n < math.floor(duration * self.fps) - self.fps:
            raise DatasetError(f"video {vid!r} ({path}) has {n} frames but its annotated duration {duration} s at "
                               f"{self.fps:g} fps needs {math.floor(duration * self.fps)}: frames are missing")
        return n

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.video_ids) if self.training else len(self.items)

    def read(self, video_id: str, start: int, end: int, *, crop: tuple[int, int] | None = None,
             flip: bool = False) -> torch.Tensor:
        """Frames ``start..end-1`` of a video as ``[3, end - start, S, S]`` float32, resized, cropped
        at ``crop`` (top, left; default centre), flipped if asked, normalised."""
        frames = VideoReader(self.path(video_id)).read(np.arange(start, end))
        x = resize_short_side(torch.from_numpy(frames).permute(3, 0, 1, 2).float(), self.config.short_side)
        size = self.config.image_size
        h, w = x.shape[-2:]
        top, left = ((h - size) // 2, (w - size) // 2) if crop is None else crop
        x = x[..., top:top + size, left:left + size]
        if flip:
            x = x.flip(-1)
        return normalize(x)

    def _segments(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        video = self.ground_truth.videos[vid]
        labels = np.asarray([self.class_index[label] for label in video.labels], np.int64)
        return video.segments * self.fps, labels

    def __getitem__(self, index: int) -> Window:
        config = self.config
        window = config.window_frames
        if self.training:
            vid = self.video_ids[index]
            n = self.num_frames[vid]
            rng = np.random.default_rng(int(torch.randint(2**62, ())))
            segments, labels = self._segments(vid)
            start, keep = temporal_random_crop(n, window, segments, self.iof, rng)
            end = min(start + window, n)
            segments = np.clip(segments[keep] - start, 0, end - start)
            labels = labels[keep]
            h, w = self._scaled_size(vid)
            crop = (int(rng.integers(0, h - config.image_size + 1)), int(rng.integers(0, w - config.image_size + 1)))
            frames = self.read(vid, start, end, crop=crop, flip=bool(rng.random() < 0.5))
        else:
            vid, start, end = self.items[index]
            frames = self.read(vid, start, end)
            segments, labels = np.zeros((0, 2)), np.zeros(0, np.int64)
        frames = torch.nn.functional.pad(frames, (0, 0, 0, 0, 0, window - (end - start)))
        return Window(frames.contiguous(), torch.from_numpy(segments).float().reshape(-1, 2),
                      torch.from_numpy(labels), vid, start, end - start)

    def _scaled_size(self, vid: str) -> tuple[int, int]:
        """(height, width) of a video's frames after the short-side resize."""
        if vid not in self._sizes:
            self._sizes[vid] = VideoReader(self.path(vid)).read([0]).shape[1:3]
        h, w = self._sizes[vid]
        s = self.config.short_side
        return (s, int(s * w / h)) if h <= w else (int(s * h / w), s)


class WindowDetections(NamedTuple):
    """One test window's candidates: ``segments [n, 2]`` in video frames, ``scores [n, C]``."""

    video_id: str
    segments: torch.Tensor
    scores: torch.Tensor


class TALLFormerTask(Task):
    """TALLFormer on :class:`THUMOSWindows`, trained end to end through the long-term memory.

    Args:
        config: the model (``num_classes`` must match the data's classes).
        train: training windows (``training=True``) or None.
        test: test windows (``training=False``) or None; its ground truth is what mAP compares with.
        memory: the long-term memory: a :class:`~fastlocal.selective.LongMemory`, or its storage
            (``"ram"``, ``"cuda"``, a directory). Unused when ``keep_ratio`` is 1.
        checkpoint: a local Video Swin checkpoint for the backbone (None: random initialisation);
            ``checkpoint_layout`` ``"torchvision"`` or ``"mmaction"`` (the released one), ``prefix``
            as :func:`~fastlocal.models.backbones.load_video_swin`.
        backbone_lr_scale: the backbone's lr over the head's (released 0.4).
        nmw: the merge op (default by ``config.merge``: ``fastlocal.nmw_1d`` or per-class NMS).
        seed: the seed :func:`~fastlocal.models.engine.fit` builds the model with, so that
            :meth:`init_memory` encodes with the same initial backbone.
    """

    eval_batch_size = 1

    def __init__(
        self,
        config: TALLFormerConfig,
        train: THUMOSWindows | None = None,
        test: THUMOSWindows | None = None,
        *,
        memory: LongMemory | str | os.PathLike = "ram",
        checkpoint: str | os.PathLike | None = None,
        checkpoint_layout: str = "torchvision",
        prefix: str = "",
        backbone_lr_scale: float = 0.4,
        nmw: NMW | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config
        self._train, self._test = train, test
        for name, data, training in (("train", train, True), ("test", test, False)):
            if data is None:
                continue
            if not isinstance(data, THUMOSWindows) or data.training != training:
                raise TypeError(f"{name} must be THUMOSWindows(training={training}) or None")
            if data.num_classes != config.num_classes:
                raise ValueError(f"TALLFormerConfig.num_classes={config.num_classes} but the {name} set has "
                                 f"{data.num_classes} classes")
            if data.config.window_frames != config.window_frames or data.config.chunk_frames != config.chunk_frames:
                raise ValueError(f"the {name} set's windows are not the model's (window_frames, chunk_frames)")
        self.memory = memory if isinstance(memory, LongMemory) else LongMemory(memory)
        self.checkpoint, self.checkpoint_layout, self.prefix = checkpoint, checkpoint_layout, prefix
        self.backbone_lr_scale = backbone_lr_scale
        if nmw is None:
            nmw = nmw_hook if config.merge == "nmw" else nms_hook
        self.nmw, self.seed = nmw, seed

    def build_model(self) -> TALLFormer:
        from ..backbones import load_video_swin

        model = TALLFormer(self.config, self.memory if self.config.keep_ratio < 1 else None)
        if self.checkpoint is not None:
            load_video_swin(model.backbone, self.checkpoint, prefix=self.prefix, layout=self.checkpoint_layout)
        return convert_sync_batchnorm(model)

    def train_set(self) -> THUMOSWindows:
        if self._train is None:
            raise ValueError("TALLFormerTask has no training set")
        return self._train

    def eval_set(self) -> THUMOSWindows | None:
        return self._test

    def collate(self, items: list[Window]) -> dict[str, Any]:
        return collate_windows(items)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The backbone's trainable parameters at ``lr * backbone_lr_scale``, the rest at ``lr``."""
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        backbone = {id(p) for p in model.encoder.parameters()}
        return [{"params": [p for p in model.parameters() if id(p) not in backbone]},
                {"params": list(model.encoder.parameters()), "lr_scale": self.backbone_lr_scale}]

    @torch.no_grad()
    def init_memory(self, model: TALLFormer | None = None, *, progress: bool = True, chunks_per_call: int = 15,
                    device: str | torch.device = "cpu") -> dict[str, int]:
        """The memory's offline pass over the training videos (training mode, drop path active, as
        released; centre crops): every video the memory does not hold whole yet is encoded and
        stored, so an interrupted pass resumes where it stopped. ``model`` defaults to the one
        :func:`~fastlocal.models.engine.fit` starts from (built after seeding with ``seed``).
        Returns ``{"encoded": ..., "skipped": ...}``."""
        data = self.train_set()
        if model is None:
            seed_everything(self.seed)
            model = self.build_model()
        model = model.to(device).train()
        channels = model.encoder.out_channels
        encoded = skipped = 0
        bar = tqdm(data.video_ids, desc="init-memory", disable=not progress, dynamic_ncols=True)
        for vid in bar:
            frames = data.num_frames[vid]
            rows = model.encoder.num_rows(frames)
            if not self.memory.owns(vid) or (vid in self.memory and self.memory.shape(vid) == (rows, channels)):
                skipped += 1
                continue
            features = encode_video(model.encoder, lambda s, e, v=vid: data.read(v, s, e), frames,
                                    chunks_per_call=chunks_per_call)
            self.memory.init(vid, features)
            encoded += 1
        self.memory.flush()
        return {"encoded": encoded, "skipped": skipped}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The released loss (focal + DIoU over the batch's positives) of the windows."""
        cls_scores, seg_preds = model(batch["frames"], batch["video_ids"], batch["offsets"])
        anchors = torch.cat(level_anchors(self.config, [c.shape[-1] for c in cls_scores], device=cls_scores[0].device))
        targets = make_targets(anchors, batch["segments"], batch["labels"], self.config)
        out = detection_loss(cls_scores, seg_preds, anchors, targets, self.config)
        return out.loss, {"cls": float(out.cls.detach()), "reg": float(out.reg.detach())}

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> list[WindowDetections]:
        """Each window's candidates (:func:`~.inference.window_detections`), on the CPU, without the
        zero-length ones (decoded inside a last window's padding and clamped to the video's end)."""
        cls_scores, seg_preds = model(batch["frames"])
        out = []
        for i, (vid, offset, length) in enumerate(zip(batch["video_ids"], batch["offsets"], batch["lengths"],
                                                      strict=True)):
            segments, scores = window_detections([c[i].float() for c in cls_scores], [s[i].float() for s in seg_preds],
                                                 self.config, length=length, shift=offset)
            # anchors inside a last window's zero padding are clamped to its end: length 0, no match possible
            keep = segments[:, 1] > segments[:, 0]
            out.append(WindowDetections(vid, segments[keep].cpu(), scores[keep].cpu()))
        return out

    def detections(self, records: list[WindowDetections]) -> dict[str, list[dict[str, Any]]]:
        """Every video's merged detections (:func:`~.inference.merge_detections`) as submission
        entries ``{"label", "score", "segment"}`` in seconds."""
        data = self._test
        fps = data.fps if data is not None else 15.0
        classes = data.classes if data is not None else [str(i) for i in range(self.config.num_classes)]
        by_video: dict[str, list[WindowDetections]] = {}
        for r in records:
            by_video.setdefault(r.video_id, []).append(r)
        out = {}
        for vid, windows in by_video.items():
            segments, scores, labels = merge_detections([w.segments for w in windows], [w.scores for w in windows],
                                                        self.config, nmw=self.nmw)
            out[vid] = [{"label": classes[int(c)], "score": float(s), "segment": [float(a) / fps, float(b) / fps]}
                        for (a, b), s, c in zip(segments.tolist(), scores.tolist(), labels.tolist(), strict=True)]
        return out

    def score(self, records: list[WindowDetections]) -> dict[str, float]:
        """Percentages: ``average_mAP`` and ``mAP@<t>`` at THUMOS-14's tIoU 0.3..0.7."""
        if self._test is None:
            raise ValueError("TALLFormerTask has no evaluation set (its ground truth scores the detections)")
        gt = self._test.ground_truth
        known = set(gt.classes)  # a class absent from the evaluated ground truth has no AP to change
        results = {vid: [d for d in entries if d["label"] in known]
                   for vid, entries in self.detections(records).items()}
        result = detection_map(gt, {"results": results}, THUMOS_TIOU_THRESHOLDS, subset=None)
        return {k: 100.0 * v for k, v in result.as_dict().items()}

    def write(self, records: list[WindowDetections], out: Path) -> None:
        """``out/detections.json``: the submission (ActivityNet layout, seconds)."""
        write_predictions(out / DETECTIONS, self.detections(records))


# ---- command line ----------------------------------------------------------------------------------


def _in_data(args: argparse.Namespace, value: str | None, default: str, flag: str) -> Path:
    if value is not None:
        return Path(value)
    if args.data is None:
        raise ValueError(f"give --data DIR (holding {default}) or {flag}")
    return Path(args.data) / default


class CLI:
    """TALLFormer's options on ``python -m fastlocal.models tallformer init-memory|train|eval|info``.

    ``--data DIR`` holds ``annotations.json`` and ``frames/<video>/`` (or video files with
    ``--name-template '{video}.mp4'``), as ``python -m fastlocal.data.synthetic_detection --frames``
    writes; ``--annotations`` and ``--videos`` name them one by one. THUMOS-14: ``--train-subset val
    --subset test``. The memory lives in ``--memory DIR`` (default ``RUN/memory``); ``init-memory``
    fills it (resuming), ``train`` needs it when ``keep_ratio < 1``. ``--backbone FILE`` loads a
    Video Swin checkpoint (``--backbone-layout mmaction`` for the released ones).
    """

    commands: ClassVar[dict[str, str]] = {
        "init-memory": "encode every training video into the long-term memory (resumes)"}

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
        parser.add_argument("--data", default=None, help="dataset directory (annotations.json, frames/)")
        parser.add_argument("--annotations", default=None, help="ground truth JSON (default DATA/annotations.json)")
        parser.add_argument("--videos", default=None, help="frame folders or video files (default DATA/frames)")
        parser.add_argument("--name-template", default="{video}",
                            help="a video's folder or file name under --videos (default '{video}')")
        parser.add_argument("--fps", type=float, default=15.0, help="frames per second of the frames (15)")
        if command == "info":
            return
        parser.add_argument("--train-subset", default="training", help="the annotations' training subset (THUMOS: val)")
        parser.add_argument("--subset", default="validation", help="the annotations' evaluation subset (THUMOS: test)")
        parser.add_argument("--memory", default=None, help="long-term memory directory (default RUN/memory)")
        parser.add_argument("--backbone", default=None, help="Video Swin checkpoint for the backbone")
        parser.add_argument("--backbone-layout", default="torchvision", choices=("torchvision", "mmaction"))

    @staticmethod
    def configure(args: argparse.Namespace, model: TALLFormerConfig, train: TALLFormerTrainConfig
                  ) -> tuple[TALLFormerConfig, TALLFormerTrainConfig]:
        """``num_classes`` from the annotations' labels (Ambiguous left out)."""
        if args.data is None and args.annotations is None:
            return model, train
        gt = read_ground_truth(_in_data(args, args.annotations, "annotations.json", "--annotations"),
                               ignore_labels=("Ambiguous",), out_of_range="keep")
        return replace(model, num_classes=len({c for v in gt.videos.values() for c in v.labels})), train

    @staticmethod
    def _dataset(args: argparse.Namespace, model: TALLFormerConfig, subset: str, training: bool) -> THUMOSWindows:
        return THUMOSWindows(_in_data(args, args.annotations, "annotations.json", "--annotations"),
                             _in_data(args, args.videos, "frames", "--videos"), subset, model, training=training,
                             fps=args.fps, name_template=args.name_template)

    @staticmethod
    def describe(args: argparse.Namespace) -> dict[str, Any]:
        return {"annotations": str(_in_data(args, args.annotations, "annotations.json", "--annotations")),
                "videos": str(_in_data(args, args.videos, "frames", "--videos")), "subset": args.subset}

    @staticmethod
    def task(args: argparse.Namespace, model: TALLFormerConfig, train: TALLFormerTrainConfig,
             command: str) -> TALLFormerTask:
        training = CLI._dataset(args, model, args.train_subset, True) if command in ("train", "init-memory") else None
        test = None
        if command == "eval" or (command == "train" and train.eval_every):
            test = CLI._dataset(args, model, args.subset, False)
        memory = Path(args.memory) if args.memory is not None else Path(args.out) / "memory"
        task = TALLFormerTask(model, training, test, memory=memory, checkpoint=args.backbone,
                              checkpoint_layout=args.backbone_layout, backbone_lr_scale=train.backbone_lr_scale,
                              seed=train.seed)
        if command == "train" and model.keep_ratio < 1:
            missing = [v for v in training.video_ids if v not in task.memory]
            if missing:
                raise ValueError(f"the long-term memory {task.memory.storage} lacks {len(missing)} of "
                                 f"{len(training.video_ids)} training videos (e.g. {missing[0]!r}): run init-memory "
                                 "with the same options first")
        return task

    @staticmethod
    def run(args: argparse.Namespace, model: TALLFormerConfig, train: TALLFormerTrainConfig, command: str) -> int:
        """``init-memory``: the offline pass into ``--memory`` (prints what it encoded and skipped), under
        ``--backend`` and ``--amp`` as ``train`` runs; one process (under torchrun every rank would
        encode every video it owns in a directory memory, all of them in a RAM one)."""
        if command != "init-memory":
            raise ValueError(f"unknown command {command!r}")
        task = CLI.task(args, model, train, command)
        with backend_scope(train.backend), autocast(train, torch.device(args.device)):  # --backend, --amp as in train
            counts = task.init_memory(progress=not args.no_progress, device=args.device)
        print(f"memory {task.memory.storage}: encoded {counts['encoded']} video(s), skipped {counts['skipped']} "
              "already complete")
        return 0
