"""1-D non-maximum suppression of temporal detections: ``nms_1d``, ``batched_nms_1d``, ``soft_nms_1d``,
``batched_soft_nms_1d``, and non-maximum weighting: ``nmw_1d``, ``batched_nmw_1d``, ``multiclass_nmw_1d``.

Conventions (all backends): candidates are visited by decreasing score, equal scores
in index order; IoU of ``[start, end]`` intervals, 0 when the union is empty; hard NMS
suppresses IoU strictly greater than the threshold (torchvision's rule); non-maximum
weighting merges IoU greater than or equal to it (TALLFormer's rule).

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
SOFT_NMS_IMPLEMENTED = ("cuda", "cpu", "reference")  # soft_nms_1d, batched_soft_nms_1d
NMW_IMPLEMENTED = ("cpu", "reference")  # nmw_1d, batched_nmw_1d, multiclass_nmw_1d: no CUDA kernel


def _check_detections(
    op: str, segments: object, scores: object, positive: bool = False
) -> tuple[torch.device, torch.Tensor, torch.Tensor]:
    """Check the detections (``positive``: every score > 0 too); return their device and (segments,
    scores) in the common dtype."""
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
        check_detection_values(segments, scores, positive)
        return device, segments.to(dtype), scores.to(dtype)
    # Traced by torch.compile: the same checks, run by the compiled graph.
    segments, scores = _check_detections_op(segments, scores, dtype == torch.float64, positive)
    return device, segments, scores


def check_detection_values(segments: torch.Tensor, scores: torch.Tensor, positive: bool = False) -> None:
    """``ValueError`` for NaN / inf in ``segments`` or ``scores``, a row with start > end, or (with
    ``positive``) a score <= 0."""
    if segments.numel():
        if not (torch.isfinite(segments).all() and torch.isfinite(scores).all()):
            raise ValueError("segments and scores must be finite (found NaN or inf)")
        if (segments[:, 1] < segments[:, 0]).any():
            raise ValueError("segments must satisfy start <= end in every row")
        if positive and (scores <= 0).any():
            raise ValueError("scores must be > 0 (they weight the merged boundaries)")


@torch.library.custom_op("fastlocal::nms_1d_check_detections", mutates_args=())
def _check_detections_op(
    segments: torch.Tensor, scores: torch.Tensor, float64: bool, positive: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_detection_values` as a graph node: compiled code runs it with the real values.

    Returns contiguous copies in the common dtype (a custom op may not return its inputs),
    which the NMS consumes, so the node cannot be dropped from the graph.
    """
    check_detection_values(segments, scores, positive)
    dtype = torch.float64 if float64 else torch.float32
    return segments.to(dtype, memory_format=torch.contiguous_format, copy=True), scores.to(dtype, copy=True)


@_check_detections_op.register_fake
def _(segments, scores, float64, positive=False):
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


def _soft_nms_arguments(
    sigma: object, iou_threshold: object, score_threshold: object, method: object, max_output: object
) -> tuple[float, float, float, str, int | None]:
    """The checked soft-NMS parameters (shared by the single and the batched form)."""
    sigma = check.real("sigma", sigma, low=0.0, low_open=True)
    iou_threshold = check.real("iou_threshold", iou_threshold, low=0.0, high=1.0)
    score_threshold = check.real("score_threshold", score_threshold)
    method = check.choice("method", method, ("gaussian", "linear"))
    if max_output is not None:
        max_output = check.integer("max_output", max_output, minimum=1)
    return sigma, iou_threshold, score_threshold, method, max_output


