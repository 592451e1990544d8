"""ETAD on THUMOS-14: sliding windows over each video's snippet features.

The paper (Sec. 4.2) cuts THUMOS feature sequences into windows of 128 snippets with stride
64; the released code has no THUMOS pipeline, so the window arithmetic follows G-TAD's THUMOS
loader (github frostinassiky/gtad, ``gtad_lib/dataset.py``), the pipeline whose features the
paper uses. For a video of N snippets, windows of W = ``tscale`` snippets, stride S = W / 2:

- :func:`window_starts`: starts 0, S, 2S, ... while the window fits; when the last one ends
  before N, one more window aligned to the end (start N - W). A video shorter than a window
  gets one window at 0, its features zero-padded to W. G-TAD adds the end-aligned window only
  when more than ``int(W / skip)`` snippets (25 with its TSN features) would stay uncovered;
  here it is added whenever any snippet would, so every snippet is evaluated.
- Training (:class:`WindowDataset` with ``training=True``): a window is kept when some ground
  truth action lies more than ``coverage`` (0.9, G-TAD's) inside it (its intersection with the
  window over its length); its targets are every action overlapping it, clipped to it. Windows
  holding no such action (background, or only cut actions) are dropped, as G-TAD does.
- Evaluation: every window of every video. Each window is post-processed as a video of its own
  (boundary masks, Gaussian soft-NMS keeping ``max_proposals``, ETAD's
  :func:`~fastlocal.models.etad.postprocess.postprocess_video`), its proposals mapped back to
  video seconds (:func:`to_video_seconds`), and the windows' proposals of a video merged by one
  more Gaussian soft-NMS over their union (:func:`merge_windows`, keeping ``video_proposals``,
  200 as G-TAD's ``num_prop``), G-TAD's ``_gen_detection_video``: overlapping windows propose
  the same action twice, and the second soft-NMS decays the duplicate.

Time: snippet ``t`` of a video of N snippets and ``duration`` seconds spans
``[t, t + 1) * duration / N`` (features spread evenly over the video; window ``[s, s + W)``
covers ``[s, s + W) * duration / N`` seconds).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fastlocal import _validate as check
from fastlocal._npy import npy_layout
from fastlocal.data import DatasetError, DetectionDataset, collate_detection

from .config import ETADConfig
from .data import ETADTask, VideoPrediction
from .postprocess import soft_nms_proposals

__all__ = [
    "ETADWindowTask",
    "FeatureWindow",
    "WindowDataset",
    "WindowPrediction",
    "clip_to_window",
    "collate_windows",
    "merge_windows",
    "to_video_seconds",
    "window_starts",
]

#: G-TAD's training filter: a window is kept when an action lies more than this share inside it
TRAIN_COVERAGE = 0.9
#: proposals kept per video after merging its windows (G-TAD's ``num_prop``)
VIDEO_PROPOSALS = 200


def window_starts(num_snippets: int, window: int, stride: int) -> np.ndarray:
    """The first snippet of each window ``[n]`` int64 (module docstring): 0, ``stride``, ... while
    a window fits, then one aligned to the end if the grid leaves snippets uncovered; ``[0]``
    when the video has at most ``window`` snippets."""
    check.integer("num_snippets", num_snippets, minimum=1)
    check.integer("window", window, minimum=1)
    check.integer("stride", stride, minimum=1)
    if num_snippets <= window:
        return np.zeros(1, np.int64)
    starts = np.arange(0, num_snippets - window + 1, stride, dtype=np.int64)
    if starts[-1] + window < num_snippets:
        starts = np.append(starts, num_snippets - window)
    return starts


def clip_to_window(segments: np.ndarray, start: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Actions ``[K, 2]`` (in snippets) against the window ``[start, start + window)``: their
    ``coverage [K]`` (intersection with the window over their length; 0 for an empty action)
    and the actions clipped to the window as fractions of it ``[K, 2]`` in [0, 1]."""
    segments = np.asarray(segments, np.float64).reshape(-1, 2)
    clipped = np.clip(segments, start, start + window)
    length = segments[:, 1] - segments[:, 0]
    inside = clipped[:, 1] - clipped[:, 0]
    coverage = np.divide(inside, length, out=np.zeros_like(inside), where=length > 0)
    return coverage, (clipped - start) / window


