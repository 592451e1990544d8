"""Config dataclasses shared by every model: validation helpers, dict round trips, overrides, presets.

Every model has two dataclasses in its ``config.py``: an architecture config (what
``fastlocal.models.create`` builds from) and a training config (a subclass of
:class:`fastlocal.models.engine.TrainConfig`). A :class:`Preset` sets both.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, TypeVar

C = TypeVar("C")

__all__ = [
    "Preset",
    "check_choice",
    "check_fraction",
    "check_positive_ints",
    "from_dict",
    "parse_assignment",
    "replace",
    "to_dict",
]


@dataclass(frozen=True)
class Preset:
    """A named configuration: the architecture ``model`` config and the ``train`` config,
    with what it reproduces (``description``)."""

    name: str
    model: Any
    train: Any
    description: str


def _owner(obj: Any) -> str:
    return type(obj).__name__


def check_positive_ints(obj: Any, names: typing.Iterable[str], minimum: int = 1) -> None:
    """Raise ``ValueError`` naming ``<Config>.<field>`` unless each field is an int >= ``minimum``."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{_owner(obj)}.{name} must be an int >= {minimum}, got {value!r}")


def check_choice(obj: Any, name: str, options: typing.Collection[Any]) -> None:
    """Raise ``ValueError`` unless ``obj.<name>`` is one of ``options``."""
    if getattr(obj, name) not in options:
        raise ValueError(f"{_owner(obj)}.{name} must be one of {tuple(options)}, got {getattr(obj, name)!r}")


def check_fraction(obj: Any, names: typing.Iterable[str]) -> None:
    """Raise ``ValueError`` unless each field is a float in ``[0, 1)`` (dropout probabilities)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
            raise ValueError(f"{_owner(obj)}.{name} must be in [0, 1), got {value!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """The config as a JSON-serialisable dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _unknown(cls: type, names: typing.Iterable[str]) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild a config from :func:`to_dict`'s output; unknown keys are an error naming them."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} data must be a dict, got {type(data).__name__}")
    _unknown(cls, data)
    return cls(**data)


def replace(config: C, **changes: Any) -> C:
    """``dataclasses.replace`` that names the config and its fields when a key is unknown."""
    _unknown(type(config), changes)
    return dataclasses.replace(config, **changes)


def _convert(text: str, annotation: Any, where: str) -> Any:
    """Parse the text of a command-line override into the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected true or false, got {text!r}")
    if annotation in (int, float, str):
        try:
            return annotation(text)
        except ValueError:
            raise ValueError(f"{where}: expected {annotation.__name__}, got {text!r}") from None
    if origin is typing.Literal:
        for option in args:
            if str(option) == text:
                return option
        raise ValueError(f"{where}: expected one of {args}, got {text!r}")
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(text, option, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: cannot parse {text!r} as {annotation}")
    if origin is tuple:
        items = [s for s in text.replace("(", "").replace(")", "").split(",") if s.strip()]
        inner = args[0] if args else str
        return tuple(_convert(s.strip(), inner, where) for s in items)
    raise ValueError(f"{where}: fields of type {annotation} cannot be set from the command line")


def parse_assignment(config: Any, assignment: str) -> tuple[str, Any]:
    """``"field=value"`` -> ``(field, typed value)`` for a field of ``config`` (``--set`` on the CLI)."""
    if "=" not in assignment:
        raise ValueError(f"--set expects FIELD=VALUE, got {assignment!r}")
    name, text = assignment.split("=", 1)
    name = name.strip()
    hints = typing.get_type_hints(type(config))
    if name not in hints or name not in {f.name for f in fields(config)}:
        raise ValueError(f"unknown {type(config).__name__} field {name!r}")
    return name, _convert(text.strip(), hints[name], f"{type(config).__name__}.{name}")
