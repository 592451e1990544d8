"""ETAD end to end: snippets from frame folders, a snippet encoder trained by encoder gradient
sampling (EGS), the detector on its features, two learning rates.

The released setting (sming256/ETAD ``configs/anet/e2e_anet_tsp_snippet0.3.py``): TSP's
R(2+1)D-34 (``frozen_stages=2``, ``norm_eval``), 128 snippets of 16 frames per video, chunks
of 4, snippet ratio 0.3, AdamW with the detector at 5e-4 and the backbone at 5e-7
(``lr_scale`` 1e-3 here), batch 4. The sampling, the chunked re-encoding and the gradient are
:class:`~fastlocal.models.backbones.SnippetEncoder`'s (through :mod:`fastlocal.selective`);
this module builds the data and the engine task around it.

Data: one folder of frames per video (:class:`~fastlocal.data.VideoReader`), named by
``name_template`` under a root, with the ground truth of :class:`~fastlocal.data.DetectionDataset`.
A video's T snippets of L consecutive frames start at evenly spaced frames (mmaction's
test-mode ``SampleFrames``: snippet t starts at ``int((F - L + 1) / T * (t + 0.5))``; frames
past the end repeat the last one). Frames are resized to a short side of ``short_side``,
centre-cropped to ``crop_size`` and normalised with TSP's Kinetics mean and std. Unlike the
released pipeline there is no augmentation (random crop, flip, ImgAug, colour jitter).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fastlocal import _validate as check
from fastlocal.data import DetectionDataset, DetectionSample, VideoReader
from fastlocal.data.detection import GroundTruth
from fastlocal.data.kinetics import normalize, resize_short_side

from ..backbones import R2Plus1D, R2Plus1DConfig, SnippetEncoder, load_r2plus1d, parameter_groups
from ..backbones.snippets import CHUNK_SIZE
from ..configs import replace
from .config import ETADConfig, ETADTrainConfig
from .data import ETADTask
from .model import ETAD, ETADOutput

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "ETADEndToEnd",
    "ETADEndToEndTask",
    "SnippetDataset",
    "released_e2e_train_config",
    "snippet_starts",
]

#: TSP's input normalisation (torchvision's Kinetics video models'), on values in [0, 1]
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def released_e2e_train_config() -> ETADTrainConfig:
    """The released end-to-end training: AdamW (weight decay 1e-4) at lr 5e-4 for the detector,
    batches of 4 videos, 6 epochs with the lr x0.1 after epoch 5 (the backbone's 5e-7 is the
    task's ``backbone_lr_scale`` 1e-3)."""
    return replace(ETADTrainConfig(), lr=5e-4, batch_size=4)


def snippet_starts(num_frames: int, snippets: int, snippet_frames: int) -> np.ndarray:
    """The first frame of each of ``snippets`` evenly spaced snippets of ``snippet_frames``
    frames in a video of ``num_frames`` frames: ``int((F - L + 1) / T * (t + 0.5))``, 0 when
    the video is shorter than a snippet. ``[T]`` int64."""
    check.integer("num_frames", num_frames, minimum=1)
    check.integer("snippets", snippets, minimum=1)
    check.integer("snippet_frames", snippet_frames, minimum=1)
    interval = max(num_frames - snippet_frames + 1, 1) / snippets
    return (interval * (np.arange(snippets) + 0.5)).astype(np.int64)


class SnippetDataset(DetectionDataset):
    """Videos of one subset as snippets for end-to-end training (module docstring).

    Each item is a :class:`~fastlocal.data.DetectionSample` whose ``features`` are the video's
    snippets ``[T, 3, L, S, S]`` float32 (T = ``snippets``, L = ``snippet_frames``, S =
    ``crop_size``), so :func:`~fastlocal.data.collate_detection` batches them to
    ``[B, T, 3, L, S, S]``; segments, labels, ids and durations are as in the parent class.

    Args:
        ground_truth, subset, classes, missing, out_of_range, ignore_labels, blocked, min_action:
            as :class:`~fastlocal.data.DetectionDataset`.
        frames: the directory holding one folder of frames per video.
        name_template: a video's folder name under ``frames`` (default ``"{video}"``).
        snippets, snippet_frames: T and L (released: 128 and 16).
        short_side, crop_size: the resize and the centre crop (released input: 128 and 112).
    """

    def __init__(
        self,
        ground_truth: str | os.PathLike | Mapping | GroundTruth,
        frames: str | os.PathLike,
        subset: str | None = None,
        *,
        snippets: int = 128,
        snippet_frames: int = 16,
        short_side: int = 128,
        crop_size: int = 112,
        name_template: str = "{video}",
        **kwargs: Any,
    ) -> None:
        self.snippet_frames = check.integer("snippet_frames", snippet_frames, minimum=1)
        self.short_side = check.integer("short_side", short_side, minimum=1)
        self.crop_size = check.integer("crop_size", crop_size, minimum=1)
        if crop_size > short_side:
            raise ValueError(f"crop_size={crop_size} must be <= short_side={short_side}")
        super().__init__(ground_truth, frames, subset, length=snippets, name_template=name_template, **kwargs)

    def _available(self, videos: list[str]) -> set[str]:
        return {v for v in videos if (self.features_path / self.name_template.format(video=v)).is_dir()}

    def snippets(self, index: int) -> torch.Tensor:
        """Video ``index``'s snippets ``[T, 3, L, S, S]`` float32, normalised."""
        reader = VideoReader(self.features_path / self.name_template.format(video=self.video_ids[index]))
        starts = snippet_starts(reader.num_frames, self.length, self.snippet_frames)
        indices = np.minimum(starts[:, None] + np.arange(self.snippet_frames), reader.num_frames - 1)
        frames = torch.from_numpy(reader.read(indices.reshape(-1))).permute(3, 0, 1, 2).float()  # [3, T*L, H, W]
        frames = resize_short_side(frames, self.short_side)
        h, w = frames.shape[-2:]
        top, left = (h - self.crop_size) // 2, (w - self.crop_size) // 2
        frames = frames[..., top:top + self.crop_size, left:left + self.crop_size]
        clips = normalize(frames, KINETICS_MEAN, KINETICS_STD)
        return clips.reshape(3, self.length, self.snippet_frames, self.crop_size, self.crop_size).transpose(0, 1)

    def __getitem__(self, index: int) -> DetectionSample:
        vid = self.video_ids[index]
        video = self.ground_truth.videos[vid]
        segments = torch.from_numpy(video.segments / video.duration).float()
        labels = torch.tensor([self.class_index[label] for label in video.labels], dtype=torch.int64)
        return DetectionSample(self.snippets(index).contiguous(), segments, labels, vid, video.duration)


class ETADEndToEnd(nn.Module):
    """A snippet encoder and ETAD's detector: ``forward(snippets [B, T, 3, L, S, S], anchors [B, K, 2])
    -> ETADOutput``; ``encoder`` (a :class:`~fastlocal.models.backbones.SnippetEncoder`) gives the
    detector its input ``[B, C, T]``."""

    def __init__(self, encoder: SnippetEncoder, detector: ETAD) -> None:
        super().__init__()
        self.encoder = encoder
        self.detector = detector

    def forward(self, snippets: torch.Tensor, anchors: torch.Tensor) -> ETADOutput:
        return self.detector(self.encoder(snippets), anchors)


class ETADEndToEndTask(ETADTask):
    """ETAD trained end to end on :class:`SnippetDataset` samples (the feature-mode task's loss,
    predictions, metrics and files, on snippets).

    Args:
        config: the detector; ``in_channels`` must be the backbone's output width.
        train, test, classifier, thresholds, ground_truth: as :class:`~fastlocal.models.etad.data.ETADTask`.
        backbone: the R(2+1)D's config (released: TSP's R(2+1)D-34 with ``frozen_stages=2,
            norm_eval=True``, ``r2plus1d_34(...).config``).
        checkpoint: a local backbone checkpoint (torchvision key layout) loaded by
            :func:`~fastlocal.models.backbones.load_r2plus1d` with ``prefix`` (TSP: ``"features."``);
            None: random initialisation.
        ratio, chunk_size, strategy: EGS (released 0.3, 4, ``"random"``; the paper 0.1).
        backbone_lr_scale: the backbone's lr over the detector's (released 5e-7 / 5e-4).
        train_norm: optimise the backbone's BatchNorm affine parameters (released quirk,
            :func:`~fastlocal.models.backbones.parameter_groups`).
    """

    eval_batch_size = 1

    def __init__(
        self,
        config: ETADConfig,
        train: Sequence[Any] | None = None,
        test: Sequence[Any] | None = None,
        *,
        backbone: R2Plus1DConfig,
        checkpoint: str | os.PathLike | None = None,
        prefix: str = "",
        ratio: float = 0.3,
        chunk_size: int = CHUNK_SIZE,
        strategy: str = "random",
        backbone_lr_scale: float = 1e-3,
        train_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, train, test, **kwargs)
        if not isinstance(backbone, R2Plus1DConfig):
            raise TypeError(f"backbone must be an R2Plus1DConfig, got {type(backbone).__name__}")
        if backbone.widths[-1] != config.in_channels:
            raise ValueError(f"the backbone outputs {backbone.widths[-1]} channels but ETADConfig.in_channels is "
                             f"{config.in_channels}")
        self.backbone, self.checkpoint, self.prefix = backbone, checkpoint, prefix
        self.ratio = check.real("ratio", ratio, low=0.0, high=1.0)
        self.chunk_size, self.strategy = chunk_size, strategy
        self.backbone_lr_scale = check.real("backbone_lr_scale", backbone_lr_scale, low=0.0)
        self.train_norm = train_norm
        self.find_unused_parameters = self.ratio == 0  # then the backbone gets no gradient

    def build_model(self) -> ETADEndToEnd:
        net = R2Plus1D(self.backbone)
        if self.checkpoint is not None:
            load_r2plus1d(net, self.checkpoint, prefix=self.prefix)
        encoder = SnippetEncoder(net, self.ratio, chunk_size=self.chunk_size, strategy=self.strategy)
        return ETADEndToEnd(encoder, ETAD(self.config))

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The detector's parameters at the run's lr and the backbone's trainable ones at
        ``lr * backbone_lr_scale`` (frozen stages and, unless ``train_norm``, BatchNorm in no group)."""
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        groups = parameter_groups(model.detector, model.encoder, detector_lr=1.0, backbone_lr=self.backbone_lr_scale,
                                  train_norm=self.train_norm)
        return [{"name": g["name"], "params": g["params"], "lr_scale": g["lr"]} for g in groups]
