"""fastlocal: fused kernels for long-video temporal models.

Public ops (layout ``[B, H, T, D]`` like ``scaled_dot_product_attention``):

- :func:`local_attention`, :func:`local_attention_probs` — banded attention with
  relative position bias (TUT, TALLFormer, NATTEN-style windows)
- :func:`topk_std_pool`, :func:`topk_std_attention` — VidTr's topK-std pooling
- :func:`roi_align_1d`, :func:`nms_1d`, :func:`batched_nms_1d`, :func:`soft_nms_1d`,
  :func:`batched_soft_nms_1d` — temporal proposals (G-TAD, ETAD)
- :func:`nmw_1d`, :func:`batched_nmw_1d`, :func:`multiclass_nmw_1d` — non-maximum weighting
  (TALLFormer's THUMOS-14 inference; reference and C++ CPU only)
- :mod:`selective` — selective-backprop clip encoding and a long-term feature memory
  (ETAD, TALLFormer): ``selective_encode``, ``SelectiveEncoder``, ``LongMemory``

Every op takes ``backend=`` ("cuda", "triton", "cpu", "reference"); see
:func:`available_backends` and :func:`use_backend`.
"""

from . import metrics, nn, selective
from ._dispatch import BackendUnavailableError, ReferenceFallbackWarning, available_backends, use_backend
from .local_attention import local_attention, local_attention_probs
from .nms_1d import (
    batched_nms_1d,
    batched_nmw_1d,
    batched_soft_nms_1d,
    multiclass_nmw_1d,
    nms_1d,
    nmw_1d,
    soft_nms_1d,
)
from .roi_align_1d import roi_align_1d
from .topk_std import topk_std_attention, topk_std_pool

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ReferenceFallbackWarning",
    "available_backends",
    "batched_nms_1d",
    "batched_nmw_1d",
    "batched_soft_nms_1d",
    "local_attention",
    "local_attention_probs",
    "metrics",
    "multiclass_nmw_1d",
    "nms_1d",
    "nmw_1d",
    "nn",
    "roi_align_1d",
    "selective",
    "soft_nms_1d",
    "topk_std_attention",
    "topk_std_pool",
    "use_backend",
]
