"""VidTr's glue to the engine: Kinetics-style clips and test views, cross-entropy, top-k metrics.

:class:`VidTrTask` is what :func:`fastlocal.models.engine.fit` and
:func:`~fastlocal.models.engine.evaluate` run: training on random clips
(:class:`~fastlocal.data.KineticsClips`), evaluation on every test view of each video
(:class:`~fastlocal.data.KineticsViews`, 3 crops x 10 clips as released) with the softmax
averaged per video (:class:`~fastlocal.metrics.ClassificationMetrics`). :class:`CLI` adds the
data options to ``python -m fastlocal.models vidtr train|eval|info``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastlocal.data import ClipSpec, DatasetError, KineticsClips, KineticsViews, read_mapping, read_video_list
from fastlocal.metrics import ClassificationMetrics

from ..configs import replace
from ..engine import Task
from .config import VidTrConfig, VidTrTrainConfig
from .model import VidTr

__all__ = ["CLI", "Batch", "Prediction", "VidTrTask", "collate"]

#: what ``write`` names its files under the run folder
PREDICTIONS = "predictions.json"
CONFUSION = "confusion.json"


class Batch(NamedTuple):
    """Clips of one batch: ``clips [N, 3, T, S, S]`` float32, ``labels [N]`` int64 and ``names`` (N video
    names). Training: one random clip per video. Evaluation: every view of each video, the views of
    one video next to each other (N = videos x views)."""

    clips: torch.Tensor
    labels: torch.Tensor
    names: list[str]


def collate(items: Sequence[tuple[torch.Tensor, int, str]]) -> Batch:
    """Stack :class:`~fastlocal.data.KineticsClips` items ``(clip [3, T, S, S], label, name)`` or
    :class:`~fastlocal.data.KineticsViews` items ``(views [V, 3, T, S, S], label, name)`` into a :class:`Batch`."""
    clips, labels, names = [], [], []
    for clip, label, name in items:
        views = clip if clip.dim() == 5 else clip.unsqueeze(0)
        clips.append(views)
        labels += [label] * views.shape[0]
        names += [name] * views.shape[0]
    return Batch(torch.cat(clips), torch.tensor(labels, dtype=torch.long), names)


class Prediction(NamedTuple):
    """One video's evaluation: its ``name``, ``label`` and the ``logits [V, C]`` float32 of its V views."""

    name: str
    label: int
    logits: np.ndarray


