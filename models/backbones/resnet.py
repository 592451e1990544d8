"""2-D ResNet-50 in torchvision's state-dict layout, run over the frames of a clip, with blocks
inserted after chosen residual blocks (GTA, non-local).

The module tree is torchvision's ``resnet50`` (``torchvision/models/resnet.py``: ``ResNet`` with
``Bottleneck``, stride on the 3x3 convolution, "v1.5"), so every key is torchvision's
(``conv1.weight``, ``bn1.running_mean``, ``layer3.5.conv2.weight``, ``layer2.0.downsample.1.bias``...)
and a local ImageNet checkpoint loads strictly with :func:`load_resnet` (its ``fc.`` classifier is
dropped: this module outputs features). ``ResNet2D`` holds no classifier and no inserted blocks:
the model that owns them passes them to :meth:`ResNet2D.forward` as ``inserts``, so the
backbone's own state dict stays torchvision's.

Stages are named as torchvision's: ``layer1`` is res2, ``layer2`` res3, ``layer3`` res4, ``layer4``
res5; an insertion point ``"layer2.1"`` is after block 1 (zero-based) of ``layer2``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..configs import check_positive_ints
from .r2plus1d import load_backbone_file

__all__ = ["Bottleneck", "ResNet2D", "ResNet2DConfig", "load_resnet"]

STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class ResNet2DConfig:
    """A 2-D bottleneck ResNet: ``layers`` blocks per stage (ResNet-50: 3, 4, 6, 3), ``width`` the
    stem's channels and stage 1's bottleneck width (64; stage i's is ``width * 2**i``, outputs
    4 times that)."""

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    width: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.layers, tuple) or len(self.layers) != 4 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.layers):
            raise ValueError(f"ResNet2DConfig.layers must be a tuple of 4 ints >= 1, got {self.layers!r}")
        check_positive_ints(self, ("width",))

    def stage_channels(self, stage: str) -> int:
        """Output channels of ``stage`` ("layer1".."layer4"): 256, 512, 1024, 2048 for ResNet-50."""
        return self.width * 4 * 2 ** STAGES.index(stage)

    def insertion_points(self) -> tuple[str, ...]:
        """Every valid ``"layerS.i"`` (after block i of stage S), in forward order."""
        return tuple(f"{s}.{i}" for s, n in zip(STAGES, self.layers, strict=True) for i in range(n))


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck``: 1x1 ``conv1``, 3x3 ``conv2`` (stride), 1x1 ``conv3`` (x4), each with
    BN, ReLU after the sum with the (``downsample``\\ d) input; ``[N, cin, H, W]`` -> ``[N, 4 w, H/s, W/s]``."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet2D(nn.Module):
    """2-D ResNet feature extractor: images ``[N, 3, H, W]`` -> features ``[N, 4 * width * 8]`` (2048),
    the last stage averaged over space.

    Modules ``conv1`` (7x7 stride 2), ``bn1``, ``relu``, ``maxpool`` (3x3 stride 2) and ``layer1..4``
    (stride 1, 2, 2, 2) as torchvision's, initialised as torchvision's (Kaiming-normal fan-out
    convolutions, BN 1 and 0); no ``avgpool`` or ``fc`` module.
    """

    def __init__(self, config: ResNet2DConfig | None = None) -> None:
        super().__init__()
        config = ResNet2DConfig() if config is None else config
        if not isinstance(config, ResNet2DConfig):
            raise TypeError(f"config must be a ResNet2DConfig, got {type(config).__name__}")
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = w
        for i, (name, blocks) in enumerate(zip(STAGES, config.layers, strict=True)):
            width = w * 2 ** i
            stride = 1 if i == 0 else 2
            self.add_module(name, nn.Sequential(*(Bottleneck(cin if j == 0 else 4 * width, width, stride if j == 0
                                                             else 1) for j in range(blocks))))
            cin = 4 * width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> int:
        """Width of the features (2048 for ResNet-50)."""
        return self.config.stage_channels("layer4")

    def forward(
        self,
        images: torch.Tensor,
        inserts: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        after_stage: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Features ``[N, C]`` of ``images`` ``[N, 3, H, W]``.

        ``inserts`` maps ``"layerS.i"`` to a module run on the feature map after block i of stage S;
        ``after_stage`` maps ``"layerS"`` to one run after the whole stage (a temporal pooling, say).
        The maps are not submodules of the backbone: their owner registers them.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a [N, 3, H, W] tensor, got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        inserts = {} if inserts is None else inserts
        after_stage = {} if after_stage is None else after_stage
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for name in STAGES:
            for i, block in enumerate(getattr(self, name)):
                x = block(x)
                key = f"{name}.{i}"
                if key in inserts:
                    x = inserts[key](x)
            if name in after_stage:
                x = after_stage[name](x)
        return x.mean(dim=(2, 3))


def load_resnet(model: ResNet2D, path: str | os.PathLike, *, prefix: str = "") -> None:
    """Load a local torchvision-layout ResNet checkpoint (e.g. ImageNet ``resnet50``) into ``model``,
    strictly, with :func:`~fastlocal.models.backbones.r2plus1d.load_backbone_file`'s rules (``fc.``
    dropped, keys under ``prefix``, names and shapes must all match).

    Raises:
        FileNotFoundError: no such file. ValueError (naming the file): unreadable or not this ResNet.
    """
    if not isinstance(model, ResNet2D):
        raise TypeError(f"model must be a ResNet2D, got {type(model).__name__}")
    load_backbone_file(model, path, prefix=prefix, what=f"2-D ResNet ({model.config})")
