"""Argument checks shared by every public op.

Each check raises ``TypeError`` (wrong type / dtype) or ``ValueError`` (wrong
value / shape) with a message that names the argument, says what was expected
and what was given. Checks that read tensor *values* (NaN, index ranges) cannot run
while ``torch.compile`` traces (fake tensors have no values, and reading one would
break the graph): there the ops call them from inside a ``torch.library`` custom op,
which runs with the real tensors when the compiled graph runs (e.g.
``fastlocal.roi_align_1d``'s ``fastlocal::roi_align_1d_check_rois``).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)


def _dtype_names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def tensor(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
) -> torch.Tensor:
    """Check that ``value`` is a tensor of an allowed dtype and rank; return it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in ({_dtype_names(dtypes)}), got {value.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            shape = " or ".join(f"{n}-D" for n in allowed)
            raise ValueError(f"{name} must be {shape}, got shape {tuple(value.shape)}")
    return value


def same_device(**tensors: torch.Tensor | None) -> torch.device:
    """Check that every given tensor lives on one device; return it."""
    present = {k: v for k, v in tensors.items() if v is not None}
    (first_name, first), *rest = present.items()
    for name, t in rest:
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")
    return first.device


def same_dtype(**tensors: torch.Tensor | None) -> None:
    present = {k: v for k, v in tensors.items() if v is not None}
    (first_name, first), *rest = present.items()
    for name, t in rest:
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has dtype {first.dtype}")


def dim_equals(name: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    if t.shape[dim] != expected:
        raise ValueError(
            f"{name} must have size {expected} ({what}) in dimension {dim}, got shape {tuple(t.shape)}"
        )


def integer(name: str, value: object, *, minimum: int | None = None) -> int:
    """Check that ``value`` is a Python int (not bool) ``>= minimum``; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def real(name: str, value: object, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """Check that ``value`` is a finite real number inside the given interval; return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    given = value
    try:
        value = float(value)
    except OverflowError:  # an int beyond the float range (10**400): not a finite number
        value = float("inf") if given > 0 else float("-inf")
        given = f"an int of about 10**{int(abs(given).bit_length() * math.log10(2))}"
    else:
        given = value
    bad = value != value or value in (float("inf"), float("-inf"))
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value > high or (high_open and value == high)
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {given}")
    return value


def choice(name: str, value: object, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value  # type: ignore[return-value]


def checking_values() -> bool:
    """True outside ``torch.compile`` tracing, where value checks (reading tensor contents) can run inline.

    While tracing it is False: the op must move its value checks into a custom op (see
    the module docstring) or they would not run at all in the compiled graph.
    """
    return not torch.compiler.is_compiling()


def fits_in_memory(name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device, what: str) -> None:
    """Refuse a tensor of ``shape`` larger than its device's memory, before allocating anything,
    naming the argument ``name`` that asked for it (``what`` says which tensor it is)."""
    nbytes = math.prod(shape) * dtype.itemsize
    limit = _memory_bytes(device.type, device.index)
    if nbytes > limit:
        raise ValueError(f"{name} asks for {what} = {list(shape)} of {nbytes / 2**30:.4g} GiB ({dtype}), more than "
                         f"the {limit / 2**30:.4g} GiB of memory of the {device.type} device")


@functools.cache
def _total_memory(device_type: str, index: int | None) -> int:
    unbounded = 2**63 - 1
    if device_type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # no sysconf (Windows): numel's own limit only
            return unbounded
    if device_type == "cuda":
        return torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index).total_memory
    return unbounded  # meta and others: nothing is allocated


def _memory_bytes(device_type: str, index: int | None) -> int:
    """Bytes of memory of a device; a constant for Dynamo (like ``_dispatch._missing``)."""
    return _total_memory(device_type, index)


_memory_bytes._dynamo_marked_constant = True