def to_video_seconds(segments: torch.Tensor, start: int, window: int, snippet_seconds: float,
                     duration: float) -> torch.Tensor:
    """Segments ``[k, 2]`` in fractions of the window starting at snippet ``start`` -> seconds of
    the video ``[k, 2]`` float64, clipped to ``[0, duration]`` (the padding of a short video)."""
    seconds = (start + segments.double() * window) * snippet_seconds
    return seconds.clamp(0.0, duration)


def merge_windows(segments: torch.Tensor, scores: torch.Tensor, *, sigma: float, max_proposals: int,
                  backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One video's proposals from all its windows, ``segments [M, 2]`` (seconds) and ``scores [M]``,
    merged by Gaussian soft-NMS over their union -> (kept segments ``[k, 2]``, decayed scores
    ``[k]``) in pick order, k <= ``max_proposals``."""
    picked, decayed = soft_nms_proposals(segments, scores, sigma=sigma, max_proposals=max_proposals,
                                         backend=backend)
    return segments[picked], decayed


class FeatureWindow(NamedTuple):
    """One window: ``features [C, W]`` float32 (zero past the video's end), ``segments [K, 2]``
    float32 in fractions of the window, ``labels [K]`` int64, the video id, its ``duration``
    (seconds), the window's first snippet ``start`` and the video's ``snippet_seconds``."""

    features: torch.Tensor
    segments: torch.Tensor
    labels: torch.Tensor
    video_id: str
    duration: float
    start: int
    snippet_seconds: float


def collate_windows(items: Sequence[FeatureWindow]) -> dict[str, Any]:
    """:func:`~fastlocal.data.collate_detection`'s batch (``features [B, C, W]``, ...) plus the
    windows' ``starts`` and ``snippet_seconds`` (lists)."""
    batch = collate_detection(items)
    batch["starts"] = [w.start for w in items]
    batch["snippet_seconds"] = [w.snippet_seconds for w in items]
    return batch


class WindowDataset(torch.utils.data.Dataset):
    """The windows of every video of a :class:`~fastlocal.data.DetectionDataset` (module docstring).

    Args:
        videos: the videos (its ``length`` is unused: windows are cut from the stored features).
        window: W, snippets per window (ETAD's ``tscale``); ``stride``: default ``window // 2``.
        training: keep only the windows holding an action more than ``coverage`` inside them;
            False: every window.
    """

    def __init__(self, videos: DetectionDataset, *, window: int = 128, stride: int | None = None,
                 training: bool = False, coverage: float = TRAIN_COVERAGE) -> None:
        if not isinstance(videos, DetectionDataset):
            raise TypeError(f"videos must be a DetectionDataset, got {type(videos).__name__}")
        self.videos = videos
        self.window = check.integer("window", window, minimum=1)
        self.stride = check.integer("stride", max(window // 2, 1) if stride is None else stride, minimum=1)
        self.coverage = check.real("coverage", coverage, low=0.0, high=1.0)
        self.training = bool(training)
        self.num_snippets = [self._count(i) for i in range(len(videos))]
        self.items: list[tuple[int, int]] = []  # (video index, first snippet)
        for index, n in enumerate(self.num_snippets):
            for start in window_starts(n, self.window, self.stride).tolist():
                if not training or (self._clip(index, start)[0] > self.coverage).any():
                    self.items.append((index, start))
        if not self.items:
            raise DatasetError(f"{videos.ground_truth.source}: no window of {self.window} snippets holds an action "
                               f"more than {self.coverage:g} inside it")

    @property
    def ground_truth(self):
        """The videos' :class:`~fastlocal.data.detection.GroundTruth` (what the metrics compare with)."""
        return self.videos.ground_truth

    @property
    def video_ids(self) -> list[str]:
        return self.videos.video_ids

    def _count(self, index: int) -> int:
        """N of video ``index`` from the ``.npy`` header (no read), else from its features."""
        data = self.videos
        if not data.h5_file:
            path = Path(data.features_path) / data.name_template.format(video=data.video_ids[index])
            try:
                shape = npy_layout(path)[0]
            except (OSError, ValueError) as exc:
                raise DatasetError(f"cannot read features {os.fspath(path)}: {exc}") from None
            if len(shape) == 2 and shape[0] >= 1:
                return int(shape[0])
        return int(data.raw_features(index).shape[0])

    def snippet_seconds(self, index: int) -> float:
        video = self.videos.ground_truth.videos[self.videos.video_ids[index]]
        return video.duration / self.num_snippets[index]

    def _clip(self, index: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        video = self.videos.ground_truth.videos[self.videos.video_ids[index]]
        return clip_to_window(video.segments / self.snippet_seconds(index), start, self.window)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> FeatureWindow:
        index, start = self.items[item]
        vid = self.videos.video_ids[index]
        raw = self.videos.raw_features(index)[start:start + self.window]  # [<= W, C]
        features = torch.zeros(raw.shape[1], self.window)
        features[:, :raw.shape[0]] = torch.from_numpy(np.ascontiguousarray(raw.T))
        coverage, clipped = self._clip(index, start)
        keep = coverage > 0  # every action overlapping the window, clipped to it
        labels = [self.videos.class_index[label]
                  for label, k in zip(self.videos.ground_truth.videos[vid].labels, keep, strict=True) if k]
        return FeatureWindow(features, torch.from_numpy(clipped[keep]).float().reshape(-1, 2),
                             torch.tensor(labels, dtype=torch.int64), vid,
                             self.videos.ground_truth.videos[vid].duration, start, self.snippet_seconds(index))


class WindowPrediction(NamedTuple):
    """One evaluated window: its video, ``duration``, kept proposals ``segments [k, 2]`` (video
    seconds, float64) and ``scores [k]`` (float64)."""

    video_id: str
    duration: float
    segments: torch.Tensor
    scores: torch.Tensor


class ETADWindowTask(ETADTask):
    """ETAD in feature mode on THUMOS-style windows (:class:`WindowDataset` train and test sets).

    Training is :class:`~fastlocal.models.etad.data.ETADTask`'s on windows; evaluation predicts
    every window, merges each video's windows (:func:`merge_windows`, ``video_proposals`` kept)
    and scores or writes the videos as the parent does (mAP at ``thresholds``, THUMOS' 0.3..0.7
    from :func:`~fastlocal.models.etad.data.tiou_thresholds`).
    """

    def __init__(self, config: ETADConfig, train: WindowDataset | None = None, test: WindowDataset | None = None,
                 *, video_proposals: int = VIDEO_PROPOSALS, **kwargs: Any) -> None:
        for name, data in (("train", train), ("test", test)):
            if data is not None and (not isinstance(data, WindowDataset) or data.window != config.tscale):
                raise ValueError(f"{name} must be a WindowDataset with window = ETADConfig.tscale={config.tscale}")
        super().__init__(config, train, test, **kwargs)
        self.video_proposals = check.integer("video_proposals", video_proposals, minimum=1)

    @property
    def proposals_per_video(self) -> int:
        return self.video_proposals

    def collate(self, items: list[FeatureWindow]) -> dict[str, Any]:
        return collate_windows(items)

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> list[WindowPrediction]:
        """Each window post-processed as a video of ``tscale`` snippets, its proposals in video seconds."""
        window = self.config.tscale
        spans = [window * s for s in batch["snippet_seconds"]]
        out = []
        for proposals, vid, duration, start, step in zip(
                self.window_proposals(model, batch[self.input_key], [1.0] * len(spans)), batch["video_ids"],
                batch["durations"], batch["starts"], batch["snippet_seconds"], strict=True):
            segments = torch.tensor([p["segment"] for p in proposals], dtype=torch.float64).reshape(-1, 2)
            scores = torch.tensor([p["score"] for p in proposals], dtype=torch.float64)
            out.append(WindowPrediction(vid, duration, to_video_seconds(segments, start, window, step, duration),
                                        scores))
        return out

    def merge(self, records: list[WindowPrediction]) -> list[VideoPrediction]:
        """Each video's windows merged (:func:`merge_windows`), videos in first-window order."""
        grouped: dict[str, list[WindowPrediction]] = {}
        for record in records:
            grouped.setdefault(record.video_id, []).append(record)
        out = []
        for vid, windows in grouped.items():
            segments, scores = merge_windows(torch.cat([w.segments for w in windows]),
                                             torch.cat([w.scores for w in windows]), sigma=self.config.nms_sigma,
                                             max_proposals=self.video_proposals)
            proposals = [{"score": s, "segment": seg} for seg, s in zip(segments.tolist(), scores.tolist(),
                                                                         strict=True)]
            out.append(VideoPrediction(vid, proposals, self._classify(vid, proposals)))
        return out

    def score(self, records: list[WindowPrediction]) -> dict[str, float]:
        return super().score(self.merge(records))

    def write(self, records: list[WindowPrediction], out: Path) -> None:
        super().write(self.merge(records), out)
