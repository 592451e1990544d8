"""VidTr weights from local files: the released gluonmm checkpoints, and ImageNet ViT-B/16
inflation (timm or torchvision layout). Never a download; files are read with
``torch.load(weights_only=True)`` (:func:`fastlocal.models.weights.read_state_dict`).

Released layout (``vidtr_split.py``, ``vidtr_compact.py``; ``module.`` prefixes from
DistributedDataParallel are removed): ``conv_stem``, ``pos_embedding``, ``cls_s`` and
``cls_t`` (VidTr) or ``cls`` (C-VidTr), ``encoder.layers.<i>.{self_attn.in_proj_weight,
self_attn.in_proj_bias, self_attn.out_proj, linear1, linear2, norm1, norm2}``,
``encoder.norm``, ``fc``. The joint layers' ``nn.MultiheadAttention`` has the same names.

Inflation as released (``inflate_model``): ViT's positional embedding is repeated over the
frames (VidTr: over the ``T + 1`` token rows; C-VidTr: its patch part over the ``T`` frames,
the class entry kept once) and every class token starts as ViT's; blocks and final norm are
copied, the classifier is not. Unlike the released code, the patch-embedding kernel is
inflated here too (the released ``vit_inflate.pth`` already held a 3-D one), and a ViT trained
at another resolution has its positional grid interpolated.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from ..weights import read_state_dict
from .config import VidTrConfig
from .model import VidTr, resize_patch_grid

__all__ = ["convert_released_state_dict", "inflate_vit_state_dict", "load_released_weights", "load_vit_weights"]

StateDict = Mapping[str, torch.Tensor]

# ---- released gluonmm checkpoints ----------------------------------------------------------------

_RELEASED_TOP = {
    "conv_stem.weight": "patch_embed.weight",
    "conv_stem.bias": "patch_embed.bias",
    "pos_embedding": "pos_embed",
    "cls": "cls_token",
    "cls_s": "cls_spatial",
    "cls_t": "cls_temporal",
    "encoder.norm.weight": "norm.weight",
    "encoder.norm.bias": "norm.bias",
    "fc.weight": "head.weight",
    "fc.bias": "head.bias",
}
_RELEASED_LAYER = {
    "self_attn.in_proj_weight": "attn.in_proj.weight",
    "self_attn.in_proj_bias": "attn.in_proj.bias",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "linear1.weight": "mlp.fc1.weight",
    "linear1.bias": "mlp.fc1.bias",
    "linear2.weight": "mlp.fc2.weight",
    "linear2.bias": "mlp.fc2.bias",
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
}
_RELEASED_LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)")


def _released_name(key: str) -> str | None:
    """Our name for a released key, None if it is not a released name."""
    if key in _RELEASED_TOP:
        return _RELEASED_TOP[key]
    match = _RELEASED_LAYER_KEY.fullmatch(key)
    if match and match.group(2) in _RELEASED_LAYER:
        return f"blocks.{int(match.group(1))}.{_RELEASED_LAYER[match.group(2)]}"
    return None


def _strip_prefix(state: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _expected(config: VidTrConfig) -> dict[str, torch.Size]:
    """Our parameter names and shapes for ``config`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = VidTr(config)
    return {name: p.shape for name, p in model.state_dict().items()}


def _check_names(kind: str, unknown: list[str], missing: list[str], config: VidTrConfig) -> None:
    problems = []
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    if missing:
        problems.append(f"missing keys {sorted(missing)}")
    if problems:
        model = "C-VidTr" if config.compact else "VidTr"
        raise ValueError(f"not a {kind} state dict of a {model} with depth {config.depth}: " + "; ".join(problems))


def _check_shapes(kind: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Size],
                  source: dict[str, str]) -> None:
    for name, shape in expected.items():
        if state[name].shape != shape:
            raise ValueError(f"{kind} key {source.get(name, name)!r} has shape {tuple(state[name].shape)}, "
                             f"the config needs {tuple(shape)}")


def convert_released_state_dict(state: StateDict, config: VidTrConfig) -> dict[str, torch.Tensor]:
    """A released gluonmm VidTr / C-VidTr state dict -> :class:`VidTr`'s, strictly.

    Args:
        state: the checkpoint's ``"model"`` entry (``module.`` prefixes allowed).
        config: the architecture it belongs to (e.g. ``PRESETS["c-vidtr-s"].model``).
    Raises:
        ValueError naming every unknown and missing key, or a key whose shape the config
        does not have.
    """
    state = _strip_prefix(state, "module.")
    expected = _expected(config)
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    unknown = []
    for key, value in state.items():
        name = _released_name(key)
        if name is None or name not in expected:
            unknown.append(key)
            continue
        out[name], source[name] = value, key
    missing_ours = [n for n in expected if n not in out]
    reverse = {ours: theirs for theirs, ours in _RELEASED_TOP.items()}
    missing = [reverse.get(n) or _released_key(n) for n in missing_ours]
    _check_names("released gluonmm", unknown, missing, config)
    _check_shapes("released", out, expected, source)
    return out


def _released_key(name: str) -> str:
    """The released key of one of our block parameters (for error messages)."""
    _, layer, rest = name.split(".", 2)
    theirs = {v: k for k, v in _RELEASED_LAYER.items()}[rest]
    return f"encoder.layers.{layer}.{theirs}"


def load_released_weights(model: VidTr, source: str | os.PathLike | StateDict) -> None:
    """Load a released gluonmm checkpoint (a file or its state dict) into ``model``, strictly.

    A file is read with ``weights_only=True``: its ``"model"`` entry, or the whole file when it
    is a bare state dict. gluonmm's ``save_checkpoint`` also pickles the training config (a yacs
    ``CfgNode``), which that loader refuses to unpickle; from a copy you trust, keep the
    ``"model"`` entry alone (``torch.save(ckpt["model"], path)``) and load that.
    """
    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else source
    model.load_state_dict(convert_released_state_dict(state, model.config))


# ---- ImageNet ViT-B/16 inflation ------------------------------------------------------------------

# per block: our name -> (timm name, torchvision name)
_VIT_BLOCK = {
    "norm1.weight": ("norm1.weight", "ln_1.weight"),
    "norm1.bias": ("norm1.bias", "ln_1.bias"),
    "attn.in_proj.weight": ("attn.qkv.weight", "self_attention.in_proj_weight"),
    "attn.in_proj.bias": ("attn.qkv.bias", "self_attention.in_proj_bias"),
    "attn.out_proj.weight": ("attn.proj.weight", "self_attention.out_proj.weight"),
    "attn.out_proj.bias": ("attn.proj.bias", "self_attention.out_proj.bias"),
    "norm2.weight": ("norm2.weight", "ln_2.weight"),
    "norm2.bias": ("norm2.bias", "ln_2.bias"),
    "mlp.fc1.weight": ("mlp.fc1.weight", "mlp.0.weight"),
    "mlp.fc1.bias": ("mlp.fc1.bias", "mlp.0.bias"),
    "mlp.fc2.weight": ("mlp.fc2.weight", "mlp.3.weight"),
    "mlp.fc2.bias": ("mlp.fc2.bias", "mlp.3.bias"),
}
# whole model: role -> (timm name, torchvision name)
_VIT_TOP = {
    "patch.weight": ("patch_embed.proj.weight", "conv_proj.weight"),
    "patch.bias": ("patch_embed.proj.bias", "conv_proj.bias"),
    "cls": ("cls_token", "class_token"),
    "pos": ("pos_embed", "encoder.pos_embedding"),
    "norm.weight": ("norm.weight", "encoder.ln.weight"),
    "norm.bias": ("norm.bias", "encoder.ln.bias"),
}
_VIT_BLOCK_PREFIX = ("blocks.{}.", "encoder.layers.encoder_layer_{}.")
# classifiers of the ImageNet checkpoints: never inflated
_VIT_HEADS = (("head.", "pre_logits."), ("heads.",))
# torchvision < 0.12 names of the MLP layers
_TORCHVISION_OLD_MLP = {"mlp.linear_1.": "mlp.0.", "mlp.linear_2.": "mlp.3."}


def _vit_layout(state: StateDict) -> int:
    """0 for timm's ViT layout, 1 for torchvision's."""
    if "patch_embed.proj.weight" in state:
        return 0
    if "conv_proj.weight" in state:
        return 1
    raise ValueError("not a ViT state dict: expected timm's 'patch_embed.proj.weight' or torchvision's "
                     f"'conv_proj.weight'; keys start {sorted(state)[:8]}")


def inflate_vit_state_dict(state: StateDict, config: VidTrConfig) -> dict[str, torch.Tensor]:
    """An ImageNet ViT state dict (timm or torchvision layout) -> :class:`VidTr`'s, classifier excluded.

    Args:
        state: ViT weights with ``config.depth`` blocks of width ``config.embed_dim`` and
            ``config.patch_size`` patches (``module.`` prefixes allowed).
        config: the VidTr / C-VidTr to initialise.
    Returns:
        every parameter of :class:`VidTr` but ``head.*``: ``patch_embed.weight`` is ViT's kernel
        ``[C, 3, p, p]`` repeated over the tubelet and divided by its length (one frame: the
        same kernel); ``pos_embed`` ViT's ``[1, 1 + g * g, C]`` (its grid interpolated to
        ``config.grid``) repeated as the module docstring says; class tokens ViT's.
    Raises:
        ValueError naming unknown or missing keys, and shapes that do not fit ``config``.
    """
    state = _strip_prefix(state, "module.")
    layout = _vit_layout(state)
    if layout == 1:
        for old, new in _TORCHVISION_OLD_MLP.items():
            state = {k.replace(old, new): v for k, v in state.items()}
    heads = _VIT_HEADS[layout]
    prefix = _VIT_BLOCK_PREFIX[layout]
    wanted = {names[layout]: role for role, names in _VIT_TOP.items()}
    for i in range(config.depth):
        wanted.update({prefix.format(i) + names[layout]: f"blocks.{i}.{ours}" for ours, names in _VIT_BLOCK.items()})
    unknown = [k for k in state if k not in wanted and not k.startswith(heads)]
    missing = [k for k in wanted if k not in state]
    _check_names(("timm", "torchvision")[layout] + " ViT", unknown, missing, config)

    C, T, p = config.embed_dim, config.temporal_size, config.patch_size
    out = {ours: state[theirs] for theirs, ours in wanted.items() if ours.startswith("blocks.")}
    out["norm.weight"], out["norm.bias"] = state[_VIT_TOP["norm.weight"][layout]], state[_VIT_TOP["norm.bias"][layout]]
    kernel = state[_VIT_TOP["patch.weight"][layout]]
    if kernel.shape != (C, 3, p, p):
        raise ValueError(f"ViT patch kernel {_VIT_TOP['patch.weight'][layout]!r} has shape {tuple(kernel.shape)}, "
                         f"the config needs {(C, 3, p, p)}")
    tubelet = config.tubelet_size
    out["patch_embed.weight"] = kernel.unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet
    out["patch_embed.bias"] = state[_VIT_TOP["patch.bias"][layout]]

    cls_key, pos_key = _VIT_TOP["cls"][layout], _VIT_TOP["pos"][layout]
    cls, pos = state[cls_key], state[pos_key]
    if cls.numel() != C:
        raise ValueError(f"ViT class token {cls_key!r} has shape {tuple(cls.shape)}, the config needs {C} values")
    cls = cls.reshape(1, 1, C)
    grid = round((pos.shape[-2] - 1) ** 0.5) if pos.dim() == 3 else 0
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[-1] != C or grid * grid + 1 != pos.shape[-2]:
        raise ValueError(f"ViT positional embedding {pos_key!r} must be [1, 1 + g * g, {C}], got {tuple(pos.shape)}")
    patches = resize_patch_grid(pos[:, 1:], (grid, grid), (config.grid, config.grid))  # [1, N, C]
    if config.compact:
        out["cls_token"] = cls
        out["pos_embed"] = torch.cat([pos[:, :1], patches.repeat(1, T, 1)], dim=1)
    else:
        spatial = torch.cat([pos[:, :1], patches], dim=1)  # one row of N + 1 tokens
        out["pos_embed"] = spatial.repeat(1, T + 1, 1)
        out["cls_spatial"] = cls.repeat(T, 1, 1)
        out["cls_temporal"] = cls.repeat(1, config.grid ** 2 + 1, 1)
    expected = {k: v for k, v in _expected(config).items() if not k.startswith("head.")}
    source = {ours: theirs for theirs, ours in wanted.items()}
    source["patch_embed.bias"] = _VIT_TOP["patch.bias"][layout]
    _check_shapes("ViT", out, expected, source)
    return out


def load_vit_weights(model: VidTr, source: str | os.PathLike | StateDict) -> None:
    """Initialise ``model`` from an ImageNet ViT (a file or its state dict); the classifier keeps its own init."""
    state = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else source
    missing, unexpected = model.load_state_dict(inflate_vit_state_dict(state, model.config), strict=False)
    if unexpected or sorted(missing) != ["head.bias", "head.weight"]:  # inflate_vit_state_dict's contract
        raise RuntimeError(f"ViT inflation left missing {missing} and unexpected {unexpected} keys")
