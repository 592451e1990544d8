"""VidTr and C-VidTr (Li et al., ICCV 2021) as released in amazon-science/gluonmm.

Tokens are kept flat, ``[B, L, C]``, in the released order:

- VidTr: ``L = (T + 1) * (N + 1)``, row-major over a grid whose row 0 is the temporal
  class-token row (``cls_temporal``, one token per spatial column) and whose column 0 holds a
  spatial class token per frame (``cls_spatial``); token (0, 0), index 0, gives the logits.
- C-VidTr: ``L = 1 + T * N``: one class token, then frame-major patch tokens.

Separable attention (one ``in_proj`` per layer, as released, so the weights are ViT's):
temporal attention runs per spatial position over the frames with q, k, v; spatial
attention runs per frame over the positions, *reusing the temporal q and k* and taking the
temporal output as its values; one ``out_proj``. In a C-VidTr pooling layer the temporal
attention is :func:`fastlocal.topk_std_attention`: each (batch, head, spatial position) keeps
its own frames, the spatial attention reads the kept frames' q and k, and the residual
stream is gathered per head with the same indices (a head's channels may come from
different frames). The class token of a compact model skips the separable layers (their
attention output for it is its own normalised input), and every layer after the last
pooling layer attends jointly over all tokens. Attention that is not pooled runs through
``torch.nn.functional.scaled_dot_product_attention``.

Differences from the released code that are not switches: the parameters the released code
leaves uninitialised (positional embedding, class tokens, several biases; it relies on ViT
inflation) get ViT's normal (std 0.02) or zeros; any input size whose sides are
multiples of the patch size works (the released code hard-codes 14 x 14 patches): the
positional embedding, and VidTr's per-position temporal class tokens, are interpolated
bicubically over the patch grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastlocal import topk_std_attention
from fastlocal._dispatch import BACKENDS

from .config import PRESETS, LayerGeometry, VidTrConfig

__all__ = ["VidTr", "resize_patch_grid"]


def resize_patch_grid(tokens: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of per-patch tokens laid out row-major on a grid.

    ``tokens [..., old_h * old_w, C]`` -> ``[..., new_h * new_w, C]`` (computed in at least float32).
    """
    if tuple(old) == tuple(new):
        return tokens
    *lead, n, c = tokens.shape
    if n != old[0] * old[1]:
        raise ValueError(f"tokens hold {n} patches, not a {old[0]} x {old[1]} grid")
    work = torch.promote_types(tokens.dtype, torch.float32)  # bicubic in half precision loses the table
    grid = tokens.reshape(-1, old[0], old[1], c).permute(0, 3, 1, 2).to(work)
    grid = F.interpolate(grid, size=tuple(new), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(*lead, new[0] * new[1], c).to(tokens.dtype)


def _gather_frames(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x [B', H, T, d]``, ``index [B', H, K]`` -> ``[B', H, K, d]`` (the frames each head keeps)."""
    return x.gather(2, index.unsqueeze(-1).expand(*index.shape, x.shape[-1]))


# ---- attention ---------------------------------------------------------------------------------


class _Attention(nn.Module):
    """The released projections: one ``in_proj`` (C -> 3C, q | k | v) and one ``out_proj``.

    Subclasses implement ``forward(y [B, L, C]) -> (out [B, L', C], index | None)``; a pooling
    layer returns the topK-std index ``[B * N, H, keep]`` and gathers the residual with it.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def qkv(self, y: torch.Tensor, *grid: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``y [B, prod(grid), C]`` -> q, k, v, each ``[B, *grid, H, d]``."""
        qkv = self.in_proj(y).view(y.shape[0], *grid, 3, self.heads, -1)
        return qkv.unbind(-3)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d))`` with dropout on the probabilities, times ``v`` (``[..., L, d]``)."""
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)


class SeparableAttention(_Attention):
    """VidTr's attention over the ``rows x P`` token grid (``rows = T + 1``, ``P = N + 1``)."""

    def __init__(self, dim: int, heads: int, dropout: float, rows: int) -> None:
        super().__init__(dim, heads, dropout)
        self.rows = rows

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        B, L, C = y.shape
        R, H = self.rows, self.heads
        P = L // R
        q, k, v = self.qkv(y, R, P)  # [B, R, P, H, d]
        d = q.shape[-1]

        def temporal(z: torch.Tensor) -> torch.Tensor:  # one sequence of R rows per (b, column)
            return z.permute(0, 2, 3, 1, 4).reshape(B * P, H, R, d)

        def spatial(z: torch.Tensor) -> torch.Tensor:  # one sequence of P columns per (b, head, row)
            return z.permute(0, 3, 1, 2, 4).reshape(B, H * R, P, d)

        out_t = self.attend(temporal(q), temporal(k), temporal(v))  # [B * P, H, R, d]
        values = out_t.view(B, P, H, R, d).permute(0, 2, 3, 1, 4).reshape(B, H * R, P, d)
        out = self.attend(spatial(q), spatial(k), values)  # [B, H * R, P, d]
        out = out.view(B, H, R, P, d).permute(0, 2, 3, 1, 4).reshape(B, L, C)
        return self.out_proj(out), None


class CompactSeparableAttention(_Attention):
    """C-VidTr's separable attention over ``[cls, T x N patches]``; topK-std pooled when ``keep``.

    The class token takes no part: its output is its own input ``y[:, :1]``, as released.
    """

    def __init__(self, dim: int, heads: int, dropout: float, frames: int, keep: int | None,
                 second_softmax: bool) -> None:
        super().__init__(dim, heads, dropout)
        self.frames = frames
        self.keep = keep
        self.second_softmax = second_softmax
        self.backend: str | None = None

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, L, C = y.shape
        T, H = self.frames, self.heads
        N = (L - 1) // T
        q, k, v = self.qkv(y[:, 1:], T, N)  # [B, T, N, H, d]
        d = q.shape[-1]

        def temporal(z: torch.Tensor) -> torch.Tensor:  # one sequence of T frames per (b, position)
            return z.permute(0, 2, 3, 1, 4).reshape(B * N, H, T, d)

        q, k, v = temporal(q), temporal(k), temporal(v)
        if self.keep is None:
            out_t, index, kept = self.attend(q, k, v), None, T
        else:  # no attention dropout in a pooling layer (released)
            out_t, index = topk_std_attention(q, k, v, self.keep, exclude_first=False,
                                              second_softmax=self.second_softmax, backend=self.backend)
            q, k, kept = _gather_frames(q, index), _gather_frames(k, index), self.keep

        def spatial(z: torch.Tensor) -> torch.Tensor:  # [B * N, H, kept, d] -> [B, H * kept, N, d]
            return z.view(B, N, H, kept, d).permute(0, 2, 3, 1, 4).reshape(B, H * kept, N, d)

        out = self.attend(spatial(q), spatial(k), spatial(out_t))
        out = out.view(B, H, kept, N, d).permute(0, 2, 3, 1, 4).reshape(B, kept * N, C)
        return torch.cat([y[:, :1], self.out_proj(out)], dim=1), index

    def gather_residual(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The residual stream ``[B, 1 + T * N, C]`` at the kept frames, per head, as released:
        channels of head h at position n come from frame ``index[b * N + n, h, i]``.
        Returns ``[B, 1 + keep * N, C]``."""
        B, L, C = x.shape
        T, H, K = self.frames, self.heads, index.shape[-1]
        N = (L - 1) // T
        frames = x[:, 1:].view(B, T, N, H, C // H).permute(0, 2, 3, 1, 4).reshape(B * N, H, T, C // H)
        kept = _gather_frames(frames, index).view(B, N, H, K, C // H).permute(0, 3, 1, 2, 4).reshape(B, K * N, C)
        return torch.cat([x[:, :1], kept], dim=1)


class JointAttention(_Attention):
    """Multi-head self-attention over all tokens (``nn.MultiheadAttention`` in the released code)."""

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, None]:
        B, L, C = y.shape
        q, k, v = (z.transpose(1, 2) for z in self.qkv(y, L))  # [B, H, L, d]
        return self.out_proj(self.attend(q, k, v).transpose(1, 2).reshape(B, L, C)), None


# ---- layers ------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """``fc2(dropout(act(fc1(x))))``: ``[..., C] -> [..., C]``."""

    def __init__(self, dim: int, hidden: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class Block(nn.Module):
    """One pre-LN encoder layer: ``x + drop(attn(norm1(x) [+ pos]))``, then ``x + drop(mlp(norm2(x)))``.

    ``forward(x [B, L, C], pos [1, L, C] | None) -> [B, L', C]`` (``L' < L`` after pooling).
    ``pos`` is added after ``norm1``, so it reaches q, k and v but not the residual (released).
    """

    def __init__(self, config: VidTrConfig, attn: _Attention) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(config.embed_dim)
        self.mlp = Mlp(config.embed_dim, config.mlp_dim, config.activation, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(x)
        if pos is not None:
            y = y + pos
        out, index = self.attn(y)
        if index is not None:
            x = self.attn.gather_residual(x, index)
        x = x + self.drop(out)
        return x + self.drop(self.mlp(self.norm2(x)))


# ---- the model ---------------------------------------------------------------------------------


class VidTr(nn.Module):
    """VidTr, or C-VidTr when ``config.pool_layers`` is set.

    Args:
        config: :class:`VidTrConfig` (default: the ``vidtr-s`` preset).
        backend: fastlocal backend of the topK-std pooling (None: automatic; see
            :func:`fastlocal.use_backend`). Settable later: ``model.backend = "cpu"``.

    ``forward(video [B, 3, frames, H, W]) -> logits [B, num_classes]``; ``H`` and ``W`` are
    multiples of ``patch_size`` (the positional embedding is interpolated when they differ
    from ``image_size``). ``forward_features`` returns the normalised class token ``[B, C]``.
    """

    def __init__(self, config: VidTrConfig | None = None, *, backend: str | None = None) -> None:
        super().__init__()
        self.config = config = PRESETS["vidtr-s"].model if config is None else config
        C, T, N, p = config.embed_dim, config.temporal_size, config.grid ** 2, config.patch_size
        self.patch_embed = nn.Conv3d(3, C, (config.tubelet_size, p, p), stride=(config.tubelet_size, p, p))
        if config.compact:
            self.cls_token = nn.Parameter(torch.empty(1, 1, C))
            self.pos_embed = nn.Parameter(torch.empty(1, 1 + T * N, C))
        else:
            self.cls_spatial = nn.Parameter(torch.empty(T, 1, C))
            self.cls_temporal = nn.Parameter(torch.empty(1, N + 1, C))
            self.pos_embed = nn.Parameter(torch.empty(1, (T + 1) * (N + 1), C))
        self.blocks = nn.ModuleList(Block(config, self._attention(config, i)) for i in range(config.depth))
        self.norm = nn.LayerNorm(C)
        self.head_drop = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(C, config.num_classes)
        self._reset_parameters()
        self.backend = backend

    @staticmethod
    def _attention(config: VidTrConfig, layer: int) -> _Attention:
        C, H, p = config.embed_dim, config.heads, config.dropout
        if not config.compact:
            return SeparableAttention(C, H, p, rows=config.temporal_size + 1)
        geometry = config.geometry()
        if geometry[layer].kind == "joint":
            return JointAttention(C, H, p)
        frames_in = config.temporal_size if layer == 0 else geometry[layer - 1].frames
        keep = geometry[layer].frames if geometry[layer].kind == "pooling" else None
        return CompactSeparableAttention(C, H, p, frames_in, keep, config.second_softmax)

    def _reset_parameters(self) -> None:
        # released: xavier-uniform matrices (classifier aside), PyTorch's default MLP and stem
        # biases; what it leaves uninitialised (attention biases, tables) gets zeros / ViT's init
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d)) and module is not self.head:
                nn.init.xavier_uniform_(module.weight)
            if isinstance(module, _Attention):
                nn.init.zeros_(module.in_proj.bias)
                nn.init.zeros_(module.out_proj.bias)
        for name in ("pos_embed", "cls_token", "cls_spatial", "cls_temporal"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name), std=0.02)  # ViT's (its truncation at 100 std never acts)

    @property
    def backend(self) -> str | None:
        """The fastlocal backend the pooling layers request (None: automatic)."""
        return self._backend

    @backend.setter
    def backend(self, name: str | None) -> None:
        if name is not None and name not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")
        self._backend = name
        for module in self.modules():
            if isinstance(module, CompactSeparableAttention):
                module.backend = name

    def geometry(self, height: int | None = None, width: int | None = None) -> tuple[LayerGeometry, ...]:
        """Per layer: kind, frames and tokens it outputs (see :meth:`VidTrConfig.geometry`)."""
        return self.config.geometry(height, width)

    # ---- tokens ---------------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor) -> tuple[int, int]:
        config = self.config
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a torch.Tensor [B, 3, {config.frames}, H, W], got {type(video).__name__}")
        if not video.is_floating_point():
            raise TypeError(f"video must be floating point, got dtype {video.dtype}")
        if video.dim() != 5 or video.shape[1] != 3 or video.shape[2] != config.frames:
            raise ValueError(f"video must be [B, 3, {config.frames}, H, W], got shape {tuple(video.shape)}")
        p = config.patch_size
        height, width = video.shape[-2:]
        if height < p or width < p or height % p or width % p:
            raise ValueError(f"video height and width must be positive multiples of patch_size={p}, "
                             f"got {height} x {width}")
        return height // p, width // p

    def _tables(self, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The positional embedding ``[1, L, C]`` (and VidTr's ``cls_temporal [1, P, C]``) for a patch grid."""
        old = (self.config.grid, self.config.grid)
        C = self.config.embed_dim
        if self.config.compact:
            T = self.config.temporal_size
            pos = self.pos_embed
            frames = resize_patch_grid(pos[:, 1:].reshape(T, -1, C), old, grid).reshape(1, -1, C)
            return torch.cat([pos[:, :1], frames], dim=1), None
        rows = self.config.temporal_size + 1
        pos = self.pos_embed.view(rows, -1, C)
        pos = torch.cat([pos[:, :1], resize_patch_grid(pos[:, 1:], old, grid)], dim=1).reshape(1, -1, C)
        cls_t = self.cls_temporal
        cls_t = torch.cat([cls_t[:, :1], resize_patch_grid(cls_t[:, 1:], old, grid)], dim=1)
        return pos, cls_t

    def tokens(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``video [B, 3, frames, H, W]`` -> (tokens ``[B, L, C]`` in the released order, positional
        embedding ``[1, L, C]``)."""
        grid = self._check_video(video)
        pos, cls_t = self._tables(grid)
        x = self.patch_embed(video)  # [B, C, T, h, w]
        B, C, T = x.shape[:3]
        x = x.flatten(3).permute(0, 2, 3, 1)  # [B, T, N, C]
        if self.config.compact:
            return torch.cat([self.cls_token.expand(B, 1, C), x.reshape(B, -1, C)], dim=1), pos
        x = torch.cat([self.cls_spatial.expand(T, 1, C).unsqueeze(0).expand(B, T, 1, C), x], dim=2)
        x = torch.cat([cls_t.unsqueeze(0).expand(B, 1, -1, C), x], dim=1)  # [B, T + 1, N + 1, C]
        return x.reshape(B, -1, C), pos

    # ---- forward --------------------------------------------------------------------------
    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, 3, frames, H, W]`` -> the class token after the final LayerNorm, ``[B, C]``."""
        x, pos = self.tokens(video)
        mode = self.config.pos_embed
        if mode == "input":
            x = x + pos
        for i, block in enumerate(self.blocks):
            x = block(x, pos if mode == "every" or (mode == "first" and i == 0) else None)
        # the final LayerNorm acts per token and only the class token (index 0) is read
        return self.norm(x[:, 0])

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``video [B, 3, frames, H, W]`` -> logits ``[B, num_classes]``."""
        return self.head(self.head_drop(self.forward_features(video)))
