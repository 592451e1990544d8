"""The registry of :mod:`fastlocal.models`: names, presets, ``create`` and ``list_models``.

A model is registered by a line in :data:`MODULES` and a ``SPEC`` (:class:`ModelSpec`) in its
package's ``__init__.py``; model packages are imported on first use only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from .configs import Preset, replace
from .engine import Task

__all__ = ["MODULES", "ModelCLI", "ModelSpec", "create", "get_preset", "get_spec", "list_models"]

#: model name -> the package holding its ``SPEC``
MODULES: dict[str, str] = {
    "etad": "fastlocal.models.etad",
    "gta": "fastlocal.models.gta",
    "tallformer": "fastlocal.models.tallformer",
    "tut": "fastlocal.models.tut",
    "vidtr": "fastlocal.models.vidtr",
}


class ModelCLI(Protocol):
    """A model's part of ``python -m fastlocal.models NAME train|eval|info``."""

    def add_arguments(self, parser: argparse.ArgumentParser, command: str) -> None:
        """Add the model's data options to ``command``'s parser."""

    def configure(self, args: argparse.Namespace, model: Any, train: Any) -> tuple[Any, Any]:
        """Adjust the configs to the data (e.g. feature width, class count)."""

    def describe(self, args: argparse.Namespace) -> dict[str, Any]:
        """What ``eval.json`` records about the data evaluated (dataset, split...)."""

    def task(self, args: argparse.Namespace, model: Any, train: Any, command: str) -> Task:
        """The engine task for ``command`` ("train" or "eval")."""

    # A model with ModelSpec.extra_commands also has
    # ``run(args, model, train, command) -> int``, which runs one of them (exit status).


@dataclass(frozen=True)
class ModelSpec:
    """How to build, describe and train one model.

    ``build(config)`` makes the module; ``example(config)`` returns the positional inputs of
    one sample (``info`` measures its multiply-adds) and ``example_note`` says what it is;
    ``published(preset)`` returns lines ``info`` prints after its measurement (the paper's
    numbers for that preset and why they differ), or nothing. ``extra_commands`` maps the
    names of commands beyond ``train|eval|info`` to their help (e.g. TALLFormer's
    ``init-memory``); they take ``--out``, ``--device``, the model's data options, and run
    through ``cli.run(args, model_config, train_config, command)``.
    """

    name: str
    summary: str
    build: Callable[[Any], nn.Module]
    config_class: type
    train_class: type
    presets: Mapping[str, Preset]
    default_preset: str
    example: Callable[[Any], tuple[Any, ...]]
    example_note: str
    cli: ModelCLI
    published: Callable[[str], Sequence[str]] = lambda preset: ()
    extra_commands: Mapping[str, str] = dataclasses.field(default_factory=dict)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model (``ValueError`` naming the known ones otherwise)."""
    if name not in MODULES:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODULES)}")
    return importlib.import_module(MODULES[name]).SPEC


def get_preset(name: str, preset: str | None = None) -> Preset:
    """Model ``name``'s preset (default: its default preset)."""
    spec = get_spec(name)
    preset = spec.default_preset if preset is None else preset
    if preset not in spec.presets:
        raise ValueError(f"unknown preset {preset!r} for model {name!r}; known: {sorted(spec.presets)}")
    return spec.presets[preset]


def create(name: str, preset: str | None = None, **overrides: Any) -> nn.Module:
    """Build model ``name`` from a preset's architecture config, with fields overridden.

    >>> fastlocal.models.create("tut", preset="salads50", input_dim=1024)  # doctest: +SKIP

    Training hyper-parameters are not model fields: pass them to the engine
    (``get_preset(name, preset).train``).
    """
    spec = get_spec(name)
    chosen = get_preset(name, preset)
    train_fields = {f.name for f in dataclasses.fields(spec.train_class)}
    misplaced = sorted(set(overrides) & train_fields - {f.name for f in dataclasses.fields(spec.config_class)})
    if misplaced:
        raise ValueError(f"{misplaced} are training hyper-parameters ({spec.train_class.__name__}), not "
                         f"fields of {spec.config_class.__name__}; create() builds the architecture only")
    return spec.build(replace(chosen.model, **overrides))


def list_models() -> dict[str, list[str]]:
    """Every registered model and its preset names: ``{"tut": ["salads50", "gtea", ...], ...}``."""
    return {name: list(get_spec(name).presets) for name in MODULES}