class VidTrTask(Task):
    """VidTr (or any module mapping clips ``[N, 3, T, S, S]`` to logits ``[N, C]``) on Kinetics-style lists.

    Args:
        config: the architecture (its ``num_classes`` is the width of the scores).
        train: the training clips or None (evaluation only).
        test: the evaluation views (one item per video) or None.
        classes: class names for the written predictions (default: the indices).
        chunk: views per forward pass in evaluation: a video's 30 views go through the model in
            chunks of this many, which bounds the activation memory.
    """

    eval_batch_size = 1  # one video, all of its views

    def __init__(
        self,
        config: VidTrConfig,
        train: Sequence[Any] | None = None,
        test: Sequence[Any] | None = None,
        *,
        classes: Sequence[str] | None = None,
        chunk: int = 10,
    ) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1 (views per forward pass), got {chunk!r}")
        if classes is not None and len(classes) != config.num_classes:
            raise ValueError(f"classes holds {len(classes)} names, but the model has num_classes="
                             f"{config.num_classes}")
        self.config = config
        self._train, self._test = train, test
        self.classes = [str(c) for c in classes] if classes is not None else None
        self.chunk = chunk

    def build_model(self) -> nn.Module:
        return VidTr(self.config)

    def train_set(self) -> Sequence[Any]:
        if self._train is None:
            raise ValueError("VidTrTask has no training set")
        return self._train

    def eval_set(self) -> Sequence[Any] | None:
        return self._test

    def collate(self, items: list[tuple[torch.Tensor, int, str]]) -> Batch:
        return collate(items)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the clips' logits, mean over the batch (as released), and the batch's top-1 (%)."""
        logits = model(batch.clips)
        loss = F.cross_entropy(logits, batch.labels)
        top1 = (logits.detach().argmax(-1) == batch.labels).float().mean()
        return loss, {"train_top1": 100.0 * float(top1)}

    def predict(self, model: nn.Module, batch: Batch) -> list[Prediction]:
        """The logits of every view, ``chunk`` views per forward pass; one :class:`Prediction` per video."""
        logits = torch.cat([model(part) for part in batch.clips.split(self.chunk)]).float().cpu().numpy()
        out, start = [], 0
        names = batch.names
        for end in range(1, len(names) + 1):
            if end == len(names) or names[end] != names[start]:
                out.append(Prediction(names[start], int(batch.labels[start]), logits[start:end]))
                start = end
        return out

    def metrics(self, records: Sequence[Prediction]) -> ClassificationMetrics:
        """Clip- and video-level accumulation of ``records`` (video ids: the records' positions)."""
        metrics = ClassificationMetrics(self.config.num_classes)
        for i, record in enumerate(records):
            metrics.update(record.logits, np.full(len(record.logits), record.label), [i] * len(record.logits))
        return metrics

    def score(self, records: list[Prediction]) -> dict[str, float]:
        """``clip_top1``, ``clip_top5``, ``video_top1``, ``video_top5`` (percent; top-5 clamped to the
        classes), ``clips`` and ``videos``."""
        # plain Python numbers: the engine keeps them in its checkpoint, read back with weights_only=True
        return {k: int(v) if k in ("clips", "videos") else float(v) for k, v in self.metrics(records).compute().items()}

    def write(self, records: list[Prediction], out: Path) -> None:
        """``out/predictions.json``: per video its name, label, predicted class, the top-5 classes and
        their view-averaged softmax scores, and the view count; ``out/confusion.json``: the video- and
        clip-level confusion matrices (row: true class, column: predicted) and the class names."""
        metrics = self.metrics(records)
        names = self.classes or [str(c) for c in range(self.config.num_classes)]
        videos = []
        for record, result in zip(records, metrics.video_results(), strict=True):
            videos.append({"video": record.name, "label": result["label"], "label_name": names[result["label"]],
                           "pred": result["pred"], "pred_name": names[result["pred"]], "top5": result["top"],
                           "top5_names": [names[c] for c in result["top"]], "scores": result["scores"],
                           "views": result["views"]})
        (out / PREDICTIONS).write_text(json.dumps(videos, indent=1) + "\n")
        confusion = {"classes": names, "video": metrics.confusion("video").tolist(),
                     "clip": metrics.confusion("clip").tolist()}
        (out / CONFUSION).write_text(json.dumps(confusion) + "\n")


# ---- command line ----------------------------------------------------------------------------------


def _in_root(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``name`` under the data root (an absolute path is kept)."""
    return Path(root) / name


class CLI:
    """VidTr's options on ``python -m fastlocal.models vidtr ...``: a Kinetics-style dataset.

    ``--data ROOT`` holds the lists (``<path> <unused> <label>`` per line, paths relative to ROOT);
    ``--train-list`` and ``--val-list`` default to the synthetic generator's frame-folder lists
    (``python -m fastlocal.data.synthetic_video``). Class names come from ``--classes FILE``
    (``<index> <name>`` per line), else ``ROOT/classes.txt`` when it exists; the class count is
    theirs, or 1 + the largest label of the lists.
    """

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
        parser.add_argument("--data", required=command != "info", help="dataset root (the list paths are under it)")
        parser.add_argument("--train-list", default="train_frames.txt",
                            help="training list under --data (default: train_frames.txt)")
        parser.add_argument("--val-list", default="val_frames.txt",
                            help="evaluation list under --data (default: val_frames.txt)")
        parser.add_argument("--classes", default=None,
                            help="class names, '<index> <name>' per line (default: DATA/classes.txt if present)")
        if command != "info":
            parser.add_argument("--chunk", type=int, default=10, help="test views per forward pass (memory bound)")

    @staticmethod
    def class_names(args: argparse.Namespace) -> list[str] | None:
        """The names of ``--classes`` or ``DATA/classes.txt``; None without either."""
        if args.classes is not None:
            return read_mapping(args.classes)
        default = _in_root(args.data, "classes.txt")
        return read_mapping(default) if default.is_file() else None

    @staticmethod
    def configure(args: argparse.Namespace, model: VidTrConfig, train: VidTrTrainConfig
                  ) -> tuple[VidTrConfig, VidTrTrainConfig]:
        """``num_classes`` from the data (clips: the model's ``frames``, the train config's
        ``frame_stride``, crop and test views, see :meth:`VidTrTrainConfig.clip_spec`)."""
        if getattr(args, "data", None) is None:
            return model, train
        names = CLI.class_names(args)
        if names is not None:
            count = len(names)
        else:
            lists = [path for name in (args.train_list, args.val_list) if (path := _in_root(args.data, name)).is_file()]
            if not lists:
                raise DatasetError(f"no video list found: neither {_in_root(args.data, args.train_list)} nor "
                                   f"{_in_root(args.data, args.val_list)} exists (--data, --train-list, --val-list)")
            count = 1 + max(e.label for path in lists for e in read_video_list(path, args.data))
        return replace(model, num_classes=count), train

    @staticmethod
    def describe(args: argparse.Namespace) -> dict[str, Any]:
        """What ``eval.json`` records about the data."""
        return {"data": str(args.data), "list": str(args.val_list)}

    @staticmethod
    def task(args: argparse.Namespace, model: VidTrConfig, train: VidTrTrainConfig, command: str) -> VidTrTask:
        spec: ClipSpec = train.clip_spec(model.frames)
        n = model.num_classes
        test = None
        if command == "eval" or train.eval_every:
            test = KineticsViews(_in_root(args.data, args.val_list), args.data, spec, num_classes=n)
        clips = None
        if command == "train":
            clips = KineticsClips(_in_root(args.data, args.train_list), args.data, spec, num_classes=n)
        return VidTrTask(model, clips, test, classes=CLI.class_names(args), chunk=args.chunk)
