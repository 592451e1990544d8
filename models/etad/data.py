"""ETAD's glue to the engine in feature mode: ActivityNet-layout data, proposal sampling, the
released loss, per-video post-processing, detection mAP and proposal recall.

:class:`ETADTask` is what :func:`fastlocal.models.engine.fit` and
:func:`~fastlocal.models.engine.evaluate` run on a
:class:`~fastlocal.data.DetectionDataset` (features rescaled to ``tscale`` steps);
:class:`CLI` adds the data options to ``python -m fastlocal.models etad train|eval|info``.
End-to-end mode (a snippet encoder trained by encoder gradient sampling) is
:mod:`fastlocal.models.etad.e2e`, THUMOS' sliding windows :mod:`fastlocal.models.etad.windows`;
both reuse this task, and :class:`CLI` builds either (``--mode e2e``, ``--preset thumos-*``).

Evaluation, per video: every candidate proposal (T(T+1)/2) through the detector, the
released post-processing (:func:`~fastlocal.models.etad.postprocess.postprocess_video`:
boundary masks, Gaussian soft-NMS, top ``max_proposals``); the kept proposals are scored
by ActivityNet's average recall, and, given a video-level classifier's scores file, each is
paired with the video's ``class_topk`` best classes and scored by detection mAP.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from fastlocal.data import DatasetError, DetectionDataset, DetectionSample, collate_detection
from fastlocal.data.detection import GroundTruth, write_predictions
from fastlocal.metrics.detection import (
    ACTIVITYNET_TIOU_THRESHOLDS,
    THUMOS_TIOU_THRESHOLDS,
    average_recall,
    detection_map,
)

from ..backbones import R2Plus1D, R2Plus1DConfig, r2plus1d_18, r2plus1d_34
from ..configs import replace
from ..engine import Task
from .config import ETADConfig, ETADTrainConfig
from .losses import etad_loss, make_targets
from .model import ETAD, average_stages
from .postprocess import postprocess_video, read_classifier_scores, top_classes
from .proposals import candidate_anchors, sample_proposals

__all__ = ["CLI", "E2E_BACKBONES", "ETADTask", "VideoPrediction", "e2e_backbone", "sample_batch_anchors",
           "tiou_thresholds"]

#: what ``write`` names its files under the run folder
DETECTIONS = "detections.json"
PROPOSALS = "proposals.json"
_PROPOSAL = "proposal"  # the label of the proposal-only entries (never written)


def tiou_thresholds(preset: str) -> np.ndarray:
    """The tIoU thresholds of a preset's benchmark: THUMOS-14's 0.3..0.7 for ``thumos-*``,
    ActivityNet's ``linspace(0.5, 0.95, 10)`` otherwise."""
    return THUMOS_TIOU_THRESHOLDS if preset.startswith("thumos") else ACTIVITYNET_TIOU_THRESHOLDS


