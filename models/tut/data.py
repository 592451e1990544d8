"""TUT's glue to the engine: MS-TCN-layout datasets, padded batches, predictions and MS-TCN's metrics.

:class:`TUTTask` is what :func:`fastlocal.models.engine.fit` and
:func:`~fastlocal.models.engine.evaluate` run; :data:`CLI` adds TUT's data options to
``python -m fastlocal.models tut train|eval|info``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from fastlocal.data import MSTCNDataset, Video, write_labels
from fastlocal.metrics import SegmentationMetrics

from ..configs import replace
from ..engine import Task
from .config import TUTConfig, TUTTrainConfig
from .losses import IGNORE_INDEX, compute_loss
from .model import TUT


class Batch(NamedTuple):
    """Videos padded to one length: ``features [B, T, D]`` (zeros), ``labels [B, T]`` (-100 at
    padding), ``lengths [B]``, and the videos themselves (names and full-rate labels)."""

    features: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    videos: list[Video]


def collate(videos: Sequence[Video]) -> Batch:
    """Pad a list of :class:`~fastlocal.data.Video` into a :class:`Batch`."""
    lengths = [v.labels.size for v in videos]
    T, D = max(lengths), videos[0].features.shape[1]
    features = torch.zeros(len(videos), T, D)
    labels = torch.full((len(videos), T), IGNORE_INDEX, dtype=torch.long)
    for i, v in enumerate(videos):
        features[i, : lengths[i]] = torch.from_numpy(v.features)
        labels[i, : lengths[i]] = torch.from_numpy(v.labels)
    return Batch(features, labels, torch.tensor(lengths), list(videos))


class Prediction(NamedTuple):
    """One video's predicted class indices and ground truth, both ``[T]`` at the original frame rate."""

    name: str
    pred: np.ndarray
    gt: np.ndarray