def soft_nms_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    *,
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    method: str = "gaussian",
    max_output: int | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS of one video's ``[N, 2]`` segments ``(start, end)`` with ``[N]`` scores.

    Decays overlapping scores instead of discarding them. ``gaussian``: ``score *=
    exp(-iou**2 / sigma)`` for every remaining segment (``iou_threshold`` unused);
    ``linear``: ``score *= 1 - iou`` where ``iou > iou_threshold``. Each round picks the
    highest current score (ties: lowest index) and drops the scores below
    ``score_threshold``; the loop stops when none is left or after ``max_output`` picks
    (None: no limit). Returns (int64 indices ``[K]`` in pick order, their decayed scores
    ``[K]``), K <= ``max_output``.
    """
    device, segments, scores = _check_detections("soft_nms_1d", segments, scores)
    sigma, iou_threshold, score_threshold, method, max_output = _soft_nms_arguments(
        sigma, iou_threshold, score_threshold, method, max_output)
    name = resolve_backend("soft_nms_1d", device, backend, SOFT_NMS_IMPLEMENTED)
    if name == "reference":
        return reference.soft_nms_1d(segments, scores, sigma, iou_threshold, score_threshold, method, max_output)
    limit = segments.shape[0] if max_output is None else max_output
    return _soft_nms_1d(segments, scores, sigma, iou_threshold, score_threshold, method == "gaussian", limit, name)


def batched_soft_nms_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    method: str = "gaussian",
    max_output: int | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`soft_nms_1d` of B videos at once: ``[B, N, 2]`` segments, ``[B, N]`` scores.

    ``valid [B, N]`` (bool, default all True) says which rows of each video take part (e.g. a
    detector's boundary masks; for per-video counts ``lengths [B]`` pass
    ``torch.arange(N) < lengths[:, None]``); every row is checked all the same (finite,
    start <= end). Video ``b``'s result is exactly ``soft_nms_1d`` of its valid rows, with
    indices into ``N``. Returns ``(indices [B, K] int64, scores [B, K], counts [B] int64)``
    with K = ``min(max_output, N)`` (``N`` when ``max_output`` is None): row ``b`` holds
    ``counts[b]`` picks in pick order, then index -1 and score 0.
    """
    check.tensor("segments", segments, ndim=3)
    check.tensor("scores", scores, ndim=2)
    if segments.shape[2] != 2:
        raise ValueError(f"segments must have shape [B, N, 2] (start, end), got {tuple(segments.shape)}")
    if scores.shape != segments.shape[:2]:
        raise ValueError(f"scores must have shape [B, N] = {list(segments.shape[:2])} to match segments, "
                         f"got {tuple(scores.shape)}")
    if valid is not None:
        check.tensor("valid", valid, dtypes=(torch.bool,))
        if valid.shape != scores.shape:
            raise ValueError(f"valid must have shape [B, N] = {list(scores.shape)}, got {tuple(valid.shape)}")
        check.same_device(segments=segments, valid=valid)
    batch, n = scores.shape
    device, flat_segments, flat_scores = _check_detections("batched_soft_nms_1d", segments.reshape(batch * n, 2),
                                                           scores.reshape(batch * n))
    segments, scores = flat_segments.reshape(batch, n, 2), flat_scores.reshape(batch, n)
    sigma, iou_threshold, score_threshold, method, max_output = _soft_nms_arguments(
        sigma, iou_threshold, score_threshold, method, max_output)
    name = resolve_backend("batched_soft_nms_1d", device, backend, SOFT_NMS_IMPLEMENTED)
    if valid is None:
        valid = torch.ones(batch, n, dtype=torch.bool, device=device)
    limit = n if max_output is None else min(max_output, n)
    if name == "reference":
        return reference.batched_soft_nms_1d(segments, scores, valid, sigma, iou_threshold, score_threshold, method,
                                             limit)
    return _batched_soft_nms_1d(segments, scores, valid, sigma, iou_threshold, score_threshold,
                                method == "gaussian", limit, name)


