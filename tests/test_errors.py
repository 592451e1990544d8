"""The error contract (docs/design.md, "Error contract").

Every public op checks its arguments before launching a kernel and raises ``ValueError``
(bad value / shape) or ``TypeError`` (bad type / dtype) with a message naming the
argument. Each case below is one bad input; it asserts the exception type and that the
message names the offending argument. The compiled C++ kernels (``fastlocal._C``) are
also called directly with malformed input: they must raise a Python exception, never
crash or read out of bounds.

There is no GPU here, so the "meta" device stands in for a second device in the
device-mismatch cases.
"""

from __future__ import annotations

import math

import pytest
import torch

import fastlocal
from fastlocal import _C

B, H, T, D = 2, 3, 8, 4
NAN = math.nan
INF = math.inf


def t(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    return torch.randn(*shape, device=device).to(dtype) if dtype.is_floating_point else torch.zeros(
        *shape, dtype=dtype, device=device
    )


def qkv(**kw: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return t(B, H, T, D, **kw), t(B, H, T, D, **kw), t(B, H, T, D, **kw)


def la(**overrides: object) -> object:
    """``local_attention`` with valid arguments, except ``overrides``."""
    q, k, v = qkv()
    args = {"q": q, "k": k, "v": v, "window": 3}
    args.update(overrides)
    return fastlocal.local_attention(**args)


def lap(**overrides: object) -> object:
    """``local_attention_probs`` with valid arguments, except ``overrides``."""
    q, k, _ = qkv()
    args = {"q": q, "k": k, "rows": torch.tensor([0, 3, T - 1]), "window": 3}
    args.update(overrides)
    return fastlocal.local_attention_probs(**args)


def pool(**overrides: object) -> object:
    args = {"attn": torch.softmax(t(B, H, T, T), -1), "keep": 3}
    args.update(overrides)
    return fastlocal.topk_std_pool(**args)


def tsa(**overrides: object) -> object:
    q, k, v = qkv()
    args = {"q": q, "k": k, "v": v, "keep": 3}
    args.update(overrides)
    return fastlocal.topk_std_attention(**args)


def roi(**overrides: object) -> object:
    args = {
        "input": t(B, 5, 16),
        "rois": torch.tensor([[0.0, 1.0, 6.0], [1.0, 2.5, 14.0]]),
        "output_size": 4,
    }
    args.update(overrides)
    return fastlocal.roi_align_1d(**args)


SEGMENTS = torch.tensor([[0.0, 4.0], [1.0, 5.0], [8.0, 9.0]])
SCORES = torch.tensor([0.9, 0.8, 0.7])


def nms(**overrides: object) -> object:
    args = {"segments": SEGMENTS, "scores": SCORES, "iou_threshold": 0.5}
    args.update(overrides)
    return fastlocal.nms_1d(**args)


def bnms(**overrides: object) -> object:
    args = {"segments": SEGMENTS, "scores": SCORES, "idxs": torch.tensor([0, 1, 0]), "iou_threshold": 0.5}
    args.update(overrides)
    return fastlocal.batched_nms_1d(**args)


def snms(**overrides: object) -> object:
    args = {"segments": SEGMENTS, "scores": SCORES}
    args.update(overrides)
    return fastlocal.soft_nms_1d(**args)


V, TE = ValueError, TypeError


def case(id: str, call, exc: type[Exception], name: str):
    return pytest.param(call, exc, name, id=id)


CASES = [
    # ---- local_attention: tensors -------------------------------------------------------
    case("la-q-rank3", lambda: la(q=t(B, T, D)), V, "q"),
    case("la-k-rank5", lambda: la(k=t(B, H, T, D, 1)), V, "k"),
    case("la-v-rank2", lambda: la(v=t(T, D)), V, "v"),
    case("la-k-batch", lambda: la(k=t(B + 1, H, T, D)), V, "k"),
    case("la-k-heads", lambda: la(k=t(B, H + 1, T, D)), V, "k"),
    case("la-k-length", lambda: la(k=t(B, H, T + 1, D)), V, "k"),
    case("la-k-dim", lambda: la(k=t(B, H, T, D + 1)), V, "k"),
    case("la-v-batch", lambda: la(v=t(B + 1, H, T, D)), V, "v"),
    case("la-v-heads", lambda: la(v=t(B, H - 1, T, D)), V, "v"),
    case("la-v-length", lambda: la(v=t(B, H, T - 1, D)), V, "v"),
    case("la-q-empty-T", lambda: la(q=t(B, H, 0, D), k=t(B, H, 0, D), v=t(B, H, 0, D)), V, "q"),
    case("la-k-dtype", lambda: la(k=t(B, H, T, D, dtype=torch.float64)), TE, "k"),
    case("la-v-dtype", lambda: la(v=t(B, H, T, D, dtype=torch.float16)), TE, "v"),
    case("la-q-int", lambda: la(q=t(B, H, T, D, dtype=torch.int64)), TE, "q"),
    case("la-k-bool", lambda: la(k=t(B, H, T, D, dtype=torch.bool)), TE, "k"),
    case("la-q-list", lambda: la(q=[[0.0]]), TE, "q"),
    case("la-v-none", lambda: la(v=None), TE, "v"),
    case("la-k-meta", lambda: la(k=t(B, H, T, D, device="meta")), V, "k"),
    case("la-v-meta", lambda: la(v=t(B, H, T, D, device="meta")), V, "v"),
    # ---- local_attention: window ----------------------------------------------------------
    case("la-window-even", lambda: la(window=4), V, "window"),
    case("la-window-zero", lambda: la(window=0), V, "window"),
    case("la-window-negative", lambda: la(window=-3), V, "window"),
    case("la-window-float", lambda: la(window=3.0), TE, "window"),
    case("la-window-bool", lambda: la(window=True), TE, "window"),
    case("la-window-str", lambda: la(window="3"), TE, "window"),
    case("la-window-left-negative", lambda: la(window_left=-1), V, "window_left"),
    case("la-window-right-float", lambda: la(window_right=1.5), TE, "window_right"),
    case("la-window-left-bool", lambda: la(window_left=False), TE, "window_left"),
    case("la-shift-asymmetric", lambda: la(edge="shift", window_left=2, window_right=1), V, "window_left"),
    case("la-edge-unknown", lambda: la(edge="wrap"), V, "edge"),
    case("la-edge-none", lambda: la(edge=None), V, "edge"),
    # ---- local_attention: rpb -----------------------------------------------------------
    case("la-rpb-clip-width", lambda: la(rpb=t(H, 5)), V, "rpb"),  # clip wants [H, 3]
    case("la-rpb-clip-heads", lambda: la(rpb=t(H + 1, 3)), V, "rpb"),
    case("la-rpb-shift-width", lambda: la(rpb=t(H, 3), edge="shift"), V, "rpb"),  # shift wants [H, 5]
    case("la-rpb-asym-width", lambda: la(rpb=t(H, 3), window_left=2, window_right=1), V, "rpb"),  # wants [H, 4]
    case("la-rpb-rank1", lambda: la(rpb=t(3)), V, "rpb"),
    case("la-rpb-rank3", lambda: la(rpb=t(1, H, 3)), V, "rpb"),
    case("la-rpb-dtype", lambda: la(rpb=t(H, 3, dtype=torch.float64)), TE, "rpb"),
    case("la-rpb-int", lambda: la(rpb=t(H, 3, dtype=torch.int32)), TE, "rpb"),
    case("la-rpb-meta", lambda: la(rpb=t(H, 3, device="meta")), V, "rpb"),
    case("la-rpb-ndarray", lambda: la(rpb=t(H, 3).numpy()), TE, "rpb"),
    # ---- local_attention: mask, scale, dropout, backend ----------------------------------
    case("la-mask-float", lambda: la(key_padding_mask=t(B, T)), TE, "key_padding_mask"),
    case("la-mask-int", lambda: la(key_padding_mask=t(B, T, dtype=torch.int64)), TE, "key_padding_mask"),
    case("la-mask-shape", lambda: la(key_padding_mask=t(B, T + 1, dtype=torch.bool)), V, "key_padding_mask"),
    case("la-mask-batch", lambda: la(key_padding_mask=t(1, T, dtype=torch.bool)), V, "key_padding_mask"),
    case("la-mask-rank3", lambda: la(key_padding_mask=t(B, 1, T, dtype=torch.bool)), V, "key_padding_mask"),
    case("la-mask-meta", lambda: la(key_padding_mask=t(B, T, dtype=torch.bool, device="meta")), V,
         "key_padding_mask"),
    case("la-scale-nan", lambda: la(scale=NAN), V, "scale"),
    case("la-scale-inf", lambda: la(scale=INF), V, "scale"),
    case("la-scale-str", lambda: la(scale="0.5"), TE, "scale"),
    case("la-scale-tensor", lambda: la(scale=torch.tensor(0.5)), TE, "scale"),
    case("la-dropout-one", lambda: la(dropout_p=1.0), V, "dropout_p"),
    case("la-dropout-negative", lambda: la(dropout_p=-0.1), V, "dropout_p"),
    case("la-dropout-nan", lambda: la(dropout_p=NAN), V, "dropout_p"),
    case("la-dropout-none", lambda: la(dropout_p=None), TE, "dropout_p"),
    case("la-backend-unknown", lambda: la(backend="gpu"), V, "backend"),
    case("la-backend-int", lambda: la(backend=1), TE, "backend"),
    # ---- local_attention_probs ------------------------------------------------------------
    case("lap-rows-float", lambda: lap(rows=torch.tensor([0.0, 1.0])), TE, "rows"),
    case("lap-rows-bool", lambda: lap(rows=torch.tensor([True])), TE, "rows"),
    case("lap-rows-list", lambda: lap(rows=[0, 1]), TE, "rows"),
    case("lap-rows-rank3", lambda: lap(rows=torch.zeros(B, 1, 1, dtype=torch.long)), V, "rows"),
    case("lap-rows-batch", lambda: lap(rows=torch.zeros(B + 1, 2, dtype=torch.long)), V, "rows"),
    case("lap-rows-too-large", lambda: lap(rows=torch.tensor([0, T])), V, "rows"),
    case("lap-rows-negative", lambda: lap(rows=torch.tensor([-1, 2])), V, "rows"),
    case("lap-rows-meta", lambda: lap(rows=torch.zeros(2, dtype=torch.long, device="meta")), V, "rows"),
    case("lap-k-length", lambda: lap(k=t(B, H, T - 1, D)), V, "k"),
    case("lap-k-dtype", lambda: lap(k=t(B, H, T, D, dtype=torch.float16)), TE, "k"),
    case("lap-window-even", lambda: lap(window=2), V, "window"),
    case("lap-rpb-shift", lambda: lap(rpb=t(H, 3), edge="shift"), V, "rpb"),
    case("lap-mask-dtype", lambda: lap(key_padding_mask=t(B, T)), TE, "key_padding_mask"),
    case("lap-scale-nan", lambda: lap(scale=NAN), V, "scale"),
    case("lap-backend-unknown", lambda: lap(backend="Reference"), V, "backend"),
    # ---- topk_std_pool ---------------------------------------------------------------------
    case("pool-attn-rank1", lambda: pool(attn=t(T)), V, "attn"),
    case("pool-attn-int", lambda: pool(attn=t(B, T, T, dtype=torch.int64)), TE, "attn"),
    case("pool-attn-tuple", lambda: pool(attn=((0.5, 0.5),)), TE, "attn"),
    case("pool-keep-zero", lambda: pool(keep=0), V, "keep"),
    case("pool-keep-negative", lambda: pool(keep=-2), V, "keep"),
    case("pool-keep-too-large", lambda: pool(keep=T), V, "keep"),  # T - 1 rows are ranked
    case("pool-keep-too-large-no-cls", lambda: pool(keep=T + 1, exclude_first=False), V, "keep"),
    case("pool-keep-float", lambda: pool(keep=2.0), TE, "keep"),
    case("pool-keep-bool", lambda: pool(keep=True), TE, "keep"),
    case("pool-exclude-first-int", lambda: pool(exclude_first=1), TE, "exclude_first"),
    case("pool-second-softmax-str", lambda: pool(second_softmax="yes"), TE, "second_softmax"),
    case("pool-backend-unknown", lambda: pool(backend="fast"), V, "backend"),
    # ---- topk_std_attention ------------------------------------------------------------------
    case("tsa-q-rank3", lambda: tsa(q=t(B, T, D)), V, "q"),
    case("tsa-k-length", lambda: tsa(k=t(B, H, T + 1, D)), V, "k"),
    case("tsa-k-dim", lambda: tsa(k=t(B, H, T, D - 1)), V, "k"),
    case("tsa-v-heads", lambda: tsa(v=t(B, H + 1, T, D)), V, "v"),
    case("tsa-v-dtype", lambda: tsa(v=t(B, H, T, D, dtype=torch.bfloat16)), TE, "v"),
    case("tsa-k-int", lambda: tsa(k=t(B, H, T, D, dtype=torch.int32)), TE, "k"),
    case("tsa-v-meta", lambda: tsa(v=t(B, H, T, D, device="meta")), V, "v"),
    case("tsa-keep-zero", lambda: tsa(keep=0), V, "keep"),
    case("tsa-keep-too-large", lambda: tsa(keep=T), V, "keep"),
    case("tsa-keep-str", lambda: tsa(keep="2"), TE, "keep"),
    case("tsa-scale-nan", lambda: tsa(scale=NAN), V, "scale"),
    case("tsa-backend-unknown", lambda: tsa(backend="numpy"), V, "backend"),
    # ---- roi_align_1d --------------------------------------------------------------------
    case("roi-input-rank4", lambda: roi(input=t(B, 5, 16, 1)), V, "input"),
    case("roi-input-int", lambda: roi(input=t(B, 5, 16, dtype=torch.int64)), TE, "input"),
    case("roi-input-empty-T", lambda: roi(input=t(B, 5, 0)), V, "input"),
    case("roi-input-list", lambda: roi(input=[[[0.0]]]), TE, "input"),
    case("roi-rois-4-columns", lambda: roi(rois=torch.tensor([[0.0, 1.0, 2.0, 3.0]])), V, "rois"),
    case("roi-rois-2-columns", lambda: roi(rois=torch.tensor([[1.0, 2.0]])), V, "rois"),
    case("roi-rois-rank1", lambda: roi(rois=torch.tensor([0.0, 1.0, 2.0])), V, "rois"),
    case("roi-rois-int", lambda: roi(rois=torch.tensor([[0, 1, 2]])), TE, "rois"),
    case("roi-batch-out-of-range", lambda: roi(rois=torch.tensor([[float(B), 1.0, 2.0]])), V, "rois"),
    case("roi-batch-negative", lambda: roi(rois=torch.tensor([[-1.0, 1.0, 2.0]])), V, "rois"),
    case("roi-batch-fractional", lambda: roi(rois=torch.tensor([[0.5, 1.0, 2.0]])), V, "rois"),
    case("roi-start-nan", lambda: roi(rois=torch.tensor([[0.0, NAN, 2.0]])), V, "rois"),
    case("roi-end-inf", lambda: roi(rois=torch.tensor([[0.0, 1.0, INF]])), V, "rois"),
    case("roi-batch-nan", lambda: roi(rois=torch.tensor([[NAN, 1.0, 2.0]])), V, "rois"),
    case("roi-rois-meta", lambda: roi(rois=torch.zeros(1, 3, device="meta")), V, "rois"),
    case("roi-output-size-zero", lambda: roi(output_size=0), V, "output_size"),
    case("roi-output-size-negative", lambda: roi(output_size=-4), V, "output_size"),
    case("roi-output-size-float", lambda: roi(output_size=4.0), TE, "output_size"),
    case("roi-output-size-tuple", lambda: roi(output_size=(4,)), TE, "output_size"),
    case("roi-sampling-ratio-negative", lambda: roi(sampling_ratio=-1), V, "sampling_ratio"),
    case("roi-sampling-ratio-float", lambda: roi(sampling_ratio=2.5), TE, "sampling_ratio"),
    # a finite but enormous RoI would make adaptive sampling loop ~1e12 times per bin
    case("roi-too-long-for-adaptive", lambda: roi(rois=torch.tensor([[0.0, 0.0, 1e12]])), V, "rois"),
    case("roi-aligned-int", lambda: roi(aligned=1), TE, "aligned"),
    # Checked on the values as given: float64 1 - 1e-12 would round to 1 in float32.
    case("roi-batch-float64-below-integer",
         lambda: roi(rois=torch.tensor([[1 - 1e-12, 1.0, 2.0]], dtype=torch.float64)), V, "rois"),
    case("roi-rois-overflow-float32", lambda: roi(rois=torch.tensor([[0.0, 1.0, 1e300]], dtype=torch.float64),
                                                  sampling_ratio=1), V, "rois"),
    case("roi-sampling-ratio-huge", lambda: roi(sampling_ratio=2**40), V, "sampling_ratio"),
    case("roi-output-size-huge", lambda: roi(output_size=2**40), V, "output_size"),
    case("roi-backend-unknown", lambda: roi(backend="c++"), V, "backend"),
    # ---- nms_1d ----------------------------------------------------------------------------
    case("nms-segments-3-columns", lambda: nms(segments=t(3, 3)), V, "segments"),
    case("nms-segments-rank1", lambda: nms(segments=t(6)), V, "segments"),
    case("nms-segments-int", lambda: nms(segments=SEGMENTS.long()), TE, "segments"),
    case("nms-segments-list", lambda: nms(segments=[[0.0, 1.0]] * 3), TE, "segments"),
    case("nms-scores-length", lambda: nms(scores=SCORES[:2]), V, "scores"),
    case("nms-scores-rank2", lambda: nms(scores=SCORES[:, None]), V, "scores"),
    case("nms-scores-int", lambda: nms(scores=torch.tensor([3, 2, 1])), TE, "scores"),
    case("nms-scores-nan", lambda: nms(scores=torch.tensor([0.9, NAN, 0.7])), V, "scores"),
    case("nms-scores-inf", lambda: nms(scores=torch.tensor([0.9, -INF, 0.7])), V, "scores"),
    case("nms-segments-nan", lambda: nms(segments=torch.tensor([[0.0, NAN], [1.0, 5.0], [8.0, 9.0]])), V,
         "segments"),
    case("nms-end-before-start", lambda: nms(segments=torch.tensor([[0.0, 4.0], [5.0, 1.0], [8.0, 9.0]])), V,
         "segments"),
    case("nms-scores-meta", lambda: nms(scores=torch.zeros(3, device="meta")), V, "scores"),
    case("nms-iou-above-one", lambda: nms(iou_threshold=1.5), V, "iou_threshold"),
    case("nms-iou-negative", lambda: nms(iou_threshold=-0.1), V, "iou_threshold"),
    case("nms-iou-nan", lambda: nms(iou_threshold=NAN), V, "iou_threshold"),
    case("nms-iou-str", lambda: nms(iou_threshold="0.5"), TE, "iou_threshold"),
    case("nms-iou-int-beyond-float", lambda: nms(iou_threshold=10**400), V, "iou_threshold"),
    case("nms-both-meta", lambda: nms(segments=t(3, 2, device="meta"), scores=t(3, device="meta")), V, "segments"),
    case("nms-backend-unknown", lambda: nms(backend="torchvision"), V, "backend"),
    # ---- batched_nms_1d ----------------------------------------------------------------------
    case("bnms-idxs-float", lambda: bnms(idxs=torch.tensor([0.0, 1.0, 0.0])), TE, "idxs"),
    case("bnms-idxs-bool", lambda: bnms(idxs=torch.tensor([True, False, True])), TE, "idxs"),
    case("bnms-idxs-length", lambda: bnms(idxs=torch.tensor([0, 1])), V, "idxs"),
    case("bnms-idxs-rank2", lambda: bnms(idxs=torch.tensor([[0, 1, 0]])), V, "idxs"),
    case("bnms-idxs-meta", lambda: bnms(idxs=torch.zeros(3, dtype=torch.long, device="meta")), V, "idxs"),
    case("bnms-scores-length", lambda: bnms(scores=SCORES[:1]), V, "scores"),
    case("bnms-iou-above-one", lambda: bnms(iou_threshold=2.0), V, "iou_threshold"),
    case("bnms-iou-int-beyond-float", lambda: bnms(iou_threshold=10**400), V, "iou_threshold"),
    case("bnms-scores-inf", lambda: bnms(scores=torch.tensor([0.9, INF, 0.7])), V, "scores"),
    case("bnms-end-before-start", lambda: bnms(segments=torch.tensor([[0.0, 4.0], [5.0, 1.0], [8.0, 9.0]])), V,
         "segments"),
    case("bnms-both-meta", lambda: bnms(segments=t(3, 2, device="meta"), scores=t(3, device="meta"),
                                        idxs=torch.zeros(3, dtype=torch.long, device="meta")), V, "segments"),
    case("bnms-iou-empty-input", lambda: bnms(segments=t(0, 2), scores=t(0), idxs=torch.zeros(0, dtype=torch.long),
                                              iou_threshold=-1.0), V, "iou_threshold"),
    case("bnms-backend-empty-input", lambda: bnms(segments=t(0, 2), scores=t(0),
                                                  idxs=torch.zeros(0, dtype=torch.long), backend="bogus"), V,
         "backend"),
    # ---- soft_nms_1d ---------------------------------------------------------------------------
    case("snms-method-unknown", lambda: snms(method="hard"), V, "method"),
    case("snms-sigma-zero", lambda: snms(sigma=0.0), V, "sigma"),
    case("snms-sigma-negative", lambda: snms(sigma=-0.5), V, "sigma"),
    case("snms-sigma-nan", lambda: snms(sigma=NAN), V, "sigma"),
    case("snms-iou-above-one", lambda: snms(iou_threshold=1.01), V, "iou_threshold"),
    case("snms-score-threshold-nan", lambda: snms(score_threshold=NAN), V, "score_threshold"),
    case("snms-scores-nan", lambda: snms(scores=torch.tensor([NAN, 0.8, 0.7])), V, "scores"),
    case("snms-segments-inf", lambda: snms(segments=torch.tensor([[0.0, INF], [1.0, 5.0], [8.0, 9.0]])), V,
         "segments"),
    case("snms-end-before-start", lambda: snms(segments=torch.tensor([[0.0, 4.0], [5.0, 1.0], [8.0, 9.0]])), V,
         "segments"),
    case("snms-iou-int-beyond-float", lambda: snms(iou_threshold=-(10**400)), V, "iou_threshold"),
    case("snms-both-meta", lambda: snms(segments=t(3, 2, device="meta"), scores=t(3, device="meta")), V,
         "segments"),
    case("snms-segments-shape", lambda: snms(segments=t(3, 1)), V, "segments"),
    case("snms-backend-unknown", lambda: snms(backend="cuda!"), V, "backend"),
]


@pytest.mark.parametrize(("call", "exc", "name"), CASES)
def test_bad_argument_is_rejected(call, exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=rf"\b{name}\b") as info:
        call()
    # TypeError is for types/dtypes, ValueError for values/shapes: never a subclass of the other.
    assert type(info.value) is exc, f"expected exactly {exc.__name__}, got {type(info.value).__name__}"


def test_enough_distinct_cases() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)) >= 40
    ops = {i.split("-")[0] for i in ids}
    assert ops == {"la", "lap", "pool", "tsa", "roi", "nms", "bnms", "snms"}


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_roi_value_checks_run_on_every_backend(backend: str) -> None:
    """The Python value checks guard both backends (the cpu kernel repeats them)."""
    with pytest.raises(ValueError, match="rois"):
        roi(rois=torch.tensor([[5.0, 1.0, 2.0]]), backend=backend)
    with pytest.raises(ValueError, match="rois"):
        roi(rois=torch.tensor([[0.0, NAN, 2.0]]), backend=backend)


