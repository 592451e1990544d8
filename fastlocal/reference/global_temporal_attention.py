"""GTA's block (:class:`fastlocal.nn.GlobalTemporalAttention`) transcribed from the paper's Eq. 1-8 in plain
PyTorch: loops over heads and groups, explicit softmax, einsum per temporal matrix (He et al., "GTA: Global
Temporal Attention for Video Action Understanding", BMVC 2021).

The oracle of ``tests/test_gta_model.py`` (in float64) and the peer of the module in the benchmark
(:mod:`fastlocal.bench.gta`). It reads the module's weights and follows its parametrisation (the choices
its docstring documents); norms in eval mode (running statistics). Tokens are ``[..., pixels, channels]``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fastlocal.nn import GlobalTemporalAttention

__all__ = ["batch_norm_eval", "global_temporal_attention", "linear", "max_pool_tokens", "multi_head_gta", "softmax"]


def linear(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution on tokens ``[..., C]``."""
    y = x @ conv.weight[:, :, 0, 0].T
    return y if conv.bias is None else y + conv.bias


def max_pool_tokens(tokens: torch.Tensor, h: int, w: int, p: int) -> torch.Tensor:
    """Max over p x p pixel windows (the last ones partial) of tokens ``[..., h w, D]``."""
    if p == 1:
        return tokens
    *lead, _, d = tokens.shape
    grid = tokens.reshape(*lead, h, w, d)
    hp, wp = -(-h // p) * p, -(-w // p) * p
    padded = torch.full((*lead, hp, wp, d), -math.inf, dtype=tokens.dtype, device=tokens.device)
    padded[..., :h, :w, :] = grid
    padded = padded.reshape(*lead, hp // p, p, wp // p, p, d)
    return padded.amax(dim=(-4, -2)).reshape(*lead, -1, d)


def batch_norm_eval(bn: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    if isinstance(bn, torch.nn.Identity):
        return tokens
    return (tokens - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def softmax(z: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(z - z.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def multi_head_gta(M: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Eq. 6-7 with loops: ``V [B, T, S, D]`` (S samples per frame), ``M [G, N_h, T, T]`` ->
    ``[B, T, S, D]``, head k's channels = sum over groups g of M[g, k] V_g."""
    G, Nh = M.shape[:2]
    c = V.shape[-1] // G
    heads = []
    for k in range(Nh):
        total = torch.zeros_like(V[..., :c])
        for g in range(G):
            total = total + torch.einsum("ts,bsnc->btnc", M[g, k], V[..., g * c:(g + 1) * c])  # Eq. 5 per group
        heads.append(total)
    return torch.cat(heads, dim=-1)  # N_h = G heads of C/G: reshaped back to T x C


def global_temporal_attention(m: GlobalTemporalAttention, x: torch.Tensor) -> torch.Tensor:
    """Eq. 1-8 in the module's parametrisation (its docstring), eval-mode norms: ``[B T, C, H, W]``."""
    n, C, h, w = x.shape
    T, D, R = m.frames, m.inner, m.regions
    X = x.reshape(n // T, T, C, h * w).transpose(-1, -2)  # [B, T, HW, C]
    # spatial self-attention within each frame (Eq. 1-4), heads of D / heads channels
    heads, d = m.spatial_heads, D // m.spatial_heads
    Q, K, V = linear(m.theta, X), max_pool_tokens(linear(m.phi, X), h, w, m.spatial_pool), \
        max_pool_tokens(linear(m.g, X), h, w, m.spatial_pool)
    A = torch.cat([softmax(Q[..., i * d:(i + 1) * d] @ K[..., i * d:(i + 1) * d].transpose(-1, -2) / math.sqrt(d),
                            -1) @ V[..., i * d:(i + 1) * d] for i in range(heads)], dim=-1)
    Xh = X + batch_norm_eval(m.spatial_norm, linear(m.spatial_out, A))
    # pixel GTA
    pixel = multi_head_gta(m.pixel_attention, linear(m.pixel_value, Xh))
    # region GTA: W_R [B, T, R, HW], X~ = W_R V, back with W_R^T
    Vr = linear(m.region_value, Xh)
    if m.region_transform == "static":
        logits = m.region_logits.expand(Vr.shape[0], T, R, h * w)
    else:
        logits = linear(m.region_logits, Vr).transpose(-1, -2)
    WR = softmax(logits, -1 if m.region_normalize == "pixels" else -2)
    region = WR.transpose(-1, -2) @ multi_head_gta(m.region_attention, WR @ Vr)
    # Eq. 8: Y = X^ + MH(X^) W_O^P + W_R^T MH(X~) W_O^R (one stacked W_O and its bias)
    Wo = m.out.weight[:, :, 0, 0]
    Y = Xh + batch_norm_eval(m.out_norm, pixel @ Wo[:, :D].T + region @ Wo[:, D:].T + m.out.bias)
    return Y.transpose(-1, -2).reshape(n, C, h, w)
