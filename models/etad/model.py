"""ETAD's detector (Liu et al., "ETAD: Training Action Detection End to End on a Laptop",
CVPR-W 2023), as released (github sming256/ETAD, ``lib/models/detector/*``,
``lib/utils/misc.py``).

Layout: snippet features ``[B, C, T]`` (channels first, like :func:`fastlocal.roi_align_1d`),
proposals ``[B, K, 2]`` in [0, 1]. Modules:

- :class:`TemporalAggregation`: LSTM-boosted temporal aggregation (grouped conv + GroupNorm,
  a forward and a backward LSTM, three branches concatenated, a 1x1 fusion) -> ``[B, H, T]``;
- the boundary branch (TEM): start / end probabilities ``[B, 2, T]``;
- S cascade stages, each a residual conv then a :class:`ProposalEvaluation` (PEM): every
  proposal, extended by ``extend_ratio`` of its length on both sides, is pooled into
  ``roi_size`` bins by :func:`pool_proposals` and scored (IoU classification and
  regression) and regressed (start/end and centre/width offsets, start/end probabilities).
  The next stage reads the proposals refined by :func:`reg_to_anchors` (gradients stopped).

``backend`` (constructor argument and attribute) is passed to every fastlocal op.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
from torch import nn

import fastlocal

from .config import ETADConfig


class ETADOutput(NamedTuple):
    """What :class:`ETAD` returns, S stages stacked.

    ``tem [B, 2, T]``: start / end probabilities per snippet. ``anchors [S, B, K, 2]``: the
    proposals each stage evaluated (stage 0: the input ones). ``iou [S, B, K, 2]``:
    (iou_cls, iou_reg), sigmoid. ``reg [S, B, K, 6]``: (ds, de, dc, dw, p_s, p_e): the
    start / end offsets and centre / width offsets in proposal lengths, and the sigmoid
    start / end probabilities of the proposal's boundaries.
    """

    tem: torch.Tensor
    anchors: torch.Tensor
    iou: torch.Tensor
    reg: torch.Tensor


def _conv_gn_relu(config: ETADConfig, cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, padding=kernel // 2, groups=config.conv_groups, bias=False),
        nn.GroupNorm(config.norm_groups, cout),
        nn.ReLU(inplace=True),
    )


def _mlp(dims: list[int], last_activation: nn.Module | None) -> nn.Sequential:
    """Linear layers of widths ``dims`` with ReLU between them and ``last_activation`` after the last."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(dims)):
        layers.append(nn.Linear(cin, cout))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    if last_activation is not None:
        layers.append(last_activation)
    return nn.Sequential(*layers)


