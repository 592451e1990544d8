"""Dataset formats for temporal video models.

- :mod:`fastlocal.data.mstcn`: the MS-TCN layout of GTEA / 50Salads / Breakfast
  (:class:`MSTCNDataset`).
- :mod:`fastlocal.data.synthetic`: a generator writing that layout
  (``python -m fastlocal.data.synthetic --out DIR``).
- :mod:`fastlocal.data.video` and :mod:`fastlocal.data.kinetics`: video files (PyAV, the ``video``
  extra) and frame folders; Kinetics-style ``path unused label`` lists, training clips and
  3-crop x 10-clip test views as VidTr's released code (:class:`KineticsClips`,
  :class:`KineticsViews`); :mod:`fastlocal.data.synthetic_video` writes such a dataset
  (``python -m fastlocal.data.synthetic_video --out DIR``).
- :mod:`fastlocal.data.something`: Something-Something v1 (CSV) / v2 (JSON) label files over frame
  folders, TSN segment sampling, multi-scale crop with the left/right flip rule, centre and
  multi-view tests (:class:`SomethingClips`, :class:`SomethingViews`);
  :mod:`fastlocal.data.synthetic_something` writes such a dataset
  (``python -m fastlocal.data.synthetic_something --out DIR``).
- :mod:`fastlocal.data.detection`: temporal action detection, ActivityNet / THUMOS ground
  truth, per-video features rescaled as ETAD (:class:`DetectionDataset`), submissions;
  :mod:`fastlocal.data.synthetic_detection` writes such a dataset
  (``python -m fastlocal.data.synthetic_detection --out DIR``).
"""

from .detection import (
    DetectionDataset,
    DetectionSample,
    GroundTruth,
    Predictions,
    collate_detection,
    read_ground_truth,
    read_predictions,
    write_predictions,
)
from .kinetics import ClipSpec, KineticsClips, KineticsViews, VideoEntry, read_video_list
from .mstcn import (
    DatasetError,
    MSTCNDataset,
    Video,
    read_bundle,
    read_features,
    read_labels,
    read_mapping,
    write_labels,
)
from .something import SomethingClips, SomethingEntry, SomethingSpec, SomethingViews
from .video import VideoDecoderMissingError, VideoReader, read_frames

__all__ = [
    "ClipSpec",
    "DatasetError",
    "DetectionDataset",
    "DetectionSample",
    "GroundTruth",
    "KineticsClips",
    "KineticsViews",
    "MSTCNDataset",
    "Predictions",
    "SomethingClips",
    "SomethingEntry",
    "SomethingSpec",
    "SomethingViews",
    "Video",
    "VideoDecoderMissingError",
    "VideoEntry",
    "VideoReader",
    "collate_detection",
    "read_bundle",
    "read_features",
    "read_frames",
    "read_ground_truth",
    "read_labels",
    "read_mapping",
    "read_predictions",
    "read_video_list",
    "write_labels",
    "write_predictions",
]
