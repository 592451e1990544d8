"""Dataset formats for temporal video models.

- :mod:`fastlocal.data.mstcn`: the MS-TCN layout of GTEA / 50Salads / Breakfast
  (:class:`MSTCNDataset`).
- :mod:`fastlocal.data.synthetic`: a generator writing that layout
  (``python -m fastlocal.data.synthetic --out DIR``).
"""

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

__all__ = [
    "DatasetError",
    "MSTCNDataset",
    "Video",
    "read_bundle",
    "read_features",
    "read_labels",
    "read_mapping",
    "write_labels",
]
