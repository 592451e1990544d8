"""R(2+1)D video backbones in torchvision's state-dict layout, as feature extractors.

Two architectures, one module tree (torchvision's ``VideoResNet`` with ``Conv2Plus1D``
convolutions, ``torchvision/models/video/resnet.py``), so every key name is torchvision's
(``stem.0.weight``, ``layer2.0.conv1.0.3.weight``, ``layer3.0.downsample.1.running_var``...):

- :func:`r2plus1d_18`: torchvision's ``r2plus1d_18`` (blocks 2-2-2-2). Its checkpoint loads
  with :func:`load_r2plus1d` (the ``fc.`` classifier keys are dropped: this module outputs
  features). 31,300,125 parameters (torchvision's 31,505,325 less the 400-way ``fc``).
- :func:`r2plus1d_34`: the R(2+1)D-34 of TSP (github HumamAlwassel/TSP ``models/backbone.py``,
  the IG65M port) that ETAD fine-tunes end to end: blocks 3-4-6-3, BatchNorm eps 1e-3 and
  momentum 0.9 (TSP's literal value, meant as Caffe2's momentum; it only matters if the
  running statistics are ever updated, which ``norm_eval`` prevents), and the middle width of
  every (2+1)D convolution computed from that convolution's own input and output widths
  (``midplanes="conv"``), where torchvision uses the block's (``"block"``). The two differ
  in the second convolution of each stage's first block, e.g. ``layer2.0.conv2.0.0.weight``
  is ``[288, 128, 1, 3, 3]`` in TSP and ``[230, 128, 1, 3, 3]`` in torchvision.

Input clips ``[n, 3, L, H, W]``; output ``[n, C]`` (C = ``widths[-1]``, 512): the last
stage's map averaged over time and space (TSP's features, ETAD's ``mean(dim=[2, 3, 4])``).

Training options, as in ETAD's ``ResNet2Plus1d_TSP`` (mmaction conventions):
``frozen_stages`` k freezes the stem and ``layer1..layerk`` (no gradient, and kept in eval
mode); ``norm_eval`` keeps every BatchNorm in eval mode in ``train()`` (running statistics
used and never updated). ETAD's end-to-end config uses ``frozen_stages=2, norm_eval=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..configs import check_choice, check_positive_ints
from ..weights import load_strict, read_state_dict, strip_prefix

__all__ = ["R2Plus1D", "R2Plus1DConfig", "load_backbone_file", "load_r2plus1d", "r2plus1d_18", "r2plus1d_34"]

MIDPLANES = ("block", "conv")
HEAD_PREFIX = "fc."  # torchvision's classifier: not part of a feature backbone


@dataclass(frozen=True)
class R2Plus1DConfig:
    """An R(2+1)D network.

    ``layers``: BasicBlocks per stage; ``widths``: the stages' output channels (the stem
    outputs ``widths[0]``); ``stem_width``: the stem's spatial (1x7x7) convolution's
    channels (45 in torchvision); ``midplanes``: ``"block"`` (torchvision: both (2+1)D
    convolutions of a block use ``in*out*27 // (in*9 + 3*out)`` of the block's widths) or
    ``"conv"`` (TSP: each uses its own input and output widths); ``bn_eps``,
    ``bn_momentum``: every BatchNorm's; ``frozen_stages``: -1 (none), 0 (the stem) or k in
    1..4 (the stem and ``layer1..layerk``); ``norm_eval``: BatchNorm stays in eval mode.
    """

    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 45
    midplanes: Literal["block", "conv"] = "block"
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    frozen_stages: int = -1
    norm_eval: bool = False

    def __post_init__(self) -> None:
        for name in ("layers", "widths"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != 4:
                raise ValueError(f"R2Plus1DConfig.{name} must be a tuple of 4 ints, got {value!r}")
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(f"R2Plus1DConfig.{name} must hold ints >= 1, got {value!r}")
        check_positive_ints(self, ("stem_width",))
        check_choice(self, "midplanes", MIDPLANES)
        for name, low_open in (("bn_eps", True), ("bn_momentum", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0
            ):
                raise ValueError(f"R2Plus1DConfig.{name} must be a float in {'(0' if low_open else '[0'}, 1], "
                                 f"got {value!r}")
        frozen = self.frozen_stages
        if isinstance(frozen, bool) or not isinstance(frozen, int) or not -1 <= frozen <= 4:
            raise ValueError(f"R2Plus1DConfig.frozen_stages must be an int in [-1, 4], got {frozen!r}")
        if not isinstance(self.norm_eval, bool):
            raise ValueError(f"R2Plus1DConfig.norm_eval must be a bool, got {self.norm_eval!r}")


def _midplanes(cin: int, cout: int) -> int:
    """Middle width giving a (1x3x3)+(3x1x1) pair the parameters of one 3x3x3 convolution (the paper's rule)."""
    return cin * cout * 27 // (cin * 9 + 3 * cout)


def _bn(channels: int, config: R2Plus1DConfig) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=config.bn_eps, momentum=config.bn_momentum)


def _conv2plus1d(cin: int, cout: int, mid: int, stride: int, config: R2Plus1DConfig) -> nn.Sequential:
    """Spatial (1x3x3, stride (1,s,s)) conv, BN, ReLU, temporal (3x1x1, stride (s,1,1)) conv: keys .0 .1 .3."""
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
        _bn(mid, config),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
    )


