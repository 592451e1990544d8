"""TALLFormer's THUMOS detection head, as released (DaoTAD-based, vedatad ``necks/srm_vswin.py``,
``necks/tdm.py`` ``SelfAttnTDM``, ``necks/fpn.py``, ``heads/retina_head.py``).

- :class:`ReductionConvs` (before the TCM): Conv1d(k3, s2) -> ReLU -> Conv1d(k3, s2) over the
  backbone features (frame stride 2 -> 8).
- :class:`SelfAttnTDM`: sinusoidal positional encoding (x 1/sqrt(dim)) + dropout on the TCM
  output, then per stage: merge neighbour pairs, Linear(2 dim -> dim, no bias) + LayerNorm
  and a post-LN transformer layer whose attention is the band ``|i - j| <= k // 2``. The
  released code builds a dense ``[T, T]`` mask of -1e9 outside the band; here the band is
  ``fastlocal.local_attention(window=k, edge="clip")`` (exactly equal: exp(-1e9 - max)
  is 0 in float32 and float64).
- :class:`FPN` (256 channels, BatchNorm; lateral 1x1 and output 3x3 convolutions, nearest
  top-down upsampling), :class:`RetinaHead` (4 + 4 stacked 3x3 conv-BN-ReLU, 3x3 classifier
  and regressor shared by every level).

Layouts: the TCM and the stages work on ``[B, T, C]``; the FPN and the head on ``[B, C, T]``.
Under DDP the BatchNorms become SyncBatchNorm (:func:`convert_sync_batchnorm`, as the
released ``SyncBN``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fastlocal.nn import LocalAttention

from .config import TALLFormerConfig


class ReductionConvs(nn.Module):
    """``[B, feature_dim, T]`` -> ``[B, dim, ceil(ceil(T / 2) / 2)]`` (released ``SRMSwin`` after its
    spatial pooling; default PyTorch init)."""

    def __init__(self, config: TALLFormerConfig) -> None:
        super().__init__()
        self.feature_dim = config.feature_dim
        self.conv1 = nn.Conv1d(config.feature_dim, config.dim, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(config.dim, config.dim, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != self.feature_dim or x.shape[2] < 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be backbone features [B, {self.feature_dim}, T >= 1], got {shape}")
        return self.conv2(F.relu(self.conv1(x)))


def sinusoidal_encoding(length: int, dim: int, *, device: torch.device | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[length, dim]``: sin on even channels, cos on odd ones, frequencies ``10000^(-2i / dim)``
    (PyTorch tutorial's encoding, as released), computed in float32."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)
    return pe.to(dtype)


def merge_pairs(x: torch.Tensor) -> torch.Tensor:
    """``[B, T, C]`` -> ``[B, ceil(T / 2), 2C]``: concatenate neighbours (2t, 2t + 1); an odd T is
    padded with one zero step on the right (released: ``(2 - T % 2) // 2 = 0`` zeros on the
    left, the rest on the right)."""
    B, T, C = x.shape
    if T % 2:
        x = F.pad(x, (0, 0, 0, 1))
    return x.reshape(B, (T + 1) // 2, 2 * C)


class DownsampleStage(nn.Module):
    """One stage of :class:`SelfAttnTDM`: ``[B, T, dim]`` -> ``[B, ceil(T / 2), dim]``.

    Merge pairs, ``LayerNorm(Linear(2 dim -> dim, no bias))``, then a post-LN transformer layer:
    ``x = LN(x + Dropout(BandAttn(x))); x = LN(x + Dropout(W2 Dropout(ReLU(W1 x))))`` with
    dropout on the attention probabilities too.
    """

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.reduction = nn.Linear(2 * dim, dim, bias=False)
        self.reduction_norm = nn.LayerNorm(dim)
        self.attn = LocalAttention(dim, heads, window, rpb=False, edge="clip", dropout=dropout)
        # released MultiheadAttention: one Xavier-uniform [3 dim, dim] in_proj (a smaller bound
        # than three [dim, dim] ones), zero biases, default out_proj weight.
        bound = math.sqrt(6.0 / (dim + 3 * dim))
        for proj in (self.attn.q_proj, self.attn.k_proj, self.attn.v_proj):
            nn.init.uniform_(proj.weight, -bound, bound)
        self.linear1 = nn.Linear(dim, dim * mlp_ratio)
        self.linear2 = nn.Linear(dim * mlp_ratio, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduction_norm(self.reduction(merge_pairs(x)))
        x = self.norm1(x + self.dropout(self.attn(x)[0]))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class SelfAttnTDM(nn.Module):
    """Self-attention temporal down-sampling: ``[B, T, dim]`` -> ``num_levels`` tensors
    ``[B, T_l, dim]`` with ``T_0 = T`` (the input plus the positional encoding, after dropout)
    and ``T_{l+1} = ceil(T_l / 2)`` (THUMOS: 60 / 30 / 15 / 8 / 4)."""

    def __init__(self, config: TALLFormerConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.dropout = nn.Dropout(config.tdm_dropout)
        self.stages = nn.ModuleList(
            DownsampleStage(config.dim, config.tdm_heads, window, config.tdm_mlp_ratio, config.tdm_dropout)
            for window in config.tdm_windows
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pe = sinusoidal_encoding(x.shape[1], self.dim, device=x.device, dtype=x.dtype)
        x = self.dropout(x + pe / math.sqrt(self.dim))
        outs = [x]
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, relu: bool) -> nn.Sequential:
    """Conv1d (no bias, 'same' padding) -> BatchNorm1d [-> ReLU]: mmcv's ConvModule with a norm."""
    layers: list[nn.Module] = [nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                               nn.BatchNorm1d(out_channels)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FPN(nn.Module):
    """Feature pyramid over the ``num_levels`` stage outputs ``[B, dim, T_l]`` -> ``[B, fpn_channels,
    T_l]``: lateral 1x1 conv-BN, top-down ``lateral[l] += nearest(lateral[l + 1])``, output 3x3
    conv-BN; no activation; Xavier-uniform convolutions (released ``init_weights``)."""

    def __init__(self, config: TALLFormerConfig) -> None:
        super().__init__()
        L, C = config.num_levels, config.fpn_channels
        self.lateral = nn.ModuleList(conv_bn(config.dim, C, 1, relu=False) for _ in range(L))
        self.output = nn.ModuleList(conv_bn(C, C, 3, relu=False) for _ in range(L))
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.xavier_uniform_(module.weight)

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(levels) != len(self.lateral):
            raise ValueError(f"FPN takes {len(self.lateral)} levels, got {len(levels)}")
        laterals = [conv(x) for conv, x in zip(self.lateral, levels, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-1],
                                                              mode="nearest")
        return [conv(x) for conv, x in zip(self.output, laterals, strict=True)]


class RetinaHead(nn.Module):
    """RetinaNet head shared by every level: ``[B, fpn_channels, T]`` -> (``[B, A * num_classes, T]``
    logits, ``[B, A * 2, T]`` deltas); channel ``a * C + c`` is anchor a, class c. Stacked
    convolutions N(0, 0.01); classifier N(0, 0.01) with bias -log(99) (prior 0.01)."""

    def __init__(self, config: TALLFormerConfig) -> None:
        super().__init__()
        A, C, F_ = config.num_anchors, config.num_classes, config.head_channels

        def tower() -> nn.Sequential:
            return nn.Sequential(*(conv_bn(config.fpn_channels if i == 0 else F_, F_, 3, relu=True)
                                   for i in range(config.head_convs)))

        self.cls_convs, self.reg_convs = tower(), tower()
        last = F_ if config.head_convs else config.fpn_channels
        self.cls = nn.Conv1d(last, A * C, 3, padding=1)
        self.reg = nn.Conv1d(last, A * 2, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.cls.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls(self.cls_convs(x)), self.reg(self.reg_convs(x))


class THUMOSHead(nn.Module):
    """Down-sampling stages, FPN and RetinaNet head after the TCM.

    ``forward(x [B, T, dim])`` -> ``(cls_scores, seg_preds)``: per level l, ``[B, A * num_classes,
    T_l]`` logits and ``[B, A * 2, T_l]`` deltas (decode with :func:`~.anchors.decode` against
    :func:`~.anchors.level_anchors`).
    """

    def __init__(self, config: TALLFormerConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.tdm = SelfAttnTDM(config)
        self.fpn = FPN(config)
        self.retina = RetinaHead(config)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim or x.shape[1] < 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be [B, T >= 1, {self.dim}], got {shape}")
        levels = [level.transpose(1, 2) for level in self.tdm(x)]
        outputs = [self.retina(level) for level in self.fpn(levels)]
        return [o[0] for o in outputs], [o[1] for o in outputs]


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with its BatchNorms as :class:`torch.nn.SyncBatchNorm` when ``torch.distributed`` is
    initialised (the released ``SyncBN`` under DDP); otherwise ``module`` unchanged (SyncBatchNorm
    needs a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


# ---- released weights ------------------------------------------------------------------------

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _conv_module(out: dict[str, torch.Tensor], ours: str, rest: str, value: torch.Tensor) -> bool:
    """mmcv ``ConvModule`` (``conv``, ``bn``) -> our ``conv_bn`` Sequential (``0``, ``1``)."""
    part, _, param = rest.partition(".")
    if part == "conv" and param == "weight":
        out[f"{ours}.0.weight"] = value
    elif part == "bn" and param in _BN:
        out[f"{ours}.1.{param}"] = value
    else:
        return False
    return True


def _convert_tdm_key(out: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> bool:
    """``SelfAttnTDM`` keys (after ``neck.2.``) -> :class:`SelfAttnTDM`'s under ``tdm.``."""
    if name == "pe.pe":
        return True  # the sinusoid buffer, recomputed
    group, _, rest = name.partition(".")
    index, _, rest = rest.partition(".")
    if not index.isdigit():
        return False
    stage = f"tdm.stages.{int(index)}"
    if group == "reductions" and rest == "0.weight":
        out[f"{stage}.reduction.weight"] = value
    elif group == "reductions" and rest in ("1.weight", "1.bias"):
        out[f"{stage}.reduction_norm.{rest[2:]}"] = value
    elif group == "trans_layers" and rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
        param = "weight" if rest.endswith("weight") else "bias"
        for proj, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
            out[f"{stage}.attn.{proj}.{param}"] = chunk.contiguous()
    elif group == "trans_layers" and rest in ("self_attn.out_proj.weight", "self_attn.out_proj.bias"):
        out[f"{stage}.attn.out_proj.{rest.rsplit('.', 1)[1]}"] = value
    elif group == "trans_layers" and rest.split(".")[0] in ("linear1", "linear2", "norm1", "norm2"):
        out[f"{stage}.{rest}"] = value
    else:
        return False
    return True


def convert_released_head_state_dict(
    state: dict[str, torch.Tensor], prefix: str = ""
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Map the released detector's ``neck.0`` (``SRMSwin``), ``neck.2`` (``SelfAttnTDM``), ``neck.3``
    (``FPN``) and ``head`` (``RetinaHead``) weights onto :class:`ReductionConvs` and
    :class:`THUMOSHead`. Other keys (backbone, ``neck.1`` = the TCM) are left to their converters.

    Args:
        state: the released state dict; ``prefix`` is stripped first (e.g. ``"module."``).
    Returns:
        ``(reduction_state, head_state)`` for ``ReductionConvs.load_state_dict`` and
        ``THUMOSHead.load_state_dict``: fused ``in_proj`` split into q / k / v projections,
        mmcv ``ConvModule`` ``conv`` / ``bn`` into our ``0`` / ``1``, the positional encoding
        buffer dropped.
    Raises:
        ValueError: naming a key under those modules that the released head does not have.
    """
    reduction: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith("neck.0."):
            rest = name[len("neck.0."):]
            ok = rest in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
            if ok:
                reduction[rest] = value
        elif name.startswith("neck.2."):
            ok = _convert_tdm_key(head, name[len("neck.2."):], value)
        elif name.startswith(("neck.3.lateral_convs.", "neck.3.fpn_convs.")):
            group, index, rest = name[len("neck.3."):].split(".", 2)
            ok = index.isdigit() and _conv_module(
                head, f"fpn.{'lateral' if group == 'lateral_convs' else 'output'}.{int(index)}", rest, value)
        elif name.startswith(("head.cls_convs.", "head.reg_convs.")):
            group, index, rest = name[len("head."):].split(".", 2)
            ok = index.isdigit() and _conv_module(head, f"retina.{group}.{int(index)}", rest, value)
        elif name.startswith(("head.retina_cls.", "head.retina_reg.")):
            module, param = name[len("head.retina_"):].split(".", 1)
            ok = param in ("weight", "bias")
            if ok:
                head[f"retina.{module}.{param}"] = value
        elif name.startswith(("neck.3.", "head.")):
            ok = False
        else:
            continue
        if not ok:
            raise ValueError(f"unexpected key {key!r} in a released TALLFormer THUMOS head")
    return reduction, head
