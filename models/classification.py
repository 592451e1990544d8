"""Video classification on the engine, shared by every clip classifier (VidTr, GTA): batching of
training clips and test views, cross-entropy, per-video predictions, clip- and video-level top-1 /
top-5 and the written predictions.

A model's task subclasses :class:`ClassificationTask` and defines :meth:`~ClassificationTask.build_model`;
its datasets yield ``(clip [3, T, S, S], label, name)`` for training and ``(views [V, 3, T, S, S],
label, name)`` for evaluation (:class:`fastlocal.data.KineticsClips` / ``KineticsViews``,
:class:`fastlocal.data.SomethingClips` / ``SomethingViews``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastlocal.metrics import ClassificationMetrics

from .engine import Task

__all__ = ["CONFUSION", "PREDICTIONS", "Batch", "ClassificationTask", "Prediction", "collate"]

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
    """Stack training items ``(clip [3, T, S, S], label, name)`` or evaluation items
    ``(views [V, 3, T, S, S], label, name)`` into a :class:`Batch`."""
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


class ClassificationTask(Task):
    """A module mapping clips ``[N, 3, T, S, S]`` to logits ``[N, C]``, trained with cross-entropy and
    evaluated per video (the views' softmax averaged). Subclasses define :meth:`build_model`.

    Args:
        config: the architecture config; its ``num_classes`` is the width of the scores.
        train: the training clips or None (evaluation only).
        test: the evaluation views (one item per video) or None.
        classes: class names for the written predictions (default: the indices).
        chunk: views per forward pass in evaluation: a video's views go through the model in
            chunks of this many, which bounds the activation memory.
    """

    eval_batch_size = 1  # one video, all of its views

    def __init__(
        self,
        config: Any,
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
        raise NotImplementedError

    def train_set(self) -> Sequence[Any]:
        if self._train is None:
            raise ValueError(f"{type(self).__name__} has no training set")
        return self._train

    def eval_set(self) -> Sequence[Any] | None:
        return self._test

    def collate(self, items: list[tuple[torch.Tensor, int, str]]) -> Batch:
        return collate(items)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the clips' logits, mean over the batch, and the batch's top-1 (%)."""
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
