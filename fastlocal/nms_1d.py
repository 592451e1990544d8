"""1-D non-maximum suppression of temporal detections: ``nms_1d``, ``batched_nms_1d``, ``soft_nms_1d``.

Conventions (all backends): candidates are visited by decreasing score, equal scores
in index order; IoU of ``[start, end]`` intervals, 0 when the union is empty; hard NMS
suppresses IoU strictly greater than the threshold (torchvision's rule).
"""

from __future__ import annotations

import torch

from . import _validate as check
from ._dispatch import kernels, resolve_backend
from .reference import nms_1d as reference

IMPLEMENTED = ("cuda", "cpu", "reference")  # nms_1d, batched_nms_1d
SOFT_NMS_IMPLEMENTED = ("reference",)  # soft_nms_1d: its loop is sequential by nature


def _check_detections(segments: object, scores: object) -> torch.device:
    check.tensor("segments", segments, ndim=2)
    check.tensor("scores", scores, ndim=1)
    if segments.shape[1] != 2:
        raise ValueError(f"segments must have shape [N, 2] (start, end), got {tuple(segments.shape)}")
    if scores.shape[0] != segments.shape[0]:
        raise ValueError(f"scores must have shape [N] = [{segments.shape[0]}] to match segments, "
                         f"got {tuple(scores.shape)}")
    device = check.same_device(segments=segments, scores=scores)
    if check.checking_values() and segments.numel():
        if not (torch.isfinite(segments).all() and torch.isfinite(scores).all()):
            raise ValueError("segments and scores must be finite (found NaN or inf)")
        if (segments[:, 1] < segments[:, 0]).any():
            raise ValueError("segments must satisfy start <= end in every row")
    return device


def _common_dtype(segments: torch.Tensor, scores: torch.Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (segments.dtype, scores.dtype) else torch.float32


def nms_1d(
    segments: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, backend: str | None = None
) -> torch.Tensor:
    """Greedy NMS on ``[N, 2]`` segments ``(start, end)`` with ``[N]`` scores.

    Returns the int64 indices of the kept segments, by decreasing score.
    """
    device = _check_detections(segments, scores)
    iou_threshold = check.real("iou_threshold", iou_threshold, low=0.0, high=1.0)
    dtype = _common_dtype(segments, scores)
    segments, scores = segments.to(dtype), scores.to(dtype)
    name = resolve_backend("nms_1d", device, backend, IMPLEMENTED)
    if name == "reference":
        return reference.nms_1d(segments, scores, iou_threshold)
    return _nms_1d(segments, scores, iou_threshold, name)


@torch.library.custom_op("fastlocal::nms_1d", mutates_args=())
def _nms_1d(segments: torch.Tensor, scores: torch.Tensor, iou_threshold: float, backend: str) -> torch.Tensor:
    return kernels(backend, "nms_1d").nms_1d(segments, scores, iou_threshold).to(segments.device)


@_nms_1d.register_fake
def _(segments, scores, iou_threshold, backend):
    kept = torch.library.get_ctx().new_dynamic_size()
    return segments.new_empty((kept,), dtype=torch.int64)


def batched_nms_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """NMS run independently per class id ``idxs[N]`` (int); returns kept indices by decreasing score.

    One ``nms_1d`` per class, merged by decreasing score (equal scores: lower index first).
    """
    device = _check_detections(segments, scores)
    check.tensor("idxs", idxs, ndim=1, dtypes=check.INDEX_DTYPES)
    if idxs.shape[0] != segments.shape[0]:
        raise ValueError(f"idxs must have shape [N] = [{segments.shape[0]}], got {tuple(idxs.shape)}")
    check.same_device(segments=segments, idxs=idxs)
    # Checked here too: with no detections nms_1d never runs, so its checks would be skipped.
    check.real("iou_threshold", iou_threshold, low=0.0, high=1.0)
    resolve_backend("batched_nms_1d", device, backend, IMPLEMENTED)
    if segments.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    # A loop over classes rather than torchvision's coordinate trick (offset each class by
    # class_id * span, one NMS): the offset rounds the coordinates (in float32, by up to 1.2e-4 at
    # an offset of 3000), which changes IoUs and flips decisions near the threshold, e.g. a
    # tiny overlap becomes a touch. Per class, the result is exactly nms_1d's.
    keep = torch.zeros(segments.shape[0], dtype=torch.bool, device=device)
    for class_id in torch.unique(idxs):
        members = torch.nonzero(idxs == class_id).squeeze(1)
        keep[members[nms_1d(segments[members], scores[members], iou_threshold, backend=backend)]] = True
    kept = torch.nonzero(keep).squeeze(1)  # ascending, so the stable sort breaks ties by index
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def soft_nms_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    *,
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    method: str = "gaussian",
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS: decay overlapping scores instead of discarding them.

    ``gaussian``: ``score *= exp(-iou**2 / sigma)`` for every remaining segment;
    ``linear``: ``score *= 1 - iou`` where ``iou > iou_threshold``. Picks the highest
    current score each round (ties: lowest index) and drops scores below
    ``score_threshold``. Returns (indices in pick order, their decayed scores).
    Reference backend only so far: its loop is sequential by nature.
    """
    device = _check_detections(segments, scores)
    sigma = check.real("sigma", sigma, low=0.0, low_open=True)
    iou_threshold = check.real("iou_threshold", iou_threshold, low=0.0, high=1.0)
    score_threshold = check.real("score_threshold", score_threshold)
    method = check.choice("method", method, ("gaussian", "linear"))
    resolve_backend("soft_nms_1d", device, backend, SOFT_NMS_IMPLEMENTED)
    dtype = _common_dtype(segments, scores)
    return reference.soft_nms_1d(segments.to(dtype), scores.to(dtype), sigma, iou_threshold, score_threshold,
                                 method)
