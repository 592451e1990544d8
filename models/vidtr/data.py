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
import os
from pathlib import Path
from typing import Any

from torch import nn

from fastlocal.data import ClipSpec, DatasetError, KineticsClips, KineticsViews, read_mapping, read_video_list

from ..classification import CONFUSION, PREDICTIONS, Batch, ClassificationTask, Prediction, collate
from ..configs import replace
from .config import VidTrConfig, VidTrTrainConfig
from .model import VidTr

__all__ = ["CLI", "CONFUSION", "PREDICTIONS", "Batch", "Prediction", "VidTrTask", "collate"]


class VidTrTask(ClassificationTask):
    """VidTr (or any module mapping clips ``[N, 3, T, S, S]`` to logits ``[N, C]``) on Kinetics-style lists:
    ``train`` yields :class:`~fastlocal.data.KineticsClips` items, ``test`` :class:`~fastlocal.data.KineticsViews`
    items (a video's 30 views); batching, loss, predictions, scores and files are
    :class:`~fastlocal.models.classification.ClassificationTask`'s, whose arguments it takes."""

    def build_model(self) -> nn.Module:
        return VidTr(self.config)


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
        """``num_classes`` from the class names or the lists' labels. (The clips follow the configs as they
        are: the model's ``frames`` and the train config's ``frame_stride``, crop and test views, see
        :meth:`VidTrTrainConfig.clip_spec`.)"""
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
