"""Backend parametrisation shared by the op test modules.

Every op's tests run once per backend; a backend that is not built, not usable here, or
has no kernel for the op is skipped with the reason ``fastlocal.available_backends()``
gives. GPU backends are marked ``gpu`` and run on CUDA tensors, except Triton under its
interpreter (``TRITON_INTERPRET=1``, set by conftest.py without a GPU), which runs on CPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set

import pytest
import torch

import fastlocal
from fastlocal._dispatch import triton_interpreted

GPU_BACKENDS = ("triton", "cuda")


def unusable(op: str, name: str, implemented: Iterable[str]) -> str:
    """Why backend ``name`` cannot run ``op`` in this process ("" when it can)."""
    implemented = tuple(implemented)
    status = fastlocal.available_backends()[name]
    if status != "available":
        return f"backend {name!r} unavailable: {status}"
    if name not in implemented:
        return f"backend {name!r} has no {op} kernel (IMPLEMENTED = {implemented})"
    return ""


def backend_param(op: str, name: str, implemented: Iterable[str]):
    """One pytest param: GPU backends marked ``gpu``; unusable ones skipped with the reason."""
    marks = [pytest.mark.gpu] if name in GPU_BACKENDS else []
    reason = unusable(op, name, implemented)
    if reason:
        marks.append(pytest.mark.skip(reason=reason))
    return pytest.param(name, marks=marks, id=name)


def backend_params(op: str, implemented: Iterable[str], names: Iterable[str]) -> list:
    """:func:`backend_param` for each of ``names``."""
    implemented = tuple(implemented)
    return [backend_param(op, name, implemented) for name in names]


def device_of(backend: str) -> torch.device:
    """Where a backend's inputs live: CUDA for cuda / triton (CPU only under Triton's interpreter)."""
    if backend == "cuda" or (backend == "triton" and not triton_interpreted()):
        return torch.device("cuda")
    return torch.device("cpu")


def assert_same_refusal(backend: str, want: BaseException, got: BaseException | None, names: Set[str]) -> None:
    """Differential fuzzers: the reference refused a call (``want``); it must be a ValueError or
    TypeError naming one of ``names``, and ``backend`` must raise the same type and message."""
    assert type(want) in (ValueError, TypeError), repr(want)
    assert any(re.search(rf"\b{n}\b", str(want)) for n in names), f"{want!r} names none of {names}"
    assert got is not None, f"{backend} returned where the reference raised {want!r}"
    assert (type(got), str(got)) == (type(want), str(want))


def assert_same_acceptance(backend: str, got: BaseException | None, must: Set[str]) -> None:
    """Differential fuzzers: the reference served a call, which must not be invalid in any of
    ``must``, and ``backend`` must serve it too."""
    assert not must, f"reference accepted a call that is invalid in {must}"
    assert got is None, f"{backend} raised {got!r} where the reference returned"
