"""VidTr's configs: the architecture (:class:`VidTrConfig`), the training (:class:`VidTrTrainConfig`),
the presets (:data:`PRESETS`) and the paper's GFLOPs (:data:`PAPER_GFLOPS`).

VidTr (Li et al., "VidTr: Video Transformer Without Convolutions", ICCV 2021) and its compact
C-VidTr. Defaults follow the released code (amazon-science/gluonmm,
``src/transformers/models/vidtr``); where the paper says otherwise, a field switches:

``activation``     "relu" (released: ``build_vidtr`` never passes one, the default is ReLU);
                   "gelu" is the paper's (§3.3).
``heads``          12 (released ``NHEAD``); the paper says 8 (§3.1).
``pos_embed``      where the learned positional embedding is added. "first" (released): to the
                   input of layer 0's attention, after ``norm1``, so it reaches q, k *and* v (one
                   ``in_proj`` reads it) but never the residual stream; "every": the same at
                   every layer (released VidTr-M: the code switches it on when ``TEMP_LEN == 16``);
                   "input": to the tokens before the first layer (the paper's §3.1, ViT's way).
``second_softmax`` (compact) True: the released pooling applies a softmax again to the
                   pooled, already-softmaxed attention rows; the paper's Eq. 9 does not.
``pool_layers``    (compact) layers whose temporal attention is topK-std pooled; released
                   C-VidTr-S pools at (1, 3, 5), the paper's Table 1 says (1, 2, 4).
``pool_keep``      frames kept by each pooling layer (the paper's tau; the released config
                   stores the rows *dropped* instead, ``NUMBER_OF_KEYS = frames in - keep``).

Not switches, because the released alternative does not exist or does not run: the layer
norm is pre-LN plus a final LN (the paper: "before and after the residual connection";
the released post-LN path calls a method that is not defined), and a compact model switches
to joint attention over all tokens after its last pooling layer (not in the paper): its
class token skips the separable layers and reads the video only there.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

from fastlocal.data import ClipSpec

from ..configs import Preset, check_choice, check_fraction, check_positive_ints, replace
from ..engine import TrainConfig

ACTIVATIONS = ("relu", "gelu")
POS_EMBED = ("first", "every", "input")
LayerKind = Literal["separable", "pooling", "joint"]


@dataclass(frozen=True)
class LayerGeometry:
    """What one encoder layer outputs: its ``kind`` ("separable": temporal then spatial
    attention; "pooling": the same with topK-std pooled temporal attention; "joint": attention
    over all tokens), the video ``frames`` it leaves (class-token row excluded) and its
    ``tokens`` (class tokens included)."""

    kind: LayerKind
    frames: int
    tokens: int


@dataclass
class VidTrConfig:
    """VidTr's architecture; a compact C-VidTr when ``pool_layers`` is not empty.

    Input ``[B, 3, frames, H, W]``, cut into ``tubelet_size x patch_size x patch_size`` patches
    embedded to ``embed_dim``; ``depth`` pre-LN layers with ``heads`` heads and an MLP of
    ``mlp_dim`` (``activation``); ``dropout`` on the attention probabilities, both residual
    branches and inside the MLP; ``head_dropout`` before the classifier (``num_classes``).
    ``image_size`` is the resolution the positional embedding is laid out for (a grid of
    ``image_size // patch_size`` squared); other input sizes interpolate it.

    VidTr: tokens on a ``(T + 1) x (N + 1)`` grid (T frames, N patches per frame): a spatial
    class token per frame and a temporal class-token row; logits from token (0, 0).
    C-VidTr: one class token and ``T x N`` patch tokens; layer ``pool_layers[i]`` keeps
    ``pool_keep[i]`` frames (topK-std, selected per batch, head and spatial position), and every
    layer after the last pooling layer attends jointly over all tokens.
    The paper-vs-code switches are described in the module docstring.
    """

    num_classes: int = 400
    frames: int = 8
    image_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 1
    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    head_dropout: float = 0.5
    activation: Literal["relu", "gelu"] = "relu"
    pos_embed: Literal["first", "every", "input"] = "first"
    pool_layers: tuple[int, ...] = ()
    pool_keep: tuple[int, ...] = ()
    second_softmax: bool = True

    def __post_init__(self) -> None:
        check_positive_ints(self, ("num_classes", "frames", "image_size", "patch_size", "tubelet_size", "embed_dim",
                                   "depth", "heads", "mlp_dim"))
        check_choice(self, "activation", ACTIVATIONS)
        check_choice(self, "pos_embed", POS_EMBED)
        check_fraction(self, ("dropout", "head_dropout"))
        if not isinstance(self.second_softmax, bool):
            raise ValueError(f"VidTrConfig.second_softmax must be a bool, got {self.second_softmax!r}")
        if self.embed_dim % self.heads:
            raise ValueError(f"VidTrConfig.embed_dim={self.embed_dim} must be divisible by heads={self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"VidTrConfig.image_size={self.image_size} must be a multiple of "
                             f"patch_size={self.patch_size}")
        if self.frames % self.tubelet_size:
            raise ValueError(f"VidTrConfig.frames={self.frames} must be a multiple of "
                             f"tubelet_size={self.tubelet_size}")
        self.pool_layers = _int_tuple(self, "pool_layers")
        self.pool_keep = _int_tuple(self, "pool_keep")
        self._check_pooling()

    def _check_pooling(self) -> None:
        layers, keep = self.pool_layers, self.pool_keep
        if len(layers) != len(keep):
            raise ValueError(f"VidTrConfig.pool_keep {keep} needs one entry per pooling layer {layers}")
        if not layers:
            return
        if any(b <= a for a, b in itertools.pairwise(layers)) or layers[0] < 0:
            raise ValueError(f"VidTrConfig.pool_layers must be increasing layer indices >= 0, got {layers}")
        if layers[-1] >= self.depth - 1:
            # the class token of a compact model reads the video only in the joint layers
            raise ValueError(f"VidTrConfig.pool_layers {layers}: the last pooling layer must be below "
                             f"depth - 1 = {self.depth - 1}, so that joint layers follow it")
        frames = self.temporal_size
        for layer, k in zip(layers, keep, strict=True):
            if not 1 <= k <= frames:
                raise ValueError(f"VidTrConfig.pool_keep: layer {layer} gets {frames} frames and must keep "
                                 f"1..{frames}, got {k}")
            frames = k
        if self.pos_embed == "every":
            raise ValueError("VidTrConfig.pos_embed='every' needs the same frames in every layer; a compact model "
                             "(pool_layers set) supports 'first' or 'input'")

    # ---- derived geometry ------------------------------------------------------------------
    @property
    def compact(self) -> bool:
        """True for C-VidTr (topK-std pooling, one class token, joint layers at the end)."""
        return bool(self.pool_layers)

    @property
    def temporal_size(self) -> int:
        """T: frames after the patch embedding (``frames // tubelet_size``)."""
        return self.frames // self.tubelet_size

    @property
    def grid(self) -> int:
        """Patches per side at ``image_size`` (14 for 224 / 16)."""
        return self.image_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.heads

    @property
    def separable_frames(self) -> tuple[int, ...]:
        """Frames each separable layer outputs, in order (C-VidTr-S: 8, 6, 6, 4, 4, 2)."""
        return tuple(g.frames for g in self.geometry() if g.kind != "joint")

    @property
    def joint_layers(self) -> int:
        """Layers of joint attention over all tokens (0 for VidTr; 6 for C-VidTr-S)."""
        return sum(g.kind == "joint" for g in self.geometry())

    def geometry(self, height: int | None = None, width: int | None = None) -> tuple[LayerGeometry, ...]:
        """Per layer: kind, frames and tokens it outputs for a ``height x width`` input (default
        ``image_size`` squared). VidTr-S: 12 x ("separable", 8, 9 * 197 = 1773); C-VidTr-S:
        frames 8, 6, 6, 4, 4, 2, then 6 joint layers over 1 + 2 * 196 = 393 tokens."""
        height = self.image_size if height is None else height
        width = self.image_size if width is None else width
        patches = (height // self.patch_size) * (width // self.patch_size)
        frames = self.temporal_size
        if not self.compact:
            return (LayerGeometry("separable", frames, (frames + 1) * (patches + 1)),) * self.depth
        pools = dict(zip(self.pool_layers, self.pool_keep, strict=True))
        out = []
        for layer in range(self.depth):
            kind: LayerKind = "joint" if layer > self.pool_layers[-1] else "separable"
            if layer in pools:
                kind, frames = "pooling", pools[layer]
            out.append(LayerGeometry(kind, frames, 1 + frames * patches))
        return tuple(out)

    def replace(self, **changes: Any) -> VidTrConfig:
        return replace(self, **changes)


def _int_tuple(config: VidTrConfig, name: str) -> tuple[int, ...]:
    value = getattr(config, name)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"VidTrConfig.{name} must be a sequence of ints, got {value!r}")
    items = tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"VidTrConfig.{name} must hold ints, got {value!r}")
    return items


@dataclass
class VidTrTrainConfig(TrainConfig):
    """VidTr's training as released (``scripts/action_recognition/config/*.yaml``): SGD with
    momentum 0.9, lr 0.01, weight decay 1e-5, 50 epochs, lr x 0.1 at epochs 25 and 40, plain
    cross-entropy. ``batch_size`` is the released per-GPU batch times the 8 GPUs it ran on.
    ``frame_stride``: the sampling rate, ``frames`` frames out of ``frames x frame_stride``
    consecutive ones (the "8x8" of VidTr-S).

    Clips as released (:class:`fastlocal.data.ClipSpec`): training frames resized to short side
    ``short_side``, scale-jittered in ``scale``, flipped when ``flip``, cropped to ``crop_size``;
    test views are ``test_clips`` clips x ``test_crops`` (1 or 3) crops of ``crop_size``, their
    softmax averaged per video. A ``crop_size`` other than the model's ``image_size`` works
    (the positional embedding is interpolated).
    """

    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    epochs: int = 50
    scheduler: Literal["constant", "plateau", "cosine", "step"] = "step"
    milestones: tuple[int, ...] = (25, 40)
    gamma: float = 0.1
    frame_stride: int = 8
    short_side: int = 256
    crop_size: int = 224
    scale: tuple[float, float] = (1.0, 1.25)
    flip: bool = True
    test_clips: int = 10
    test_crops: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_ints(self, ("frame_stride",))  # ClipSpec calls it sample_rate
        self.scale = tuple(float(v) for v in self.scale)
        try:  # ClipSpec's checks (the data pipeline's own), with one frame
            self.clip_spec(1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"VidTrTrainConfig: {exc}") from None

    def clip_spec(self, frames: int) -> ClipSpec:
        """The data pipeline's settings for clips of ``frames`` frames (the model's ``frames``)."""
        return ClipSpec(num_frames=frames, sample_rate=self.frame_stride, short_side=self.short_side,
                        crop_size=self.crop_size, scale=self.scale, flip=self.flip, test_clips=self.test_clips,
                        test_crops=self.test_crops)


def _preset(name: str, description: str, model: dict[str, Any], train: dict[str, Any]) -> Preset:
    return Preset(name, VidTrConfig(**model), VidTrTrainConfig(**train), description)


_RELEASED = "released gluonmm config {}_patch16_224_k400.yaml"

#: The released Kinetics-400 models, and C-VidTr-L from the paper's Table 1.
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("vidtr-s", "VidTr-S 8x8, " + _RELEASED.format("vidtr_s_8x8"),
            {"frames": 8}, {"frame_stride": 8, "batch_size": 24}),
    _preset("vidtr-m", "VidTr-M 16x4, " + _RELEASED.format("vidtr_m_16x4") + " (positional embedding at every "
            "layer, as the released code does for 16 frames)",
            {"frames": 16, "pos_embed": "every"}, {"frame_stride": 4, "batch_size": 24}),
    _preset("vidtr-l", "VidTr-L 32x2, " + _RELEASED.format("vidtr_l_32x2"),
            {"frames": 32}, {"frame_stride": 2, "batch_size": 8}),
    _preset("c-vidtr-s", "C-VidTr-S 8x8, " + _RELEASED.format("cvidtr_s_8x8") + " (pooling at layers 1, 3, 5; "
            "the paper's Table 1 says 1, 2, 4)",
            {"frames": 8, "pool_layers": (1, 3, 5), "pool_keep": (6, 4, 2)}, {"frame_stride": 8, "batch_size": 64}),
    _preset("c-vidtr-m", "C-VidTr-M 16x4, " + _RELEASED.format("cvidtr_m_16x4"),
            {"frames": 16, "pool_layers": (1, 2, 4), "pool_keep": (8, 4, 2)}, {"frame_stride": 4, "batch_size": 64}),
    # No released config: the paper's Table 1 (layers 1, 2, 4, 6 keep 16, 8, 4, 2) on the
    # released compact architecture (second softmax, joint layers after the last pooling);
    # the batch of the released VidTr-L (1 clip of 32 frames per GPU).
    _preset("c-vidtr-l", "C-VidTr-L 32x2, paper Table 1 (no released config): pooling at layers 1, 2, 4, 6 keeping "
            "16, 8, 4, 2 frames, otherwise the released compact architecture",
            {"frames": 32, "pool_layers": (1, 2, 4, 6), "pool_keep": (16, 8, 4, 2)},
            {"frame_stride": 2, "batch_size": 8}),
)}