def test_message_says_expected_and_given() -> None:
    """A message names the argument, what was expected and what was given."""
    with pytest.raises(ValueError, match=r"window must be odd.*got 4"):
        la(window=4)
    with pytest.raises(ValueError, match=r"rpb must have shape .*\[3, 5\].*got \(3, 3\)"):
        la(rpb=t(H, 3), edge="shift")
    with pytest.raises(TypeError, match=r"k has dtype torch.float64 but q has dtype torch.float32"):
        la(k=t(B, H, T, D, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"k is on meta but q is on cpu"):
        la(k=t(B, H, T, D, device="meta"))
    with pytest.raises(ValueError, match=r"rois\[:, 0\] must be integer batch indices in \[0, 2\)"):
        roi(rois=torch.tensor([[2.0, 1.0, 2.0]]))


# ---- the compiled C++ kernels, called directly --------------------------------------------------
# They are reachable from Python (fastlocal._C and torch.ops.fastlocal.*), so they re-check
# everything they index memory with: TORCH_CHECK_VALUE / TORCH_CHECK_TYPE surface as
# ValueError / TypeError.

X = torch.randn(2, 3, 16)
GOOD_ROIS = torch.tensor([[0.0, 1.0, 6.0], [1.0, 2.0, 9.0]])


def _rois(*row: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([row], dtype=dtype)


CPP_CASES = [
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(2, 0, 3), 4, 0, False), V, id="fwd-batch-too-large"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(1e9, 0, 3), 4, 0, False), V, id="fwd-batch-huge"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(-1, 0, 3), 4, 0, False), V, id="fwd-batch-negative"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(0.5, 0, 3), 4, 0, False), V, id="fwd-batch-fraction"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(NAN, 0, 3), 4, 0, False), V, id="fwd-batch-nan"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(0, NAN, 3), 4, 0, False), V, id="fwd-start-nan"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(0, 0, INF), 4, 0, False), V, id="fwd-end-inf"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, torch.zeros(1, 4), 4, 0, False), V, id="fwd-rois-4-cols"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, torch.zeros(3), 4, 0, False), V, id="fwd-rois-rank1"),
    pytest.param(lambda: _C.roi_align_1d_forward(X[0], GOOD_ROIS, 4, 0, False), V, id="fwd-input-rank2"),
    pytest.param(lambda: _C.roi_align_1d_forward(X[..., :0], GOOD_ROIS, 4, 0, False), V, id="fwd-input-empty-T"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, GOOD_ROIS, 0, 0, False), V, id="fwd-output-size-0"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, _rois(0, 0, 1e12), 4, 0, False), V, id="fwd-adaptive-too-long"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.zeros(1, 3, 4), _rois(0, 0, 1e12), 2, 10, 0, False), V,
                 id="bwd-adaptive-too-long"),
    # An explicit sampling_ratio has the same cap as Python's (MAX_SAMPLING_RATIO): 2**40
    # samples per bin would loop for hours before returning.
    pytest.param(lambda: _C.roi_align_1d_forward(X, GOOD_ROIS, 4, 2**40, False), V, id="fwd-sampling-ratio-huge"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, GOOD_ROIS, 4, 65537, False), V, id="fwd-sampling-ratio-65537"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.zeros(2, 3, 4), GOOD_ROIS, 2, 16, 2**40, False), V,
                 id="bwd-sampling-ratio-huge"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, GOOD_ROIS.double(), 4, 0, False), TE, id="fwd-rois-dtype"),
    pytest.param(lambda: _C.roi_align_1d_forward(X, GOOD_ROIS.long(), 4, 0, False), TE, id="fwd-rois-int"),
    pytest.param(lambda: _C.roi_align_1d_forward(X.long(), GOOD_ROIS, 4, 0, False), NotImplementedError,
                 id="fwd-input-int"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4), _rois(2, 0, 3), 2, 16, 0, False), V,
                 id="bwd-batch-too-large"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4), _rois(-1, 0, 3), 2, 16, 0, False), V,
                 id="bwd-batch-negative"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4), _rois(0, NAN, 3), 2, 16, 0, False), V,
                 id="bwd-start-nan"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4), torch.zeros(1, 2), 2, 16, 0, False), V,
                 id="bwd-rois-2-cols"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(3, 4), _rois(0, 0, 3), 2, 16, 0, False), V,
                 id="bwd-grad-rank2"),
    # More grad rows than RoIs would read rois past its end.
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(5, 3, 4), _rois(0, 0, 3), 2, 16, 0, False), V,
                 id="bwd-grad-rows-mismatch"),
    # A zero length would make the taps index x[-1].
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4), _rois(0, 0, 3), 2, 0, 0, False), V,
                 id="bwd-length-zero"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4), _rois(0, 0, 3), 2, -5, 0, False), V,
                 id="bwd-length-negative"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4), _rois(0, 0, 3), -2, 16, 0, False), V,
                 id="bwd-batch-arg-negative"),
    pytest.param(lambda: _C.roi_align_1d_backward(torch.ones(1, 3, 4).double(), _rois(0, 0, 3), 2, 16, 0, False),
                 TE, id="bwd-rois-dtype"),
    pytest.param(lambda: _C.nms_1d(torch.zeros(3, 3), torch.zeros(3), 0.5), V, id="nms-segments-3-cols"),
    pytest.param(lambda: _C.nms_1d(torch.zeros(6), torch.zeros(3), 0.5), V, id="nms-segments-rank1"),
    pytest.param(lambda: _C.nms_1d(torch.zeros(3, 2), torch.zeros(4), 0.5), V, id="nms-scores-length"),
    pytest.param(lambda: _C.nms_1d(torch.zeros(3, 2), torch.zeros(3, 1), 0.5), V, id="nms-scores-rank2"),
    pytest.param(lambda: _C.nms_1d(torch.zeros(3, 2), torch.zeros(3).double(), 0.5), TE, id="nms-dtype-mismatch"),
    pytest.param(lambda: _C.nms_1d(torch.zeros(3, 2).long(), torch.zeros(3).long(), 0.5), NotImplementedError,
                 id="nms-int"),
    pytest.param(lambda: _C.roi_align_1d_forward(None, GOOD_ROIS, 4, 0, False), TE, id="fwd-input-none"),
    pytest.param(lambda: _C.nms_1d(torch.zeros(3, 2), torch.zeros(3), "0.5"), TE, id="nms-threshold-str"),
]


