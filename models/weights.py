"""Weights from local files, for every model: never a download, never code from a pickle.

A weights file is a ``state_dict`` saved with ``torch.save``, or a checkpoint of
:mod:`fastlocal.models.engine` (``{"model": state_dict, "config": {...}, ...}``). Both are
read with ``torch.load(weights_only=True)``, which refuses to run code stored in the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["read_state_dict", "stored_model_config"]


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