#: Not from the paper: a C-VidTr small enough to train on a CPU in a minute (the tests' model), sized
#: for the synthetic videos of :mod:`fastlocal.data.synthetic_video` (frames of 32 x 40). 8 frames
#: of 32² in tubelets of 2 frames x 8² pixels (4 x 16 tokens), 48 channels in 4 heads, 5 layers:
#: pooling at layers 1 and 2 keeping 3 and 2 of the 4 tubelet rows, then 2 joint layers; no
#: dropout (it trains from scratch for a few hundred steps). The tubelet lets the patch embedding
#: see two frames at once: with one-frame patches this model learned the synthetic set's motion
#: direction only slowly (53-66% after 480 steps, against 100% with tubelets). AdamW with a
#: cosine schedule; clips of short side 32 without scale jitter (a resize per clip costs more than
#: the model's step); 2 test clips of one centre crop.
TINY_PRESETS: dict[str, Preset] = {p.name: p for p in (
    _preset("c-vidtr-tiny", "C-VidTr-tiny (not in the paper): a 5-layer C-VidTr of 48 channels on 8 frames of 32x32 "
            "in 2-frame tubelets, pooling at layers 1, 2 keeping 3, 2 rows; for CPU tests on the synthetic videos",
            {"frames": 8, "image_size": 32, "patch_size": 8, "tubelet_size": 2, "embed_dim": 48, "depth": 5,
             "heads": 4, "mlp_dim": 96, "dropout": 0.0, "head_dropout": 0.0, "pool_layers": (1, 2),
             "pool_keep": (3, 2)},
            {"frame_stride": 4, "short_side": 32, "crop_size": 32, "scale": (1.0, 1.0), "test_clips": 2,
             "test_crops": 1, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "scheduler": "cosine",
             "milestones": (), "epochs": 30, "batch_size": 8}),
)}

#: GFLOPs per 224² view published in the paper (Tables 2-3). They are not a full count and
#: differ from :func:`fastlocal.models.vidtr.macs_per_view` (VidTr-S 158.25 G): they come close
#: to the multiply-adds of the MLPs and the patch embedding alone (8 d² per patch token and
#: layer), leaving out the q/k/v/output projections and the attention itself.
PAPER_GFLOPS: dict[str, float] = {
    "vidtr-s": 89.0,
    "vidtr-m": 179.0,
    "vidtr-l": 351.0,
    "c-vidtr-s": 39.0,
    "c-vidtr-m": 59.0,
    "c-vidtr-l": 79.0,
}
