"""TUT, the Temporal U-Transformer (Du et al., "Do we really need temporal convolutions in
action segmentation?", ICME 2023), built on :class:`fastlocal.nn.LocalAttention`.

Layout: features ``[B, T, D]`` (batch first, like :mod:`fastlocal.nn`), logits
``[S, B, T, C]`` for the S = 1 + M stages. A stage is: input projection, N encoder layers
(nearest x1/2 downsampling, local self-attention with relative position bias, instance
norm, FFN, instance norm), N decoder layers (nearest x2 upsampling, local cross-attention
to the encoder output of the same length, instance norm, FFN, instance norm), classifier.
Refinement stages read the previous stage's softmax.

Where the paper and the released code (github ddz16/TUT) disagree, :class:`TUTConfig` has a
switch whose default is the released code (see :mod:`fastlocal.models.tut.config`).

Differences from the released code that are not switches, all for batches of
different lengths: each video is downsampled and upsampled with its own length (so a
video's output does not depend on the other videos in its batch; for one video the
index maps are exactly ``F.interpolate(mode="nearest")``'s), instance norm statistics
skip padding, and level lengths never drop below 1 (``max(T // 2**l, 1)``) so any T >= 1 works.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fastlocal.nn import LocalAttention, RelativePositionBias

from ..configs import from_dict
from ..weights import read_state_dict, stored_model_config
from .config import PRESETS, TUTConfig

# ---- per-video resampling and masking --------------------------------------------------------


def level_lengths(lengths: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
    """Valid lengths per level: ``[T, T//2, T//4, ...]`` (at least 1), ``num_layers + 1`` tensors ``[B]``."""
    out = [lengths]
    for _ in range(num_layers):
        out.append(torch.clamp(out[-1] // 2, min=1))
    return out


_INDEX_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def nearest_index(src: int, dst: int) -> torch.Tensor:
    """Source index of each of ``dst`` outputs when resizing ``src`` frames by nearest
    interpolation, exactly as ``F.interpolate(mode="nearest")`` picks them. ``[dst]`` int64."""
    key = (src, dst)
    if key not in _INDEX_CACHE:
        if len(_INDEX_CACHE) > 4096:
            _INDEX_CACHE.clear()
        ramp = torch.arange(src, dtype=torch.float64).view(1, 1, src)
        _INDEX_CACHE[key] = F.interpolate(ramp, size=dst, mode="nearest").view(dst).long()
    return _INDEX_CACHE[key]


def resample_index(src_lengths: torch.Tensor, dst_lengths: torch.Tensor, dst_size: int) -> torch.Tensor:
    """``[B, dst_size]`` gather index mapping each video's first ``dst_lengths[b]`` output frames to
    its first ``src_lengths[b]`` input frames (nearest); padding positions read frame 0."""
    pairs = list(zip(src_lengths.tolist(), dst_lengths.tolist(), strict=True))
    rows = []
    for src, dst in pairs:
        row = torch.zeros(dst_size, dtype=torch.long)
        row[:dst] = nearest_index(src, dst)
        rows.append(row)
    return torch.stack(rows).to(src_lengths.device)


def resample(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather frames: ``x [B, T, E]``, ``index [B, T']`` -> ``[B, T', E]``."""
    if x.shape[0] == 1:
        return x.index_select(1, index[0])
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def padding_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, size]`` bool, True = padding."""
    return torch.arange(size, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


def masked_instance_norm(x: torch.Tensor, pad: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """Instance norm over time (no affine, biased variance, as ``nn.InstanceNorm1d``) on ``x [B, T, E]``;
    the statistics skip positions where ``pad [B, T]`` is True (padding outputs are zero)."""
    if pad is None:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + eps)
    keep = (~pad).unsqueeze(-1).to(x.dtype)
    count = keep.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (x * keep).sum(dim=1, keepdim=True) / count
    var = ((x - mean).square() * keep).sum(dim=1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps) * keep


# ---- layers ----------------------------------------------------------------------------------


class _OutputDropoutLinear(nn.Linear):
    """The attention's output projection with dropout on its input: TUT's "attention dropout"
    acts on the attention output before ``W_out`` (released code), not on the probabilities."""

    def __init__(self, features: int, p: float) -> None:
        super().__init__(features, features)
        nn.init.zeros_(self.bias)  # as LocalAttention initialises its own out_proj
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.dropout(x, self.p, self.training))


class TUTLayer(nn.Module):
    """One encoder or decoder layer (post-norm): ``IN(x + LA(x, kv)); IN(x + FFN(x))`` on ``[B, T, E]``.

    The resampling (down for encoder layers, up for decoder layers) is done by the stage,
    which knows every video's length.
    """

    def __init__(self, config: TUTConfig, d_model: int, d_ffn: int, rpb: RelativePositionBias | bool) -> None:
        super().__init__()
        on_probs = config.attention_dropout_on == "probs"
        self.attn = LocalAttention(d_model, config.heads, config.window, rpb=rpb,
                                   dropout=config.attention_dropout if on_probs else 0.0)
        if not on_probs and config.attention_dropout > 0:
            self.attn.out_proj = _OutputDropoutLinear(d_model, config.attention_dropout)
        self.ffn_in = nn.Linear(d_model, d_ffn)
        self.ffn_out = nn.Linear(d_ffn, d_model)
        self.dropout = nn.Dropout(config.ffn_dropout)
        self.activation = F.relu if config.activation == "relu" else F.gelu

    def forward(
        self,
        x: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        pad: torch.Tensor | None,
        rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``, ``key``, ``value`` ``[B, T, E]``; ``pad [B, T]`` (True = padding) or None;
        ``rows [B, R]``: query rows whose attention probabilities to return ``[B, H, R, w]``."""
        attended, probs = self.attn(x, key, value, key_padding_mask=pad, need_weights_rows=rows)
        x = masked_instance_norm(x + attended, pad)
        x = masked_instance_norm(x + self.ffn_out(self.dropout(self.activation(self.ffn_in(x)))), pad)
        return x, probs


class StageOutput(NamedTuple):
    logits: torch.Tensor  # [B, T, C]
    encoder_probs: torch.Tensor | None  # [B, H, R, w] of the first encoder layer at boundary rows
    decoder_probs: torch.Tensor | None  # [B, H, R, w] of the last decoder layer at boundary rows


class TUTStage(nn.Module):
    """Prediction (``input_dropout > 0``, reads features) or refinement stage (reads probabilities)."""

    def __init__(
        self,
        config: TUTConfig,
        in_dim: int,
        d_model: int,
        d_ffn: int,
        input_dropout: float,
        encoder_rpb: list[RelativePositionBias | bool],
        decoder_rpb: list[RelativePositionBias | bool],
    ) -> None:
        super().__init__()
        self.num_layers = config.num_layers
        self.paper_kv = config.decoder_kv == "paper"
        self.input_dropout = input_dropout
        self.in_proj = nn.Linear(in_dim, d_model)
        self.encoder = nn.ModuleList(TUTLayer(config, d_model, d_ffn, encoder_rpb[i]) for i in range(self.num_layers))
        self.decoder = nn.ModuleList(TUTLayer(config, d_model, d_ffn, decoder_rpb[i]) for i in range(self.num_layers))
        self.classifier = nn.Linear(d_model, config.num_classes)

    def forward(
        self,
        x: torch.Tensor,
        levels: list[tuple[torch.Tensor | None, int]],
        down: list[torch.Tensor],
        up: list[torch.Tensor],
        encoder_rows: torch.Tensor | None = None,
        decoder_rows: torch.Tensor | None = None,
    ) -> StageOutput:
        """``x [B, T, in_dim]``; ``levels[l] = (pad mask or None, padded length)`` per level;
        ``down[l]`` gathers level l+1 from level l, ``up[l]`` level l from level l+1."""
        if self.input_dropout > 0:
            # Dropout2d on [B, D, 1, T] in the released code: whole feature channels per video.
            x = F.dropout1d(x.transpose(1, 2), self.input_dropout, self.training).transpose(1, 2)
        x = self.in_proj(x)
        skips = [x]
        encoder_probs = decoder_probs = None
        for i, layer in enumerate(self.encoder):
            x = resample(x, down[i])
            pad = levels[i + 1][0]
            x, probs = layer(x, x, x, pad, encoder_rows if i == 0 else None)
            if i == 0:
                encoder_probs = probs
            skips.append(x)
        for i, layer in enumerate(self.decoder):
            level = self.num_layers - 1 - i
            x = resample(x, up[level])
            cross = skips[level]
            pad = levels[level][0]
            rows = decoder_rows if i == self.num_layers - 1 else None
            key = cross if self.paper_kv else x
            x, probs = layer(x, key, cross, pad, rows)
            if rows is not None:
                decoder_probs = probs
        logits = self.classifier(x)
        if levels[0][0] is not None:
            logits = logits.masked_fill(levels[0][0].unsqueeze(-1), 0.0)
        return StageOutput(logits, encoder_probs, decoder_probs)


class TUTOutput(NamedTuple):
    """``logits [S, B, T, C]`` (zero at padding); per stage, the attention probabilities
    ``[B, H, R, w]`` at the requested boundary rows (None when not requested)."""

    logits: torch.Tensor
    encoder_probs: list[torch.Tensor | None]
    decoder_probs: list[torch.Tensor | None]


class TUT(nn.Module):
    """The Temporal U-Transformer: a prediction stage and ``num_refinement`` refinement stages.

    Args:
        config: :class:`TUTConfig` (default: the 50Salads preset).

    ``forward(x [B, T, D], lengths [B] | None)`` -> :class:`TUTOutput`; use ``.logits[-1]``
    (the last stage) for predictions. The relative position bias of encoder layer i is one
    :class:`~fastlocal.nn.RelativePositionBias` shared by every stage when
    ``config.rpb == "shared"`` (``self.encoder_rpb[i]``).
    """

    def __init__(self, config: TUTConfig | None = None) -> None:
        super().__init__()
        self.config = config = PRESETS["salads50"].model if config is None else config
        N = config.num_layers
        self.encoder_rpb = self.decoder_rpb = None
        if config.rpb == "shared":
            self.encoder_rpb = nn.ModuleList(RelativePositionBias(config.heads, config.window) for _ in range(N))
            if config.decoder_rpb:
                self.decoder_rpb = nn.ModuleList(RelativePositionBias(config.heads, config.window) for _ in range(N))

        def tables(shared: nn.ModuleList | None, wanted: bool) -> list[RelativePositionBias | bool]:
            if shared is not None:
                return list(shared)
            return [wanted and config.rpb == "per_stage"] * N

        stages = []
        for s in range(config.num_stages):
            first = s == 0
            stages.append(TUTStage(
                config,
                in_dim=config.input_dim if first else config.num_classes,
                d_model=config.d_model_pg if first else config.d_model_r,
                d_ffn=config.d_ffn_pg if first else config.d_ffn_r,
                input_dropout=config.input_dropout if first else 0.0,
                encoder_rpb=tables(self.encoder_rpb, True),
                decoder_rpb=tables(self.decoder_rpb, config.decoder_rpb),
            ))
        self.stages = nn.ModuleList(stages)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        encoder_rows: torch.Tensor | None = None,
        decoder_rows: torch.Tensor | None = None,
    ) -> TUTOutput:
        """Segment a batch of videos.

        Args:
            x: features ``[B, T, input_dim]``; frames at or beyond a video's length are padding.
            lengths: ``[B]`` integer tensor (or list of ints) of valid lengths in ``[1, T]``
                (default: all ``T``); floating-point lengths are refused, not truncated.
            encoder_rows: ``[B, R]`` rows of the first encoder layer (length ``T // 2`` per
                video) whose attention probabilities to return, for the boundary-aware loss.
            decoder_rows: ``[B, R]`` rows of the last decoder layer (full length), likewise.
        Returns:
            :class:`TUTOutput` with ``logits [S, B, T, num_classes]``.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of features [B, T, {self.config.input_dim}], "
                            f"got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must hold floating-point features, got dtype {x.dtype} (convert with x.float())")
        if x.dim() != 3 or x.shape[-1] != self.config.input_dim:
            raise ValueError(f"x must be [B, T, {self.config.input_dim}], got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        if B < 1:
            raise ValueError(f"x must hold at least one video (B >= 1), got shape {tuple(x.shape)}")
        if T < 1:
            raise ValueError(f"x must have at least one frame, got shape {tuple(x.shape)}")
        weight = self.stages[0].in_proj.weight
        if x.dtype != weight.dtype and not (
            torch.is_autocast_enabled(x.device.type) and torch.float64 not in (x.dtype, weight.dtype)
        ):
            raise TypeError(f"x has dtype {x.dtype} but the model's parameters have dtype {weight.dtype}: cast x "
                            f"(x.to({weight.dtype})) or the model (.to({x.dtype}))")
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        else:
            if isinstance(lengths, (list, tuple)) and all(
                isinstance(n, int) and not isinstance(n, bool) for n in lengths
            ):
                lengths = torch.tensor(lengths, dtype=torch.long)
            if not isinstance(lengths, torch.Tensor):
                raise TypeError(f"lengths must be an integer tensor [B] (or a list of ints), got "
                                f"{type(lengths).__name__}: {lengths!r}"[:300])
            if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
                raise TypeError(f"lengths must hold integer frame counts, got dtype {lengths.dtype} "
                                f"({lengths.tolist()})"[:300])
            lengths = lengths.to(device=x.device, dtype=torch.long)
            if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > T:
                raise ValueError(f"lengths must be [B] = [{B}] with values in [1, {T}], got {lengths.tolist()}"[:300])
        per_level = level_lengths(lengths.cpu(), self.config.num_layers)
        sizes = [T]
        for _ in range(self.config.num_layers):
            sizes.append(max(sizes[-1] // 2, 1))
        levels = []
        for n, size in zip(per_level, sizes, strict=True):
            pad = padding_mask(n.to(x.device), size)
            levels.append((pad if bool(pad.any()) else None, size))
        steps = range(len(sizes) - 1)
        down = [resample_index(per_level[i], per_level[i + 1], sizes[i + 1]).to(x.device) for i in steps]
        up = [resample_index(per_level[i + 1], per_level[i], sizes[i]).to(x.device) for i in steps]
        keep = None if levels[0][0] is None else (~levels[0][0]).unsqueeze(-1).to(x.dtype)

        logits, enc, dec = [], [], []
        inp = x
        for s, stage in enumerate(self.stages):
            if s > 0:
                inp = F.softmax(logits[-1], dim=-1)
                if keep is not None:
                    inp = inp * keep
            out = stage(inp, levels, down, up, encoder_rows, decoder_rows)
            logits.append(out.logits)
            enc.append(out.encoder_probs)
            dec.append(out.decoder_probs)
        return TUTOutput(torch.stack(logits), enc, dec)

    # ---- weights ---------------------------------------------------------------------------
    def load_weights(self, path: str | os.PathLike, *, strict: bool = True) -> None:
        """Load weights from a local file: a ``state_dict`` of this class, a checkpoint of the
        training engine (``python -m fastlocal.models tut train``), or a ``state_dict`` saved by
        the released TUT code (converted with :func:`convert_released_state_dict`)."""
        state = read_state_dict(path)
        if any(k.startswith(("PG.", "Rs.", "rpe_modules.")) for k in state):
            state = convert_released_state_dict(state)
        self.load_state_dict(state, strict=strict)

    @classmethod
    def from_file(cls, path: str | os.PathLike, config: TUTConfig | None = None) -> TUT:
        """Build from ``config`` (or the config stored in an engine checkpoint) and load ``path``."""
        model = cls(config if config is not None else from_dict(TUTConfig, stored_model_config(path)))
        model.load_weights(path)
        return model


_RELEASED_LAYER_KEYS = {
    "attention.W_q": "attn.q_proj",
    "attention.W_k": "attn.k_proj",
    "attention.W_v": "attn.v_proj",
    "attention.W_out": "attn.out_proj",
    "conv1": "ffn_in",
    "conv2": "ffn_out",
}


def released_rpb_to_table(weight: torch.Tensor) -> torch.Tensor:
    """TUT's ``RPE.embeddings.weight`` ``[w, h]`` indexed by ``(i - j) + w//2`` -> our
    ``[h, w]`` table indexed by ``(j - i) + w//2``: transpose and flip the offsets."""
    return weight.t().flip(-1).contiguous()


def convert_released_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state dict of the released TUT code (``PG.*``, ``Rs.<k>.*``, ``rpe_modules.*``;
    Conv1d kernels ``[out, in, 1]``) onto :class:`TUT`'s names (``stages.<s>.*``, Linear
    weights ``[out, in]``, position-bias tables ``[h, w]`` flipped as docs/design.md says)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "rpe_modules":  # scale-shared tables: rpe_modules.<i>.embeddings.weight
            out[f"encoder_rpb.{parts[1]}.table"] = released_rpb_to_table(value)
            continue
        if parts[0] == "PG":
            prefix, rest = "stages.0", parts[1:]
        elif parts[0] == "Rs":
            prefix, rest = f"stages.{int(parts[1]) + 1}", parts[2:]
        else:
            raise ValueError(f"unexpected key {key!r} in a released TUT state dict")
        name = ".".join(rest)
        if name.endswith("attention.rpe.embeddings.weight"):
            layer = name.split(".attention.")[0].replace("encoder_layers", "encoder").replace("decoder_layers",
                                                                                             "decoder")
            out[f"{prefix}.{layer}.attn.rpb.table"] = released_rpb_to_table(value)
            continue
        if rest[0] == "conv_1x1_in":
            new = f"{prefix}.in_proj.{rest[-1]}"
        elif rest[0] == "conv_out_layer":
            new = f"{prefix}.classifier.{rest[-1]}"
        elif rest[0] in ("encoder_layers", "decoder_layers"):
            kind = "encoder" if rest[0] == "encoder_layers" else "decoder"
            module = ".".join(rest[2:-1])
            if module not in _RELEASED_LAYER_KEYS:
                raise ValueError(f"unexpected key {key!r} in a released TUT state dict")
            new = f"{prefix}.{kind}.{rest[1]}.{_RELEASED_LAYER_KEYS[module]}.{rest[-1]}"
        else:
            raise ValueError(f"unexpected key {key!r} in a released TUT state dict")
        out[new] = value.squeeze(-1) if value.dim() == 3 else value
    return out
