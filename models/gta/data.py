"""GTA's glue to the engine: Something-Something frame folders, cross-entropy, top-k metrics.

:class:`GTATask` is what :func:`fastlocal.models.engine.fit` and :func:`~fastlocal.models.engine.evaluate`
run: training on TSN clips (:class:`~fastlocal.data.SomethingClips`: one random frame per segment,
multi-scale crop, the paper's flip rule), evaluation on the test views of each video
(:class:`~fastlocal.data.SomethingViews`: the paper's single centre view, or N clips x 3 crops) with
the softmax averaged per video. Batching, loss, predictions, scores and the written files are
:class:`fastlocal.models.classification.ClassificationTask`'s (shared with VidTr). :class:`CLI` adds the
data options to ``python -m fastlocal.models gta train|eval|info``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from torch import nn

from fastlocal.data import DatasetError, SomethingClips, SomethingViews
from fastlocal.data.something import find_label_files, read_class_names

from ..classification import ClassificationTask
from ..configs import replace
from .config import GTAConfig, GTATrainConfig
from .model import GTA

__all__ = ["CLI", "GTATask"]


class GTATask(ClassificationTask):
    """:class:`~fastlocal.models.gta.GTA` (R2D-50 with GTA, non-local or no temporal blocks) on
    Something-Something: ``train`` yields ``(clip [3, T, S, S], label, id)``, ``test`` ``(views [V, 3, T, S, S],
    label, id)``; see :class:`~fastlocal.models.classification.ClassificationTask` for the arguments."""

    def build_model(self) -> nn.Module:
        return GTA(self.config)


# ---- command line ----------------------------------------------------------------------------------


def _frames_dir(args: argparse.Namespace) -> Path:
    """``--frames``, else ``DATA/frames`` when it is a directory (the synthetic writer's layout), else ``DATA``."""
    if args.frames is not None:
        return Path(args.frames)
    nested = Path(args.data) / "frames"
    return nested if nested.is_dir() else Path(args.data)


def _annotations(args: argparse.Namespace) -> Path:
    return Path(args.annotations if args.annotations is not None else args.data)


class CLI:
    """GTA's options on ``python -m fastlocal.models gta ...``: a Something-Something dataset.

    ``--data ROOT`` holds the label files (``something-something-v1-{labels,train,validation}.csv`` or
    ``something-something-v2-{labels,train,validation}.json``, or ``--annotations DIR``) and the frame
    folders ``<id>/`` in ``ROOT/frames`` (or ROOT itself, or ``--frames DIR``), the layout
    ``python -m fastlocal.data.synthetic_something`` writes. ``--version 1|2`` picks the label files
    (default: the one whose labels file is there). ``--segments N`` sets the TSN segment count, which is
    the model's ``frames`` (8 or 16 in the paper). The class count is the labels file's.
    """

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
        parser.add_argument("--data", required=command != "info",
                            help="dataset root: label files, frame folders in ROOT/frames or ROOT")
        parser.add_argument("--frames", default=None, help="directory of the <id>/ frame folders (default: "
                            "DATA/frames if it exists, else DATA)")
        parser.add_argument("--annotations", default=None, help="directory of the label files (default: DATA)")
        parser.add_argument("--version", type=int, choices=(1, 2), default=None,
                            help="Something-Something v1 (CSV) or v2 (JSON) label files (default: detected)")
        parser.add_argument("--segments", type=int, default=None,
                            help="TSN segments = frames per clip (default: the preset's frames)")
        if command != "info":
            parser.add_argument("--chunk", type=int, default=10, help="test views per forward pass (memory bound)")

    @staticmethod
    def class_names(args: argparse.Namespace) -> list[str]:
        """The class names of the labels file (v1: sorted, as TSM assigns the indices)."""
        _, labels_file, _ = find_label_files(_annotations(args), "train", args.version)
        if not labels_file.is_file():
            raise DatasetError(f"labels file not found: {labels_file} (--data, --annotations, --version)")
        return read_class_names(labels_file)

    @staticmethod
    def configure(args: argparse.Namespace, model: GTAConfig, train: GTATrainConfig
                  ) -> tuple[GTAConfig, GTATrainConfig]:
        """``frames`` from ``--segments`` and ``num_classes`` from the labels file. (The clips follow the
        configs: the model's ``frames`` and ``image_size``, the train config's frame size, crops, flip rule
        and test views, see :meth:`GTATrainConfig.something_spec`.)"""
        if args.segments is not None:
            if args.segments < 1:
                raise ValueError(f"--segments must be >= 1, got {args.segments}")
            model = replace(model, frames=args.segments)
        if getattr(args, "data", None) is None:
            return model, train
        return replace(model, num_classes=len(CLI.class_names(args))), train

    @staticmethod
    def describe(args: argparse.Namespace) -> dict[str, Any]:
        """What ``eval.json`` records about the data."""
        version, _, split_file = find_label_files(_annotations(args), "validation", args.version)
        return {"data": str(args.data), "version": version, "split": str(split_file)}

    @staticmethod
    def task(args: argparse.Namespace, model: GTAConfig, train: GTATrainConfig, command: str) -> GTATask:
        spec = train.something_spec(model.frames, model.image_size)
        frames, annotations = _frames_dir(args), _annotations(args)
        test = None
        if command == "eval" or train.eval_every:
            test = SomethingViews(frames, annotations, "validation", spec, args.version)
        clips = None
        if command == "train":
            clips = SomethingClips(frames, annotations, "train", spec, args.version)
        data = clips if clips is not None else test
        classes = data.class_names
        if len(classes) != model.num_classes:  # a run resumed or evaluated on other label files
            raise DatasetError(f"the labels file {data.labels_file} lists {len(classes)} classes, but the "
                               f"model has num_classes={model.num_classes}")
        return GTATask(model, clips, test, classes=classes, chunk=args.chunk)