def sample_batch_anchors(config: ETADConfig, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Detector proposal sampling for a batch: one independent draw per video (the released
    data loader samples in each ``__getitem__``) -> ``[B, k, 2]`` float32."""
    return torch.stack([sample_proposals(config.tscale, config.proposal_ratio, config.proposal_sampling,
                                         max_duration=config.max_duration, generator=generator)
                        for _ in range(batch)])


class VideoPrediction(NamedTuple):
    """One video's evaluation: its id, the kept ``proposals`` (``{"score", "segment"}`` in
    seconds, pick order) and the ``detections`` (``{"label", "score", "segment"}``; None
    without a classifier)."""

    video_id: str
    proposals: list[dict[str, Any]]
    detections: list[dict[str, Any]] | None


class ETADTask(Task):
    """ETAD in feature mode on :class:`~fastlocal.data.DetectionDataset` samples.

    Args:
        config: the detector (``in_channels`` and ``tscale`` must match the datasets').
        train: the training set or None (evaluation only).
        test: the evaluation set or None; its ``ground_truth`` (every video of its subset,
            those skipped for missing features included) is what the metrics compare with.
        classifier: a video-level classifier's scores, ``(scores per video, class names)`` as
            :func:`~fastlocal.models.etad.postprocess.read_classifier_scores` returns, or its
            file; every evaluated video must be in it. None: proposals only (no mAP).
        thresholds: tIoU thresholds of mAP and recall (:func:`tiou_thresholds`).
        ground_truth: what the metrics compare with (default: ``test.ground_truth``).
    """

    eval_batch_size = 4
    #: the batch key holding the detector's input (end-to-end mode: the snippets)
    input_key = "features"

    def __init__(
        self,
        config: ETADConfig,
        train: Sequence[Any] | None = None,
        test: Sequence[Any] | None = None,
        *,
        classifier: tuple[Mapping[str, Sequence[float]], Sequence[str]] | str | os.PathLike | None = None,
        thresholds: Sequence[float] | np.ndarray = ACTIVITYNET_TIOU_THRESHOLDS,
        ground_truth: GroundTruth | None = None,
    ) -> None:
        self.config = config
        self._train, self._test = train, test
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.ground_truth = ground_truth if ground_truth is not None else getattr(test, "ground_truth", None)
        if test is not None and self.ground_truth is None:
            raise ValueError("ETADTask: the evaluation set has no ground_truth; pass ground_truth=")
        if isinstance(classifier, str | os.PathLike):
            self.classifier_source = os.fspath(classifier)
            classifier = read_classifier_scores(classifier)
        else:
            self.classifier_source = "classifier"
        self.classifier = classifier
        if classifier is not None:
            scores, names = classifier
            if not 1 <= config.class_topk <= len(names):
                raise ValueError(f"ETADConfig.class_topk={config.class_topk} must be in [1, {len(names)}] (the "
                                 f"classifier's class count)")
            missing = [v for v in getattr(test, "video_ids", ()) if v not in scores]
            if missing:
                raise DatasetError(f"{self.classifier_source}: no class scores for {len(missing)} evaluated video(s), "
                                   f"e.g. {missing[0]!r}")

    def build_model(self) -> nn.Module:
        return ETAD(self.config)

    def train_set(self) -> Sequence[Any]:
        if self._train is None:
            raise ValueError("ETADTask has no training set")
        return self._train

    def eval_set(self) -> Sequence[Any] | None:
        return self._test

    def collate(self, items: list[DetectionSample]) -> dict[str, Any]:
        return collate_detection(items)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The released loss on proposals sampled per video (``proposal_ratio``, ``proposal_sampling``).

        The released loss pools the batch (balanced and subsampled sets are drawn over all
        B x K proposals), so it is not the mean of per-video losses the engine assumes: with
        ``grad_accum`` > 1 or several processes the micro-batches' losses are weighted means of
        pooled losses, which is not what one pooled batch gives (the released code has neither).
        """
        inputs = batch[self.input_key]
        anchors = sample_batch_anchors(self.config, inputs.shape[0]).to(inputs.device)
        targets = make_targets(batch["segments"], anchors, self.config.tscale)
        return etad_loss(model(inputs, anchors), targets, self.config)

    @property
    def proposals_per_video(self) -> int:
        """How many proposals a video keeps (the recall's ``AR@N`` limit): ``max_proposals``."""
        return self.config.max_proposals

    def window_proposals(self, model: nn.Module, inputs: torch.Tensor, durations: Sequence[float]
                         ) -> list[list[dict[str, Any]]]:
        """Every candidate proposal of each input ``[B, ...]`` through the detector, then the released
        post-processing: per input, the kept ``{"score", "segment"}`` (seconds of ``durations[b]``)."""
        config = self.config
        anchors = candidate_anchors(config.tscale, config.max_duration).to(inputs.device)
        output = model(inputs, anchors.expand(inputs.shape[0], -1, -1))
        refined, iou = average_stages(output)
        out = []
        for i, duration in enumerate(durations):
            # one label of score 1 gives the proposals with their own scores; classes are paired later
            proposals = postprocess_video(refined[i].float(), iou[i].float(), output.tem[i].float(),
                                          duration=duration, classes=[(_PROPOSAL, 1.0)], sigma=config.nms_sigma,
                                          max_proposals=config.max_proposals, drop_last=config.nms_drop_last)
            for entry in proposals:
                del entry["label"]
            out.append(proposals)
        return out

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> list[VideoPrediction]:
        """Every candidate proposal of each video through the detector, then the released post-processing."""
        proposals = self.window_proposals(model, batch[self.input_key], batch["durations"])
        return [VideoPrediction(vid, p, self._classify(vid, p))
                for vid, p in zip(batch["video_ids"], proposals, strict=True)]

    def _classify(self, video_id: str, proposals: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Each proposal paired with the video's ``class_topk`` classes, proposal-major (as
        :func:`~fastlocal.models.etad.postprocess.detections`); score = proposal x class score."""
        if self.classifier is None:
            return None
        scores, names = self.classifier
        if video_id not in scores:
            raise DatasetError(f"{self.classifier_source}: no class scores for video {video_id!r}")
        classes = top_classes(scores[video_id], names, self.config.class_topk)
        return [{"label": label, "score": p["score"] * score, "segment": p["segment"]}
                for p in proposals for label, score in classes]

    def score(self, records: list[VideoPrediction]) -> dict[str, float]:
        """Percentages: proposal ``AR@1``, ``AR@10``, ``AR@max_proposals`` and ``AR_AUC`` (ActivityNet's
        proposal metric at up to :attr:`proposals_per_video` per video) and, with a classifier,
        ``average_mAP`` and ``mAP@<t>`` per threshold (ActivityNet's ``eval_detection.py``)."""
        gt = self.ground_truth
        n = self.proposals_per_video
        recall = average_recall(gt, {"results": {r.video_id: r.proposals for r in records}}, self.thresholds,
                                max_avg_proposals=n, subset=None)
        # the curve's first point is n / 100 proposals: AR@1 exists for n <= 100 only
        out = {f"AR@{k}": 100.0 * recall.at(k) for k in sorted({1, min(10, n), n})
               if k >= recall.proposals_per_video[0]}
        out["AR_AUC"] = recall.auc_percent
        if self.classifier is not None:
            # a class the evaluated ground truth lacks has no AP to change (the official code raises a
            # KeyError instead): its predictions are left out
            known = set(gt.classes)
            results = {r.video_id: [d for d in r.detections if d["label"] in known] for r in records}
            result = detection_map(gt, {"results": results}, self.thresholds, subset=None)
            out.update({k: 100.0 * v for k, v in result.as_dict().items()})
        return out

    def write(self, records: list[VideoPrediction], out: Path) -> None:
        """``out/proposals.json`` and, with a classifier, ``out/detections.json``: submissions in
        the ActivityNet layout (``{"results": {video: [{"label", "score", "segment"}, ...]}}``, seconds)."""
        write_predictions(out / PROPOSALS, {r.video_id: r.proposals for r in records})
        if self.classifier is not None:
            write_predictions(out / DETECTIONS, {r.video_id: r.detections for r in records})


# ---- command line ----------------------------------------------------------------------------------


def _in_data(args: argparse.Namespace, value: str | None, default: str, flag: str) -> Path:
    """``value``, else ``DATA/default``; a clear error when neither is given."""
    if value is not None:
        return Path(value)
    if args.data is None:
        raise ValueError(f"give --data DIR (holding {default}) or {flag}")
    return Path(args.data) / default


def _tiny_r2plus1d(*, frozen_stages: int, norm_eval: bool) -> R2Plus1D:
    return R2Plus1D(R2Plus1DConfig(layers=(1, 1, 1, 1), widths=(4, 6, 8, 8), stem_width=3,
                                   frozen_stages=frozen_stages, norm_eval=norm_eval))


#: ``--backbone`` choices of end-to-end mode (TSP's released encoder is R(2+1)D-34; ``tiny``, output
#: width 8, is a CPU-sized net for tests and smoke runs)
E2E_BACKBONES: dict[str, Callable[..., R2Plus1D]] = {
    "r2plus1d_34": r2plus1d_34, "r2plus1d_18": r2plus1d_18, "tiny": _tiny_r2plus1d}


def e2e_backbone(name: str) -> R2Plus1DConfig:
    """The R(2+1)D config of ``--backbone name`` (:data:`E2E_BACKBONES`) in the released setting:
    stem and stages 1-2 frozen, BatchNorm in eval mode."""
    if name not in E2E_BACKBONES:
        raise ValueError(f"backbone must be one of {tuple(E2E_BACKBONES)}, got {name!r}")
    # the factories own the configs (R(2+1)D-34's middle widths and BatchNorm settings): build, keep the config
    return E2E_BACKBONES[name](frozen_stages=2, norm_eval=True).config


def _is_thumos(args: argparse.Namespace) -> bool:
    return args.preset.startswith("thumos")


class CLI:
    """ETAD's options on ``python -m fastlocal.models etad ...``.

    Feature mode (``--mode feature``): ``--data DIR`` holds ``annotations.json`` (ActivityNet
    layout), ``features/<video>.npy`` (``[T, C]``) and optionally ``classifier.json``, as ``python -m
    fastlocal.data.synthetic_detection`` writes; ``--annotations``, ``--features`` and
    ``--classifier`` name them one by one (ActivityNet: ``--name-template 'v_{video}.npy'``).
    The ``thumos-*`` presets cut each video into windows of ``tscale`` snippets with stride
    ``tscale // 2`` (:mod:`fastlocal.models.etad.windows`), drop ``Ambiguous`` annotations and
    report mAP at THUMOS' tIoU 0.3..0.7 (THUMOS-14 JSON files name their subsets ``val`` and
    ``test``: ``--train-subset val --subset test``).

    End-to-end mode (``--mode e2e``, ActivityNet-style presets): ``--frames DIR`` (default
    ``DATA/frames``) holds one folder of frames per video; the snippet encoder is an R(2+1)D
    (``--backbone``, released TSP's ``r2plus1d_34``: stages 1-2 frozen, BatchNorm in eval mode)
    loaded from ``--encoder-weights FILE`` (torchvision layout, keys under ``--encoder-prefix``;
    TSP's: ``features.``) or randomly initialised, trained by encoder gradient sampling at
    ``--egs-ratio`` (released 0.3, paper 0.1) with the backbone's lr ``--backbone-lr-scale`` times
    the detector's (:class:`fastlocal.models.etad.e2e.ETADEndToEndTask`). ``in_channels`` is the
    backbone's output width.
    """

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
        parser.add_argument("--data", default=None, help="dataset directory (annotations.json, features/ or "
                            "frames/, classifier.json)")
        parser.add_argument("--annotations", default=None, help="ground truth JSON (default DATA/annotations.json)")
        parser.add_argument("--features", default=None, help="features directory or .h5 file (default DATA/features)")
        parser.add_argument("--name-template", default=None,
                            help="a video's feature file (or e2e: frame folder) name (default '{video}.npy' / "
                                 "'{video}'; ActivityNet: 'v_{video}.npy')")
        parser.add_argument("--mode", default="feature", choices=("feature", "e2e"),
                            help="feature (pre-extracted features) or e2e (frames, snippet encoder trained by "
                                 "encoder gradient sampling)")
        parser.add_argument("--backbone", default="r2plus1d_34", choices=tuple(E2E_BACKBONES),
                            help="e2e: the snippet encoder (TSP's released R(2+1)D-34)")
        if command == "info":
            return
        parser.add_argument("--classifier", default=None,
                            help="video-level class scores {'results': {video: [scores]}, 'class': [names]} "
                                 "(default DATA/classifier.json when present; none: proposals and recall only)")
        parser.add_argument("--train-subset", default="training", help="the annotations' training subset")
        parser.add_argument("--subset", default="validation", help="the annotations' evaluation subset")
        parser.add_argument("--missing", default="error", choices=("error", "skip"),
                            help="a video without features (or frames): error, or skip it (counted in a warning)")
        e2e = parser.add_argument_group("end-to-end mode (--mode e2e)")
        e2e.add_argument("--frames", default=None, help="directory of one frame folder per video (default DATA/frames)")
        e2e.add_argument("--encoder-weights", default=None,
                         help="local R(2+1)D checkpoint (torchvision layout; default: random initialisation)")
        e2e.add_argument("--encoder-prefix", default="", help="the backbone's key prefix in it (TSP: 'features.')")
        e2e.add_argument("--egs-ratio", type=float, default=0.3,
                         help="share of snippets encoded with gradients (released 0.3, paper 0.1)")
        e2e.add_argument("--backbone-lr-scale", type=float, default=1e-3,
                         help="the backbone's lr over the detector's (released 5e-7 / 5e-4)")
        e2e.add_argument("--snippet-frames", type=int, default=16, help="frames per snippet (released 16)")
        e2e.add_argument("--short-side", type=int, default=128, help="frames resized to this short side (128)")
        e2e.add_argument("--crop-size", type=int, default=112, help="centre crop (112)")

    @staticmethod
    def _check_mode(args: argparse.Namespace) -> None:
        if args.mode == "e2e" and _is_thumos(args) and args.command != "info":
            raise ValueError(f"--mode e2e --preset {args.preset}: end-to-end training on THUMOS windows is not "
                             "available; use the feature mode or an ActivityNet-style preset (anet-*, small)")


    @staticmethod
    def configure(args: argparse.Namespace, model: ETADConfig, train: ETADTrainConfig
                  ) -> tuple[ETADConfig, ETADTrainConfig]:
        """``in_channels`` from the first feature file of the training subset (e2e: the backbone's width)."""
        CLI._check_mode(args)
        if args.mode == "e2e":
            return replace(model, in_channels=e2e_backbone(args.backbone).widths[-1]), train
        if args.data is None and args.features is None:
            return model, train
        probe = CLI._dataset(args, model, getattr(args, "train_subset", "training"))
        return replace(model, in_channels=int(probe.raw_features(0).shape[1])), train

    @staticmethod
    def _dataset(args: argparse.Namespace, model: ETADConfig, subset: str, *, training: bool = True
                 ) -> DetectionDataset:
        return DetectionDataset(
            _in_data(args, args.annotations, "annotations.json", "--annotations"),
            _in_data(args, args.features, "features", "--features"), subset, length=model.tscale,
            name_template=args.name_template, missing=getattr(args, "missing", "error"),
            # training: ETAD's clipping to the video; evaluation: the segments as the official code sees them
            out_of_range="clip" if training else "keep",
            ignore_labels=("Ambiguous",) if _is_thumos(args) else ())

    @staticmethod
    def _snippets(args: argparse.Namespace, model: ETADConfig, subset: str, *, training: bool = True):
        from .e2e import SnippetDataset  # e2e imports this module

        frames = _in_data(args, args.frames, "frames", "--frames")
        if not frames.is_dir():
            raise DatasetError(f"--frames {frames}: no such directory (one folder of frames per video)")
        return SnippetDataset(
            _in_data(args, args.annotations, "annotations.json", "--annotations"), frames, subset,
            snippets=model.tscale, snippet_frames=args.snippet_frames, short_side=args.short_side,
            crop_size=args.crop_size, name_template=args.name_template or "{video}", missing=args.missing,
            out_of_range="clip" if training else "keep")

    @staticmethod
    def describe(args: argparse.Namespace) -> dict[str, Any]:
        """What ``eval.json`` records about the data."""
        out = {"annotations": str(_in_data(args, args.annotations, "annotations.json", "--annotations"))}
        if args.mode == "e2e":
            out.update(frames=str(_in_data(args, args.frames, "frames", "--frames")), backbone=args.backbone,
                       encoder_weights=args.encoder_weights, egs_ratio=args.egs_ratio)
        else:
            out["features"] = str(_in_data(args, args.features, "features", "--features"))
        return {**out, "subset": args.subset, "classifier": CLI._classifier(args)}

    @staticmethod
    def _classifier(args: argparse.Namespace) -> str | None:
        if args.classifier is not None:
            return args.classifier
        default = Path(args.data) / "classifier.json" if args.data is not None else None
        return str(default) if default is not None and default.is_file() else None

    @staticmethod
    def task(args: argparse.Namespace, model: ETADConfig, train: ETADTrainConfig, command: str) -> ETADTask:
        CLI._check_mode(args)
        evaluates = command == "eval" or bool(train.eval_every)
        kwargs = {"classifier": CLI._classifier(args), "thresholds": tiou_thresholds(args.preset)}
        if args.mode == "e2e":
            from .e2e import ETADEndToEndTask  # e2e imports this module

            weights = args.encoder_weights
            if weights is not None and not Path(weights).is_file():
                raise FileNotFoundError(f"--encoder-weights {weights}: no such file")
            test = CLI._snippets(args, model, args.subset, training=False) if evaluates else None
            training = CLI._snippets(args, model, args.train_subset) if command == "train" else None
            return ETADEndToEndTask(model, training, test, backbone=e2e_backbone(args.backbone), checkpoint=weights,
                                    prefix=args.encoder_prefix, ratio=args.egs_ratio,
                                    backbone_lr_scale=args.backbone_lr_scale, **kwargs)
        test = CLI._dataset(args, model, args.subset, training=False) if evaluates else None
        training = CLI._dataset(args, model, args.train_subset) if command == "train" else None
        if _is_thumos(args):
            from .windows import ETADWindowTask, WindowDataset  # windows imports this module

            test = WindowDataset(test, window=model.tscale) if test is not None else None
            training = WindowDataset(training, window=model.tscale, training=True) if training is not None else None
            return ETADWindowTask(model, training, test, **kwargs)
        return ETADTask(model, training, test, **kwargs)
