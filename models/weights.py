"""Weights from local files, for every model: never a download, never code from a pickle.

A weights file is a ``state_dict`` saved with ``torch.save``, or a checkpoint of
:mod:`fastlocal.models.engine` (``{"model": state_dict, "config": {...}, ...}``). Both are
read with ``torch.load(weights_only=True)``, which refuses to run code stored in the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_strict", "read_state_dict", "stored_model_config", "strip_prefix"]


def _load(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... name the file
        raise ValueError(f"cannot read weights from {path}: {type(exc).__name__}: {exc}") from exc


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: its state dict, or a checkpoint's ``"model"`` entry."""
    state = _load(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{os.fspath(path)} does not hold a state dict of tensors (got {type(state).__name__})")
    return state


def stored_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The architecture config a checkpoint of the engine stores (``config["model_config"]``)."""
    state = _load(path)
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("model_config"), dict):
        raise ValueError(f"{os.fspath(path)} stores no model config (not a checkpoint of fastlocal.models.engine); "
                         "pass the config explicitly")
    return config["model_config"]


def strip_prefix(state: dict[str, torch.Tensor], prefix: str, where: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` with the prefix removed (all of them for ``""``); an error naming
    ``where`` (the file) when none is under it."""
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not prefix:
        return state
    kept = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if not kept:
        raise ValueError(f"{where}: no key starts with prefix {prefix!r}")
    return kept


def _listed(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str, what: str,
                may_lack: Callable[[str], bool] = lambda key: False) -> None:
    """``model.load_state_dict(state)`` after checking every key by name and shape.

    The error names the file (``where``), the model (``what``) and the first missing, unexpected and
    mis-shaped keys, all three at once. Keys for which ``may_lack`` is true may be absent from
    ``state`` and keep the model's values (e.g. ``num_batches_tracked`` of old files).
    """
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state and not may_lack(k)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if keys:
            problems.append(f"{kind}: {_listed(keys)}")
    if problems:
        raise ValueError(f"{where} is not a checkpoint of this {what}: " + "; ".join(problems))
    model.load_state_dict({**own, **state}, strict=True)