def plot_segments(path: str | os.PathLike, gt: np.ndarray, pred: np.ndarray, num_classes: int, title: str) -> bool:
    """PNG of ground-truth (top) and predicted (bottom) segment bars; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(12, 2.2), sharex=True)
    cmap = plt.get_cmap("tab20", max(num_classes, 2))
    for ax, labels, name in ((axes[0], gt, "ground truth"), (axes[1], pred, "prediction")):
        ax.imshow(labels[None, :], aspect="auto", cmap=cmap, vmin=0, vmax=max(num_classes - 1, 1),
                  interpolation="nearest")
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[0].set_title(title)
    axes[1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


class TUTTask(Task):
    """TUT on datasets of :class:`~fastlocal.data.Video` (e.g. :class:`~fastlocal.data.MSTCNDataset`).

    Args:
        config: the architecture.
        train: a training set (loaded into memory once) or None (evaluation only).
        test: the evaluation set or None.
        classes: class names (predictions are written with them); default: the datasets'.
        background: class names left out of F1 and edit (they count for accuracy).
        plots: with ``write``, PNGs of the first ``plots`` videos.
    """

    def __init__(
        self,
        config: TUTConfig,
        train: Sequence[Video] | None = None,
        test: Sequence[Video] | None = None,
        *,
        classes: Sequence[str] | None = None,
        background: Sequence[str] = (),
        plots: int = 0,
    ) -> None:
        self.config = config
        self._train, self._test = train, test
        self.classes = list(classes if classes is not None else getattr(train or test, "classes", []))
        unknown = sorted(set(background) - set(self.classes))
        if unknown:
            raise ValueError(f"background classes {unknown} are not in the dataset's classes {self.classes}")
        self.background = [self.classes.index(name) for name in background]
        self.plots = plots

    def build_model(self) -> nn.Module:
        return TUT(self.config)

    def train_set(self) -> Sequence[Video]:
        if self._train is None:
            raise ValueError("TUTTask has no training set")
        if not isinstance(self._train, list):
            self._train = list(self._train)  # read the feature files once
        return self._train

    def eval_set(self) -> Sequence[Video] | None:
        return self._test

    def collate(self, items: list[Video]) -> Batch:
        return collate(items)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss, output = compute_loss(model, batch.features, batch.labels, batch.lengths, self.config)
        valid = batch.labels != IGNORE_INDEX
        correct = (output.logits[-1].argmax(-1)[valid] == batch.labels[valid]).sum()
        return loss.total, {"ce": float(loss.ce.detach()), "smooth": float(loss.smooth.detach()),
                            "boundary": float(loss.boundary.detach()),
                            "train_acc": 100.0 * float(correct) / max(int(valid.sum()), 1)}

    def predict(self, model: nn.Module, batch: Batch) -> list[Prediction]:
        logits = model(batch.features, batch.lengths).logits[-1]
        out = []
        for i, video in enumerate(batch.videos):
            pred = logits[i, : int(batch.lengths[i])].argmax(-1).cpu().numpy()
            out.append(Prediction(video.name, video.upsample(pred), video.full_labels))
        return out

    def score(self, records: list[Prediction]) -> dict[str, float]:
        metrics = SegmentationMetrics(background=self.background)
        for record in records:
            metrics.update(record.pred, record.gt)
        return metrics.compute()

    def write(self, records: list[Prediction], out: Path) -> None:
        """``out/predictions/<video>.txt`` (one class name per frame, the groundTruth format) and
        ``out/plots/<video>.png`` for the first ``plots`` videos."""
        (out / "predictions").mkdir(parents=True, exist_ok=True)
        if self.plots:
            (out / "plots").mkdir(parents=True, exist_ok=True)
        for i, record in enumerate(records):
            write_labels(out / "predictions" / f"{record.name}.txt", record.pred, self.classes)
            if i < self.plots:
                plot_segments(out / "plots" / f"{record.name}.png", record.gt, record.pred, len(self.classes),
                              record.name)


# ---- command line ----------------------------------------------------------------------------------


class CLI:
    """TUT's options on ``python -m fastlocal.models tut ...``: an MS-TCN-layout dataset."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
        parser.add_argument("--data", required=command != "info", help="dataset directory (MS-TCN layout)")
        parser.add_argument("--split", type=int, default=1)
        parser.add_argument("--sample-rate", type=int, default=None, help="override the preset's temporal subsampling")
        parser.add_argument("--background", nargs="*", default=[], help="class names left out of F1 / edit")
        parser.add_argument("--plots", type=int, default=3, help="PNG plots of this many test videos (eval)")
        parser.add_argument("--length-mismatch", default="error", choices=("error", "truncate"))

    @staticmethod
    def configure(args: argparse.Namespace, model: TUTConfig, train: TUTTrainConfig) -> tuple[TUTConfig, Any]:
        """Feature width and classes from the dataset; ``--sample-rate``."""
        if args.sample_rate is not None:
            train = replace(train, sample_rate=args.sample_rate)
        if getattr(args, "data", None):
            probe = MSTCNDataset(args.data, args.split, "train", length_mismatch=args.length_mismatch)
            model = replace(model, input_dim=probe.feature_dim(), num_classes=probe.num_classes)
        return model, train

    @staticmethod
    def describe(args: argparse.Namespace) -> dict[str, Any]:
        """What ``eval.json`` records about the data."""
        return {"data": str(args.data), "split": args.split}

    @staticmethod
    def task(args: argparse.Namespace, model: TUTConfig, train: TUTTrainConfig, command: str) -> TUTTask:
        def load(subset: str) -> MSTCNDataset:
            return MSTCNDataset(args.data, args.split, subset, sample_rate=train.sample_rate,
                                length_mismatch=args.length_mismatch)

        test = load("test")
        return TUTTask(model, load("train") if command == "train" else None, test, classes=test.classes,
                       background=args.background, plots=args.plots if command == "eval" else 0)