@torch.library.custom_op("fastlocal::soft_nms_1d", mutates_args=())
def _soft_nms_1d(
    segments: torch.Tensor, scores: torch.Tensor, sigma: float, iou_threshold: float, score_threshold: float,
    gaussian: bool, max_output: int, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    indices, decayed, counts = kernels(backend, "nms_1d").soft_nms_1d(
        segments[None], scores[None], torch.ones_like(scores, dtype=torch.bool)[None], sigma, iou_threshold,
        score_threshold, gaussian, max_output)
    picked = int(counts[0])
    return indices[0, :picked].clone(), decayed[0, :picked].clone()


@_soft_nms_1d.register_fake
def _(segments, scores, sigma, iou_threshold, score_threshold, gaussian, max_output, backend):
    picked = torch.library.get_ctx().new_dynamic_size()
    return segments.new_empty((picked,), dtype=torch.int64), scores.new_empty((picked,))


@torch.library.custom_op("fastlocal::batched_soft_nms_1d", mutates_args=())
def _batched_soft_nms_1d(
    segments: torch.Tensor, scores: torch.Tensor, valid: torch.Tensor, sigma: float, iou_threshold: float,
    score_threshold: float, gaussian: bool, max_output: int, backend: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return kernels(backend, "nms_1d").soft_nms_1d(segments, scores, valid, sigma, iou_threshold,
                                                               score_threshold, gaussian, max_output)


@_batched_soft_nms_1d.register_fake
def _(segments, scores, valid, sigma, iou_threshold, score_threshold, gaussian, max_output, backend):
    batch, n = scores.shape
    k = min(max_output, n)
    return (segments.new_empty((batch, k), dtype=torch.int64), scores.new_empty((batch, k)),
            segments.new_empty((batch,), dtype=torch.int64))


# ---- non-maximum weighting (TALLFormer's THUMOS inference) ---------------------------------------


def nmw_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    *,
    max_output: int | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-maximum weighting of one class's ``[N, 2]`` segments ``(start, end)`` with ``[N]`` scores > 0.

    :func:`batched_nmw_1d` with every candidate in one class; see there for the rule.
    Returns (merged segments ``[K, 2]``, int64 indices ``[K]`` of the picked candidates).
    Backends: ``reference`` and ``cpu`` only (no CUDA kernel).
    """
    device, segments, scores = _check_detections("nmw_1d", segments, scores, positive=True)
    idxs = torch.zeros(segments.shape[0], dtype=torch.int64, device=device)
    return _nmw(segments, scores, idxs, iou_threshold, max_output, "nmw_1d", backend)


def batched_nmw_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    *,
    max_output: int | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-maximum weighting per class id ``idxs [N]`` (int) of ``[N, 2]`` segments with ``[N]`` scores > 0.

    TALLFormer's released ``_multiclass_nmw`` loop (vedatad/misc/segment/segment.py, from
    DaoTAD), over candidates:

    1. candidates are visited by decreasing score, equal scores lower index first (the released
       code's ``argsort(descending=True)`` leaves the order of ties unspecified);
    2. each round picks the first remaining candidate ``p``. Its group is every remaining
       candidate ``j`` of the same class with ``IoU(p, j) >= iou_threshold`` (``>=``, unlike
       :func:`nms_1d`'s ``>``), ``p`` itself included with its IoU taken as 1;
    3. the merged segment is the weighted mean of the group's segments with weights
       ``w_j = scores[j] * IoU(p, j)`` (so ``p`` weighs ``scores[p]``): ``sum_j (w_j / W) *
       segments[j]`` with ``W = sum_j w_j``, both sums in visiting order, left to right, in the
       dtype (float32, float64 for float64 input). The IoUs are those of the original segments,
       never of merged ones. The output keeps ``p``'s score and class;
    4. the group leaves the candidates (classes never interact); the loop stops when none is
       left or after ``max_output`` picks (None: no limit; TALLFormer: 1,200 per video).

    IoU is fastlocal's (0 when the union is empty); the released code divides by
    ``max(union, 1e-6)``, which differs only for unions shorter than 1e-6. Scores must be > 0
    (the released path only sees sigmoid scores above its 0.005 threshold), so ``W > 0``.
    Returns (merged segments ``[K, 2]``, int64 indices ``[K]`` of the picked candidates, whose
    ``scores`` and ``idxs`` the outputs keep), in pick order: decreasing score.
    Backends: ``reference`` and ``cpu`` (C++) only; there is no CUDA kernel, and CUDA tensors
    run the reference.
    """
    _, segments, scores = _check_detections("batched_nmw_1d", segments, scores, positive=True)
    check.tensor("idxs", idxs, ndim=1, dtypes=check.INDEX_DTYPES)
    if idxs.shape[0] != segments.shape[0]:
        raise ValueError(f"idxs must have shape [N] = [{segments.shape[0]}], got {tuple(idxs.shape)}")
    check.same_device(segments=segments, idxs=idxs)
    return _nmw(segments, scores, idxs.long(), iou_threshold, max_output, "batched_nmw_1d", backend)


def multiclass_nmw_1d(
    segments: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_threshold: float = 0.005,
    iou_threshold: float = 0.5,
    max_output: int | None = 1200,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TALLFormer's THUMOS-14 post-processing of one video: ``multiclass_nms`` with ``typename="nmw"``.

    ``segments [N, 2]`` (one per anchor, shared by the classes, as the THUMOS head regresses)
    or ``[N, C, 2]`` (one per class); ``scores [N, C]``, the foreground classes only (the
    released code drops the background column it appends to sigmoid scores). Every
    ``(n, c)`` with ``scores[n, c] > score_threshold`` (strict, compared in the dtype) is a
    candidate of class ``c``, numbered row-major (``n`` first), as the released
    ``valid_mask.nonzero()`` does; then :func:`batched_nmw_1d` runs over them with the class as
    ``idxs``. Defaults are the released THUMOS ``test_cfg``: ``score_thr=0.005``,
    ``nms=dict(typename="nmw", iou_thr=0.5)``, ``max_per_video=1200``.

    Before this, the released inference (``SegmentAnchorConverter``) keeps per 480-frame window
    and per pyramid level the 1,000 anchors of highest maximum class score (``nms_pre=1000``:
    ``scores.max(1).values.topk(1000)`` where a level has more), decodes and clamps them to the
    window, shifts them to video time, and concatenates all levels and windows: that is the
    caller's (the model's), since it needs the pyramid levels.

    Returns (merged segments ``[K, 2]``, their scores ``[K]`` (the picked candidates'), their
    int64 classes ``[K]``), by decreasing score, K <= ``max_output``. Backends: ``reference`` and
    ``cpu`` only (no CUDA kernel).
    """
    check.tensor("scores", scores, ndim=2)
    check.tensor("segments", segments, ndim=(2, 3))
    n, classes = scores.shape
    if segments.shape not in ((n, 2), (n, classes, 2)):
        raise ValueError(f"segments must have shape [N, 2] = [{n}, 2] or [N, C, 2] = [{n}, {classes}, 2] to match "
                         f"scores [N, C], got {tuple(segments.shape)}")
    score_threshold = check.real("score_threshold", score_threshold, low=0.0)
    per_class = segments[:, None].expand(n, classes, 2) if segments.dim() == 2 else segments
    _, flat_segments, flat_scores = _check_detections("multiclass_nmw_1d", per_class.reshape(n * classes, 2),
                                                      scores.reshape(n * classes))
    candidates = torch.nonzero(flat_scores > score_threshold).squeeze(1)  # row-major, as released
    labels = candidates % max(classes, 1)
    kept = flat_scores[candidates]  # > score_threshold >= 0: positive, checked finite above
    merged, picked = _nmw(flat_segments[candidates], kept, labels, iou_threshold, max_output, "multiclass_nmw_1d",
                          backend)
    return merged, kept[picked], labels[picked]


def _nmw(
    segments: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: object,
    max_output: object,
    op: str,
    backend: str | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked detections and int64 ``idxs`` -> the chosen backend's (merged, picked)."""
    iou_threshold = check.real("iou_threshold", iou_threshold, low=0.0, high=1.0)
    if max_output is not None:
        max_output = check.integer("max_output", max_output, minimum=1)
    name = resolve_backend(op, segments.device, backend, NMW_IMPLEMENTED)
    if name == "reference":
        return reference.batched_nmw_1d(segments, scores, idxs, iou_threshold, max_output)
    limit = segments.shape[0] if max_output is None else max_output
    return _nmw_1d(segments, scores, idxs, iou_threshold, limit, name)


@torch.library.custom_op("fastlocal::nmw_1d", mutates_args=())
def _nmw_1d(
    segments: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float, max_output: int,
    backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    merged, picked = kernels(backend, "nms_1d").nmw_1d(segments, scores, idxs, iou_threshold, max_output)
    return merged.to(segments.device), picked.to(segments.device)


@_nmw_1d.register_fake
def _(segments, scores, idxs, iou_threshold, max_output, backend):
    picked = torch.library.get_ctx().new_dynamic_size()
    return segments.new_empty((picked, 2)), segments.new_empty((picked,), dtype=torch.int64)