class TemporalAggregation(nn.Module):
    """LSTM-boosted temporal aggregation: ``[B, C, T]`` -> ``[B, H, T]`` (H = ``hidden_dim``).

    Conv(C->H, k3) + GN + ReLU; a forward LSTM(H->H) on the sequence and a backward one on
    the time-reversed sequence (reversed back); Conv(H->H/2, k3) + GN + ReLU on each LSTM
    output and Conv(H->H, k3) + GN + ReLU on the input; concatenated as [forward, input,
    backward] -> Conv(2H->H, k1) + GN + ReLU. Convolutions are grouped and have no bias.
    """

    def __init__(self, config: ETADConfig) -> None:
        super().__init__()
        h = config.hidden_dim
        self.layer1 = _conv_gn_relu(config, config.in_channels, h, 3)
        self.lstm_forward = nn.LSTM(h, h, num_layers=1)
        self.lstm_backward = nn.LSTM(h, h, num_layers=1)
        self.layer2_forward = _conv_gn_relu(config, h, h // 2, 3)
        self.layer2_backward = _conv_gn_relu(config, h, h // 2, 3)
        self.layer2_direct = _conv_gn_relu(config, h, h, 3)
        self.layer3 = _conv_gn_relu(config, 2 * h, h, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(x)
        sequence = x.permute(2, 0, 1)  # [T, B, H], the LSTMs' default layout
        forward, _ = self.lstm_forward(sequence)
        backward, _ = self.lstm_backward(sequence.flip(0))
        forward = self.layer2_forward(forward.permute(1, 2, 0))
        backward = self.layer2_backward(backward.flip(0).permute(1, 2, 0))
        return self.layer3(torch.cat((forward, self.layer2_direct(x), backward), dim=1))


def _coordinate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def extended_rois(anchors: torch.Tensor, tscale: int, extend_ratio: float) -> torch.Tensor:
    """RoIs ``[B * K, 3]`` = (b, start - r L, end + r L) in snippets, of proposals ``[B, K, 2]`` in [0, 1]."""
    batch, count = anchors.shape[:2]
    scaled = anchors.detach() * tscale
    length = scaled[..., 1] - scaled[..., 0]
    index = torch.arange(batch, device=anchors.device, dtype=scaled.dtype).view(batch, 1).expand(batch, count)
    rois = torch.stack((index, scaled[..., 0] - extend_ratio * length, scaled[..., 1] + extend_ratio * length), -1)
    return rois.reshape(batch * count, 3)


def pool_proposals(x: torch.Tensor, anchors: torch.Tensor, roi_size: int, extend_ratio: float,
                   backend: str | None = None) -> torch.Tensor:
    """RoI features of the extended proposals: ``x [B, C, T]``, ``anchors [B, K, 2]`` in [0, 1]
    (times T = snippets) -> ``[B * K, C, roi_size]``.

    ``fastlocal.roi_align_1d(sampling_ratio=0, aligned=False)`` on RoIs (b, s, e) is
    ``torchvision.ops.roi_align(x[..., None], boxes (b, 0, s, 1, e), (roi_size, 1),
    aligned=False)`` with its default adaptive sampling, what the released PEM calls:
    ceil(L / roi_size) samples per bin along time, one across the unit width.
    """
    # RoIs stay in float32 (float64 for float64 input) under autocast: bf16 cannot hold snippet coordinates
    rois = extended_rois(anchors, x.shape[-1], extend_ratio).to(_coordinate_dtype(x.dtype))
    return fastlocal.roi_align_1d(x, rois, roi_size, sampling_ratio=0, aligned=False, backend=backend)


class ProposalEvaluation(nn.Module):
    """One PEM: ``[B, H, T]`` features and proposals ``[B, K, 2]`` -> (iou ``[B, K, 2]``, reg ``[B, K, 6]``).

    Conv(H->H/2, k3) + ReLU; RoI pooling of the extended proposals (``roi_size`` bins);
    Linear(H/2 * roi_size -> mid) + ReLU, then three heads mid->fc->fc->fc->2: IoU (sigmoid),
    boundary probabilities (sigmoid), centre/width offsets (halved, "for smoother
    regression"); the first and last quarter of the bins (the extensions before the start
    and after the end) feed H/2 * roi_size / 4 -> mid -> fc -> fc -> fc -> 1 regressors of the
    start and end offsets.
    """

    def __init__(self, config: ETADConfig) -> None:
        super().__init__()
        c = config.hidden_dim // 2
        self.roi_size, self.extend_ratio = config.roi_size, config.extend_ratio
        self.reduce = nn.Sequential(nn.Conv1d(config.hidden_dim, c, 3, padding=1), nn.ReLU(inplace=True))
        self.reduce_roi = nn.Sequential(nn.Linear(c * config.roi_size, config.mid_dim), nn.ReLU(inplace=True))
        head = [config.mid_dim, config.fc_dim, config.fc_dim, config.fc_dim, 2]
        self.iou_head = _mlp(head, nn.Sigmoid())
        self.boundary_cls_head = _mlp(head, nn.Sigmoid())
        self.center_width_head = _mlp(head, None)
        edge = [c * config.roi_size // 4, config.mid_dim, config.fc_dim, config.fc_dim, config.fc_dim, 1]
        self.start_head = _mlp(edge, None)
        self.end_head = _mlp(edge, None)

    def forward(self, x: torch.Tensor, anchors: torch.Tensor,
                backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, count = anchors.shape[:2]
        roi = pool_proposals(self.reduce(x), anchors, self.roi_size, self.extend_ratio, backend)  # [B*K, C, P]
        quarter = self.roi_size // 4
        start = self.start_head(roi[:, :, :quarter].flatten(1))
        end = self.end_head(roi[:, :, -quarter:].flatten(1))
        feature = self.reduce_roi(roi.flatten(1))
        iou = self.iou_head(feature)
        reg = torch.cat((start, end, self.center_width_head(feature) / 2, self.boundary_cls_head(feature)), dim=1)
        return iou.view(batch, count, 2), reg.view(batch, count, 6)


def reg_to_anchors(anchors: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Refine proposals ``[..., 2]`` with their regression ``[..., >= 4]`` (ds, de, dc, dw, ...):
    the mean of box 1 = (s + ds L, e + de L) and box 2 = centre c + dc L, width L exp(dw).
    Gradients flow into ``reg`` (the cascade detaches it)."""
    length = anchors[..., 1] - anchors[..., 0]
    center = (anchors[..., 0] + anchors[..., 1]) * 0.5
    start1 = anchors[..., 0] + reg[..., 0] * length
    end1 = anchors[..., 1] + reg[..., 1] * length
    center2 = center + reg[..., 2] * length
    half2 = length * torch.exp(reg[..., 3]) * 0.5
    return torch.stack(((start1 + center2 - half2) * 0.5, (end1 + center2 + half2) * 0.5), dim=-1)


def average_stages(output: ETADOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """The released inference: each stage's proposals refined by its own regression, averaged
    over stages ``[B, K, 2]``, and the stages' mean (iou_cls, iou_reg) ``[B, K, 2]``; a
    proposal's score is iou_cls * iou_reg of that mean."""
    return reg_to_anchors(output.anchors, output.reg).mean(dim=0), output.iou.mean(dim=0)


class ETAD(nn.Module):
    """ETAD's detector: ``forward(x [B, C, T], anchors [B, K, 2]) -> ETADOutput``.

    ``x``: snippet features, T = ``config.tscale``; ``anchors``: proposals in [0, 1]
    (:func:`~fastlocal.models.etad.proposals.sample_proposals` in training, every candidate
    at inference). Weights are Xavier-uniform, biases zero (GroupNorm and LSTM keep
    PyTorch's initialisation, as released). ``backend`` goes to :func:`fastlocal.roi_align_1d`.
    """

    def __init__(self, config: ETADConfig | None = None, *, backend: str | None = None) -> None:
        super().__init__()
        self.config = config = config or ETADConfig()
        self.backend = backend
        h = config.hidden_dim
        self.aggregation = TemporalAggregation(config)
        self.tem = nn.Sequential(nn.Conv1d(h, h, 3, padding=1, groups=config.conv_groups), nn.ReLU(inplace=True),
                                 nn.Conv1d(h, 2, 1), nn.Sigmoid())
        self.stage_conv = nn.ModuleList(
            nn.Sequential(nn.Conv1d(h, h, 3, padding=1, groups=config.conv_groups), nn.ReLU(inplace=True))
            for _ in config.stages)
        self.stage_pem = nn.ModuleList(ProposalEvaluation(config) for _ in config.stages)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, anchors: torch.Tensor) -> ETADOutput:
        config = self.config
        if x.ndim != 3 or x.shape[1] != config.in_channels or x.shape[2] != config.tscale:
            raise ValueError(f"x must have shape [B, {config.in_channels}, {config.tscale}] "
                             f"(in_channels, tscale), got {tuple(x.shape)}")
        if anchors.ndim != 3 or anchors.shape[0] != x.shape[0] or anchors.shape[2] != 2:
            raise ValueError(f"anchors must have shape [B={x.shape[0]}, K, 2], got {tuple(anchors.shape)}")
        if not anchors.is_floating_point():
            raise TypeError(f"anchors must be a floating tensor, got {anchors.dtype}")
        anchors = anchors.detach().to(_coordinate_dtype(x.dtype))  # before autocast lowers x's dtype
        x = self.aggregation(x)
        tem = self.tem(x)
        stage_anchors, ious, regs = [], [], []
        for conv, pem in zip(self.stage_conv, self.stage_pem, strict=True):
            iou, reg = pem(x + conv(x), anchors, self.backend)
            stage_anchors.append(anchors)
            ious.append(iou)
            regs.append(reg)
            anchors = reg_to_anchors(anchors, reg.detach())
        return ETADOutput(tem, torch.stack(stage_anchors), torch.stack(ious), torch.stack(regs))


__all__ = [
    "ETAD",
    "ETADOutput",
    "ProposalEvaluation",
    "TemporalAggregation",
    "average_stages",
    "extended_rois",
    "pool_proposals",
    "reg_to_anchors",
]