@pytest.mark.parametrize(("call", "exc"), CPP_CASES)
def test_cpp_kernel_rejects_malformed_input(call, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        call()


def test_cpp_sampling_ratio_cap_matches_python() -> None:
    """_C refuses an explicit sampling_ratio above MAX_SAMPLING_RATIO at once, with Python's
    message; the cap itself is accepted."""
    from fastlocal.roi_align_1d import MAX_SAMPLING_RATIO

    msg = rf"sampling_ratio must be <= {MAX_SAMPLING_RATIO} \(samples per bin\), got {2**40}"
    with pytest.raises(ValueError, match=msg):
        _C.roi_align_1d_forward(X, GOOD_ROIS, 4, 2**40, False)
    with pytest.raises(ValueError, match=msg):
        _C.roi_align_1d_backward(torch.zeros(2, 3, 4), GOOD_ROIS, 2, 16, 2**40, False)
    with pytest.raises(ValueError, match=msg):
        fastlocal.roi_align_1d(X, GOOD_ROIS, 4, sampling_ratio=2**40)
    out = _C.roi_align_1d_forward(X, GOOD_ROIS, 4, MAX_SAMPLING_RATIO, False)
    assert out.shape == (2, 3, 4) and torch.isfinite(out).all()


def test_cpp_kernels_through_torch_ops_reject_bad_rois() -> None:
    """The registered custom ops reach the same kernels and the same checks."""
    with pytest.raises(ValueError, match="batch indices"):
        torch.ops.fastlocal.roi_align_1d(X, _rois(7, 0, 3), 4, 0, False, "cpu")
    with pytest.raises(ValueError, match="batch indices"):
        torch.ops.fastlocal.roi_align_1d_backward(torch.ones(1, 3, 4), _rois(7, 0, 3), 2, 16, 0, False, "cpu")
    with pytest.raises(ValueError, match="finite"):
        torch.ops.fastlocal.roi_align_1d(X, _rois(0, NAN, 3), 4, 0, False, "cpu")


def test_cpp_kernels_accept_what_they_should() -> None:
    """The C++ checks are not over-eager: valid and empty inputs still work."""
    out = _C.roi_align_1d_forward(X, GOOD_ROIS, 4, 0, False)
    assert out.shape == (2, 3, 4) and torch.isfinite(out).all()
    grad = _C.roi_align_1d_backward(torch.ones(2, 3, 4), GOOD_ROIS, 2, 16, 0, False)
    assert grad.shape == (2, 3, 16)
    # Each RoI's bins average to weights summing to 1 per bin when fully inside: total = N * P per channel.
    torch.testing.assert_close(grad.sum(dim=(0, 2)), torch.full((3,), 8.0))
    assert _C.roi_align_1d_forward(X, torch.zeros(0, 3), 4, 0, False).shape == (0, 3, 4)
    assert _C.roi_align_1d_backward(torch.zeros(0, 3, 4), torch.zeros(0, 3), 2, 16, 0, False).shape == (2, 3, 16)
    assert _C.nms_1d(torch.zeros(0, 2), torch.zeros(0), 0.5).shape == (0,)
