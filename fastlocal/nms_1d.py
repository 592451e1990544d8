"""1-D non-maximum suppression of temporal detections: ``nms_1d``, ``batched_nms_1d``, ``soft_nms_1d``.

Conventions (all backends): candidates are visited by decreasing score, equal scores
in index order; IoU of ``[start, end]`` intervals, 0 when the union is empty; hard NMS
suppresses IoU strictly greater than the threshold (torchvision's rule).

Every op refuses NaN / inf in ``segments`` or ``scores`` and a segment with start > end
(``ValueError``), eagerly and under ``torch.compile`` (there the checks run inside the
custom op ``fastlocal::nms_1d_check_detections``, with the eager messages). ``meta``
tensors are refused: the output length depends on the values.
"""

from __future__ import annotations

import torch

from . import _validate as check
from ._dispatch import kernels, resolve_backend
from .reference import nms_1d as reference

IMPLEMENTED = ("cuda", "cpu", "reference")  # nms_1d, batched_nms_1d
SOFT_NMS_IMPLEMENTED = ("reference",)  # soft_nms_1d: its loop is sequential by nature


def _check_detections(op: str, segments: object, scores: object) -> tuple[torch.device, torch.Tensor, torch.Tensor]:
    """Check the detections; return their device and (segments, scores) in the common dtype."""
    check.tensor("segments", segments, ndim=2)
    check.tensor("scores", scores, ndim=1)
    if segments.shape[1] != 2:
        raise ValueError(f"segments must have shape [N, 2] (start, end), got {tuple(segments.shape)}")
    if scores.shape[0] != segments.shape[0]:
        raise ValueError(f"scores must have shape [N] = [{segments.shape[0]}] to match segments, "
                         f"got {tuple(scores.shape)}")
    device = check.same_device(segments=segments, scores=scores)
    if device.type == "meta":
        raise ValueError(f"segments and scores are on the meta device, which holds no values: {op} reads them "
                         "(its output length depends on them); pass CPU or CUDA tensors")
    dtype = _common_dtype(segments, scores)
    if check.checking_values():
        check_detection_values(segments, scores)
        return device, segments.to(dtype), scores.to(dtype)
    # Traced by torch.compile: the same checks, run by the compiled graph.
    segments, scores = _check_detections_op(segments, scores, dtype == torch.float64)
    return device, segments, scores


def check_detection_values(segments: torch.Tensor, scores: torch.Tensor) -> None:
    """``ValueError`` for NaN / inf in ``segments`` or ``scores``, or a row with start > end."""
    if segments.numel():
        if not (torch.isfinite(segments).all() and torch.isfinite(scores).all()):
            raise ValueError("segments and scores must be finite (found NaN or inf)")
        if (segments[:, 1] < segments[:, 0]).any():
            raise ValueError("segments must satisfy start <= end in every row")


@torch.library.custom_op("fastlocal::nms_1d_check_detections", mutates_args=())
def _check_detections_op(
    segments: torch.Tensor, scores: torch.Tensor, float64: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_detection_values` as a graph node: compiled code runs it with the real values.

    Returns contiguous copies in the common dtype (a custom op may not return its inputs),
    which the NMS consumes, so the node cannot be dropped from the graph.
    """
    check_detection_values(segments, scores)
    dtype = torch.float64 if float64 else torch.float32
    return segments.to(dtype, memory_format=torch.contiguous_format, copy=True), scores.to(dtype, copy=True)


@_check_detections_op.register_fake
def _(segments, scores, float64):
    dtype = torch.float64 if float64 else torch.float32
    return segments.new_empty(segments.shape, dtype=dtype), scores.new_empty(scores.shape, dtype=dtype)


def _common_dtype(segments: torch.Tensor, scores: torch.Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (segments.dtype, scores.dtype) else torch.float32


def nms_1d(
    segments: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, backend: str | None = None
) -> torch.Tensor:
    """Greedy NMS on ``[N, 2]`` segments ``(start, end)`` with ``[N]`` scores.

    Returns the int64 indices of the kept segments, by decreasing score.
    """
    device, segments, scores = _check_detections("nms_1d", segments, scores)
    iou_threshold = check.real("iou_threshold", iou_threshold, low=0.0, high=1.0)
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
    device, segments, scores = _check_detections("batched_nms_1d", segments, scores)
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
    device, segments, scores = _check_detections("soft_nms_1d", segments, scores)
    sigma = check.real("sigma", sigma, low=0.0, low_open=True)
    iou_threshold = check.real("iou_threshold", iou_threshold, low=0.0, high=1.0)
    score_threshold = check.real("score_threshold", score_threshold)
    method = check.choice("method", method, ("gaussian", "linear"))
    resolve_backend("soft_nms_1d", device, backend, SOFT_NMS_IMPLEMENTED)
    return reference.soft_nms_1d(segments, scores, sigma, iou_threshold, score_threshold, method)