class BasicBlock(nn.Module):
    """Two (2+1)D convolutions and a residual: ``conv1`` (conv, BN, ReLU), ``conv2`` (conv, BN),
    ``downsample`` (1x1x1 conv stride s, BN) when the shape changes; ``[n, cin, t, h, w]`` ->
    ``[n, cout, t/s, h/s, w/s]``."""

    def __init__(self, cin: int, cout: int, stride: int, config: R2Plus1DConfig) -> None:
        super().__init__()
        mid1 = _midplanes(cin, cout)
        mid2 = mid1 if config.midplanes == "block" else _midplanes(cout, cout)
        self.conv1 = nn.Sequential(_conv2plus1d(cin, cout, mid1, stride, config), _bn(cout, config),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv2plus1d(cout, cout, mid2, 1, config), _bn(cout, config))
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), _bn(cout, config))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class R2Plus1D(nn.Module):
    """R(2+1)D feature extractor: clips ``[n, 3, L, H, W]`` -> features ``[n, widths[-1]]``.

    Modules ``stem`` (1x7x7 conv stride (1,2,2) to ``stem_width``, BN, ReLU, 3x1x1 conv to
    ``widths[0]``, BN, ReLU) and ``layer1..layer4`` (stride 1, 2, 2, 2), named and shaped as
    torchvision's; no ``avgpool`` or ``fc`` module (the pooling is a mean, parameter-free).
    Weights are initialised as torchvision's (Kaiming-normal fan-out convolutions, BN 1 and 0).
    Frozen parameters get ``requires_grad=False`` here; calling ``requires_grad_(True)`` on the
    whole module afterwards unfreezes them.
    """

    def __init__(self, config: R2Plus1DConfig | None = None) -> None:
        super().__init__()
        config = R2Plus1DConfig() if config is None else config
        if not isinstance(config, R2Plus1DConfig):
            raise TypeError(f"config must be an R2Plus1DConfig, got {type(config).__name__}")
        self.config = config
        self.stem = nn.Sequential(
            nn.Conv3d(3, config.stem_width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            _bn(config.stem_width, config),
            nn.ReLU(inplace=True),
            nn.Conv3d(config.stem_width, config.widths[0], (3, 1, 1), padding=(1, 0, 0), bias=False),
            _bn(config.widths[0], config),
            nn.ReLU(inplace=True),
        )
        cin = config.widths[0]
        for i, (blocks, cout) in enumerate(zip(config.layers, config.widths, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(cin, cout, stride, config)] + [BasicBlock(cout, cout, 1, config)
                                                                for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            cin = cout
        self._initialise()
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train()  # puts frozen stages (and BN under norm_eval) in eval mode from the start

    @property
    def out_channels(self) -> int:
        """C, the width of the features."""
        return self.config.widths[-1]

    def _initialise(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and ``layer1..layer{frozen_stages}`` (empty when ``frozen_stages`` is -1)."""
        k = self.config.frozen_stages
        return [] if k < 0 else [self.stem, *(getattr(self, f"layer{i}") for i in range(1, k + 1))]

    def train(self, mode: bool = True) -> R2Plus1D:
        """``nn.Module.train``, then frozen stages back to eval mode and, with ``norm_eval``, every BatchNorm."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
            if self.config.norm_eval:
                for module in self.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
        return self

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Features of ``clips`` ``[n, 3, L, H, W]`` (floating point): ``[n, C]``, averaged over ``t, h, w``."""
        if not isinstance(clips, torch.Tensor):
            raise TypeError(f"clips must be a torch.Tensor, got {type(clips).__name__}")
        if clips.dim() != 5 or clips.shape[1] != 3:
            raise ValueError(f"clips must be [n, 3, frames, height, width], got shape {tuple(clips.shape)}")
        if not clips.is_floating_point():
            raise TypeError(f"clips must be floating point (normalised frames), got {clips.dtype}")
        x = self.stem(clips)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))


def r2plus1d_18(*, frozen_stages: int = -1, norm_eval: bool = False) -> R2Plus1D:
    """torchvision's ``r2plus1d_18`` (without its ``fc``): blocks 2-2-2-2, BN eps 1e-5."""
    return R2Plus1D(R2Plus1DConfig(frozen_stages=frozen_stages, norm_eval=norm_eval))


def r2plus1d_34(*, frozen_stages: int = -1, norm_eval: bool = False) -> R2Plus1D:
    """TSP's R(2+1)D-34 (without its ``fc``): blocks 3-4-6-3, per-convolution middle widths,
    BN eps 1e-3 and momentum 0.9. ETAD end to end: ``r2plus1d_34(frozen_stages=2, norm_eval=True)``."""
    return R2Plus1D(R2Plus1DConfig(layers=(3, 4, 6, 3), midplanes="conv", bn_eps=1e-3, bn_momentum=0.9,
                                   frozen_stages=frozen_stages, norm_eval=norm_eval))


def load_r2plus1d(model: R2Plus1D, path: str | os.PathLike, *, prefix: str = "") -> None:
    """Load a local R(2+1)D checkpoint into ``model``, strictly.

    The file is read by :func:`fastlocal.models.weights.read_state_dict` (a state dict, or
    a checkpoint's ``"model"`` entry, never code). Keys are matched after keeping only
    those under ``prefix`` and removing it (TSP's checkpoints hold the backbone under
    ``"features."``; torchvision's have no prefix), then dropping the classifier head
    (``fc.``). Every other key must match the model's by name and shape; only BatchNorm's
    ``num_batches_tracked`` counters may be absent (files saved before PyTorch 0.4.1 lack
    them), and then keep the model's. A file that pickles other objects (TSP's training
    checkpoints store an ``argparse.Namespace``) is refused by ``weights_only`` loading:
    re-save its ``"model"`` entry alone.

    Raises:
        FileNotFoundError: no such file. ValueError (naming the file): unreadable, no key
        under ``prefix``, or missing / unexpected / mis-shaped keys.
    """
    if not isinstance(model, R2Plus1D):
        raise TypeError(f"model must be an R2Plus1D, got {type(model).__name__}")
    load_backbone_file(model, path, prefix=prefix, what=f"R(2+1)D ({model.config})")


def load_backbone_file(model: nn.Module, path: str | os.PathLike, *, prefix: str = "", what: str) -> None:
    """Load a local checkpoint strictly into a backbone in torchvision's layout (any ``nn.Module``).

    :func:`load_r2plus1d`'s rules: keys under ``prefix`` (removed), the classifier ``fc.`` dropped,
    every other key matched by name and shape, only ``num_batches_tracked`` may be absent. ``what``
    names the model in the error (``"<file> is not a checkpoint of this <what>: ..."``).
    """
    where = os.fspath(path)
    state = strip_prefix(read_state_dict(path), prefix, where)
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    load_strict(model, state, where, what, may_lack=lambda key: key.endswith(".num_batches_tracked"))
