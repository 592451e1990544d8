"""FLOP formulas of fastlocal's attention ops for ``torch.utils.flop_counter.FlopCounterMode``.

Importing this module registers them (``import fastlocal.flop_formulas``; the models'
``info`` command does). Without it, ``FlopCounterMode`` counts a model's linear layers and
convolutions but not its fused attention, nor ``scaled_dot_product_attention`` on the CPU
(PyTorch has no formula for its fused CPU op; one is registered here too). Counts are the
useful multiply-adds times two, as PyTorch counts a matmul: only the (query, key) pairs
inside a window, never a T x T matrix.
It is a separate import because ``torch.utils.flop_counter`` costs ~0.15 s to import.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

from . import local_attention as _local_attention  # noqa: F401  (registers torch.ops.fastlocal.local_attention*)
from . import topk_std as _topk_std  # noqa: F401

__all__ = ["window_pairs"]


def window_pairs(T: int, left: int, right: int, shift: bool) -> int:
    """(query, key) pairs a banded attention over ``T`` frames computes (per batch and head)."""
    if shift:
        return T * min(left + right + 1, T)
    left, right = min(left, T - 1), min(right, T - 1)
    full = T * (left + right + 1)
    # rows near the ends lose the keys that fall outside the sequence
    return full - left * (left + 1) // 2 - right * (right + 1) // 2


def _pairs(q_shape: torch.Size, left: int, right: int, shift: bool) -> int:
    B, H, T, _ = q_shape
    return B * H * window_pairs(T, left, right, shift)


@register_flop_formula(torch.ops.fastlocal.local_attention)
def _local_attention_flop(q, k, v, rpb, mask, left, right, shift, *args, out_shape=None, **kwargs) -> int:
    # scores q.k over D, then probabilities times v over Dv
    return 2 * _pairs(q, left, right, shift) * (q[-1] + v[-1])


@register_flop_formula(torch.ops.fastlocal.local_attention_backward)
def _local_attention_backward_flop(grad, q, k, v, out, lse, rpb, mask, left, right, shift, *args,
                                   out_shape=None, **kwargs) -> int:
    # recomputed scores (D), dP = dO v (Dv), dv = P^T dO (Dv), dq = dS k (D), dk = dS^T q (D)
    return 2 * _pairs(q, left, right, shift) * (3 * q[-1] + 2 * v[-1])


@register_flop_formula(torch.ops.fastlocal.local_attention_probs)
def _local_attention_probs_flop(q, k, rows, rpb, mask, left, right, shift, *args, out_shape=None, **kwargs) -> int:
    B, H = q[:2]
    return 2 * B * H * rows[-1] * (left + right + 1) * q[-1]


@register_flop_formula(torch.ops.fastlocal.topk_std_attention)
def _topk_std_attention_flop(q, k, v, keep, exclude_first, *args, out_shape=None, **kwargs) -> int:
    B, H, T, D = q
    rows = keep + int(exclude_first)
    return 2 * B * H * (T * k[2] * D + rows * k[2] * v[-1])


@register_flop_formula(torch.ops.fastlocal.topk_std_attention_backward)
def _topk_std_attention_backward_flop(grad, q, k, v, index, lse, *args, out_shape=None, **kwargs) -> int:
    B, H, _, D = q
    rows = grad[2]
    # kept rows' scores recomputed (D), dP (Dv), dv (Dv), dq and dk (D each)
    return 2 * B * H * rows * k[2] * (3 * D + 2 * v[-1])


# PyTorch registers formulas for the CUDA SDPA kernels only; on the CPU, attention without
# dropout runs this fused op and would count 0 (models that use scaled_dot_product_attention).
@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _sdpa_cpu_flop(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _sdpa_cpu_backward_flop(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad, q, k, v)
