"""Selective-backprop clip encoding (ETAD) and a long-term feature memory (TALLFormer).

Training a clip encoder end to end on hour-long videos does not fit in memory at full
backprop, so both papers back-propagate through a sampled fraction of the clips only
(docs/design.md, "Selective backprop and LongMemory"):

- :func:`sample_indices` draws the clips that get a gradient (``random``, ``grid``, ``block``).
- :func:`selective_encode` (ETAD's encoder gradient sampling) is one autograd function:
  its forward encodes every clip under ``no_grad``, chunk by chunk; its backward re-encodes
  only the sampled clips with autograd, chunk by chunk, replaying the forward's RNG state,
  and back-propagates their slice of the incoming gradient. Peak activation memory is one
  chunk of sampled clips, whatever the number of clips.
- :class:`LongMemory` keeps one feature array per video (RAM, GPU, or a directory of
  memory-mapped ``.npy`` files) and :class:`SelectiveEncoder` reads the un-sampled clips
  from it instead of encoding them (TALLFormer).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import uuid
import warnings
import weakref
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: directory memories are refused
    fcntl = None

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import _validate as check
from ._npy import NpyLayout, npy_layout

STRATEGIES = ("random", "grid", "block")
MEMORY_DTYPES = (torch.float32, torch.float16)
_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float16: np.dtype(np.float16)}
MAX_CLIPS = 2**53  # sample_indices: largest n (grid positions are exact in float64)
MAX_SAMPLED = 2**31  # sample_indices: largest number of indices drawn
_DENSE_SAMPLING = 2**16  # "random" below this n (or n <= 4 k): the first k of randperm(n)

__all__ = [
    "MAX_CLIPS",
    "MAX_SAMPLED",
    "STRATEGIES",
    "LongMemory",
    "SelectiveEncoder",
    "sample_indices",
    "selective_encode",
]


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------


def sample_indices(
    n: int, ratio: float, strategy: str = "random", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``k = max(1, round(n * ratio))`` distinct clip indices out of ``n`` (k = 0 when n = 0).

    Work and memory are ``O(k)`` (plus ``O(n)`` while ``n <= max(4 k, 2**16)``, where
    ``"random"`` takes the first k of a permutation of n): a huge ``n`` with a tiny ``ratio``
    draws its few indices without building anything of size n.

    Args:
        n: number of clips, ``0 <= n <= MAX_CLIPS`` (``2**53``: positions are exact in float64).
        ratio: sampled fraction in ``(0, 1]``; ``n * ratio`` is rounded half up, and the count
            k must be at most ``MAX_SAMPLED`` (``2**31``).
        strategy: ``"random"`` uniform without replacement; ``"grid"`` a fixed stride
            ``n / k`` (~ ``1 / ratio``) from a random phase in ``[0, n / k)``, each position
            rounded down; ``"block"`` one contiguous run of k clips at a random offset.
        generator: CPU ``torch.Generator`` to draw from (default: the global RNG).
    Returns:
        ``[k]`` int64 CPU tensor, sorted ascending (temporal order). ``ratio = 1`` gives
        ``arange(n)`` for every strategy.
    """
    check.integer("n", n, minimum=0)
    if n > MAX_CLIPS:
        raise ValueError(f"n must be <= 2**53 (MAX_CLIPS, clip positions exact in float64), got {n}")
    ratio = check.real("ratio", ratio, low=0.0, high=1.0, low_open=True)
    check.choice("strategy", strategy, STRATEGIES)
    _check_generator(generator)
    k = _sample_count(n, ratio)
    if k > MAX_SAMPLED:
        raise ValueError(
            f"n * ratio must give at most 2**31 (MAX_SAMPLED) sampled clips, got n={n}, ratio={ratio}: k={k}"
        )
    if k == 0:
        return torch.empty(0, dtype=torch.long)
    if strategy == "random":
        if n <= max(4 * k, _DENSE_SAMPLING):
            return torch.randperm(n, generator=generator)[:k].sort().values
        return _sparse_sample(n, k, generator)
    if strategy == "grid":
        stride = n / k
        phase = torch.rand((), generator=generator, dtype=torch.float64).item() * stride
        return torch.floor(phase + stride * torch.arange(k, dtype=torch.float64)).long().clamp_(max=n - 1)
    start = int(torch.randint(n - k + 1, (), generator=generator))
    return torch.arange(start, start + k)


def _sample_count(n: int, ratio: float) -> int:
    return 0 if n == 0 else max(1, int(n * ratio + 0.5))


def _sparse_sample(n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k distinct uniform indices in ``[0, n)`` for ``k <= n / 4``, in ``O(k)``: draw with
    replacement and keep the first k distinct values in draw order (a uniform k-subset)."""
    drawn = np.empty(0, np.int64)
    distinct = 0
    while distinct < k:
        missing = k - distinct
        more = torch.randint(n, (missing + missing // 4 + 16,), generator=generator, dtype=torch.long).numpy()
        drawn = np.concatenate([drawn, more])
        _, first = np.unique(drawn, return_index=True)
        distinct = first.size
    return torch.from_numpy(np.sort(drawn[np.sort(first)[:k]]))


def _complement(n: int, index: torch.Tensor) -> torch.Tensor:
    """Sorted indices in ``[0, n)`` that are not in ``index``."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[index] = False
    return keep.nonzero().flatten()


def _check_generator(generator: object) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (indices are drawn on the CPU), got one on {generator.device}"
        )


# ----------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------


def _check_encoder(encoder: object) -> nn.Module:
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
    return encoder


def _check_clips(clips: object) -> torch.Tensor:
    if not isinstance(clips, torch.Tensor):
        raise TypeError(f"clips must be a torch.Tensor, got {type(clips).__name__}")
    if clips.dim() < 1 or clips.shape[0] < 1:
        raise ValueError(f"clips must be [N, ...] with at least one clip, got shape {tuple(clips.shape)}")
    return clips


def _check_chunk_size(chunk_size: object) -> int | None:
    return None if chunk_size is None else check.integer("chunk_size", chunk_size, minimum=1)


def _chunks(index: torch.Tensor, chunk_size: int | None) -> list[torch.Tensor]:
    """``index`` cut into consecutive runs of ``chunk_size`` (one run when None)."""
    if index.numel() == 0:
        return []
    return list(index.split(chunk_size or index.numel()))


def _run_encoder(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``encoder(x)``, checked to be floating-point features ``[len(x), ...]``."""
    features = encoder(x)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"encoder must return a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"encoder must return floating-point features, got {features.dtype}")
    if features.dim() < 1 or features.shape[0] != x.shape[0]:
        raise ValueError(
            f"encoder must return features [n, ...] for n = {x.shape[0]} clips, got shape {tuple(features.shape)}"
        )
    return features


def _place(out: torch.Tensor | None, n: int, index: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Write one chunk's features into the ``[n, ...]`` buffer (created from the first chunk)."""
    if out is None:
        out = features.new_empty((n, *features.shape[1:]))
    else:
        _check_like(out, features)
    out[index.to(out.device)] = features
    return out


def _check_like(first: torch.Tensor, features: torch.Tensor) -> None:
    """Every chunk's features must match the first chunk's in shape (after dim 0), dtype and device."""
    if features.shape[1:] != first.shape[1:] or features.dtype != first.dtype or features.device != first.device:
        raise ValueError(
            "encoder must return the same feature shape, dtype and device for every chunk, got "
            f"{tuple(features.shape[1:])} {features.dtype} {features.device} after "
            f"{tuple(first.shape[1:])} {first.dtype} {first.device}"
        )


def _encode_all(encoder: nn.Module, clips: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Every clip encoded without autograd, chunk by chunk: ``[N, ...]`` features."""
    out = None
    with torch.no_grad():
        for index in _chunks(torch.arange(clips.shape[0]), chunk_size):
            out = _place(out, clips.shape[0], index, _run_encoder(encoder, clips[index[0] : index[-1] + 1]))
    return out


def _encode_with_grad(encoder: nn.Module, clips: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """Every clip encoded with autograd, ``chunk_size`` clips per encoder call."""
    parts = [_run_encoder(encoder, chunk) for chunk in clips.split(chunk_size or clips.shape[0])]
    for part in parts[1:]:
        _check_like(parts[0], part)
    return torch.cat(parts)


@dataclass
class _RngState:
    """CPU and CUDA generator states at one point of the forward (as ``torch.utils.checkpoint``)."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor]

    @classmethod
    def capture(cls, devices: list[int]) -> _RngState:
        return cls(torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices])

    def restore(self, devices: list[int]) -> None:
        torch.set_rng_state(self.cpu)
        for device, state in zip(devices, self.cuda, strict=True):
            torch.cuda.set_rng_state(state, device)


def _cuda_devices(*tensors: torch.Tensor) -> list[int]:
    return sorted({t.get_device() for t in tensors if t.is_cuda})


_BATCHNORM_WARNED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _warn_batchnorm(encoder: nn.Module) -> None:
    """Warn once per encoder when it has a BatchNorm layer in training mode."""
    if encoder in _BATCHNORM_WARNED:
        return
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in encoder.modules()):
        _BATCHNORM_WARNED.add(encoder)
        warnings.warn(
            "selective_encode: the encoder has BatchNorm in training mode; the sampled clips are encoded "
            "twice (forward and backward), so running statistics are updated twice for them. Put BatchNorm "
            "layers in eval mode (ETAD freezes them).",
            UserWarning,
            stacklevel=3,
        )


class _SelectiveEncode(torch.autograd.Function):
    """Forward: all clips under no_grad. Backward: sampled clips re-encoded with autograd.

    Inputs after the non-tensor plan: ``clips`` and the encoder's parameters that require
    grad, so their gradients are returned to autograd (``loss.backward()`` accumulates them
    into ``.grad``; ``torch.autograd.grad`` works too).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        encoder: nn.Module,
        sampled: list[torch.Tensor],
        others: list[torch.Tensor],
        clips: torch.Tensor,
        *params: torch.Tensor,
    ) -> torch.Tensor:
        devices = _cuda_devices(clips, *params)
        n = clips.shape[0]
        states, out = [], None
        # Sampled chunks first, each after capturing the RNG state its backward replays.
        for index in sampled:
            states.append(_RngState.capture(devices))
            out = _place(out, n, index, _run_encoder(encoder, clips[index.to(clips.device)]))
        for index in others:
            out = _place(out, n, index, _run_encoder(encoder, clips[index.to(clips.device)]))
        device_type = clips.device.type
        ctx.encoder, ctx.sampled, ctx.states, ctx.devices = encoder, sampled, states, devices
        ctx.autocast = {
            "device_type": device_type,
            "dtype": torch.get_autocast_dtype(device_type),
            "enabled": torch.is_autocast_enabled(device_type),
        }
        ctx.save_for_backward(clips, *params)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        clips, *params = ctx.saved_tensors
        want_clips = ctx.needs_input_grad[3]
        wanted = [i for i, p in enumerate(params) if ctx.needs_input_grad[4 + i]]
        param_grads: list[torch.Tensor | None] = [None] * len(params)
        clip_grad = torch.zeros_like(clips) if want_clips else None
        with torch.random.fork_rng(devices=ctx.devices):
            for index, state in zip(ctx.sampled, ctx.states, strict=True):
                state.restore(ctx.devices)
                x = clips[index.to(clips.device)].detach().requires_grad_(want_clips)
                with torch.enable_grad(), torch.autocast(**ctx.autocast):
                    features = _run_encoder(ctx.encoder, x)
                g = grad[index.to(grad.device)]
                if features.shape != g.shape:
                    raise ValueError(
                        f"encoder returned shape {tuple(features.shape)} when re-encoding the sampled "
                        f"clips in backward, but {tuple(g.shape)} in forward"
                    )
                inputs = [params[i] for i in wanted] + ([x] if want_clips else [])
                grads = torch.autograd.grad(features, inputs, g, allow_unused=True)
                for i, gi in zip(wanted, grads, strict=False):
                    if gi is not None:
                        param_grads[i] = gi if param_grads[i] is None else param_grads[i] + gi  # gi may be a view
                if want_clips and grads[-1] is not None:
                    clip_grad[index.to(clips.device)] = grads[-1]
        return (None, None, None, clip_grad, *param_grads)


def selective_encode(
    encoder: nn.Module,
    clips: torch.Tensor,
    ratio: float,
    *,
    strategy: str = "random",
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Encode every clip; back-propagate through a sampled fraction of them only (ETAD).

    Forward encodes all clips under ``no_grad``, ``chunk_size`` clips per encoder call
    (the sampled chunks first, then the others). Backward re-encodes only the sampled
    clips with autograd, chunk by chunk, with the RNG state of their forward replayed
    (dropout / drop-path masks match, as ``torch.utils.checkpoint``) and autocast as in
    the forward, and back-propagates their rows of the incoming gradient. The other
    clips' gradients are dropped, without a ``1 / ratio`` rescale. Gradients reach the
    encoder's parameters that require grad, and ``clips`` only if it requires grad (zero
    rows for the un-sampled clips). BatchNorm in training mode triggers a warning (once
    per encoder): keep it in eval mode.

    When autograd is off, or neither ``clips`` nor any parameter requires grad, every
    clip is simply encoded without autograd and nothing is sampled.

    Args:
        encoder: module mapping clips ``[n, ...]`` to features ``[n, *F]``.
        clips: ``[N, ...]``, N >= 1.
        ratio: sampled fraction in ``(0, 1]`` (see :func:`sample_indices`).
        strategy: ``"random"``, ``"grid"`` or ``"block"``.
        chunk_size: clips per encoder call (default: all sampled clips in one call, all
            other clips in another). Peak activation memory of the backward is one chunk.
        generator: CPU generator for drawing the sampled clips (default: the global RNG;
            drawn before any clip is encoded).
    Returns:
        ``[N, *F]`` features in the encoder's output dtype, requiring grad when the
        encoder's parameters or ``clips`` do.
    """
    _check_encoder(encoder)
    _check_clips(clips)
    ratio = check.real("ratio", ratio, low=0.0, high=1.0, low_open=True)
    check.choice("strategy", strategy, STRATEGIES)
    chunk_size = _check_chunk_size(chunk_size)
    _check_generator(generator)
    params = tuple(p for p in encoder.parameters() if p.requires_grad)
    if not torch.is_grad_enabled() or not (clips.requires_grad or params):
        return _encode_all(encoder, clips, chunk_size)
    _warn_batchnorm(encoder)
    n = clips.shape[0]
    index = sample_indices(n, ratio, strategy, generator)
    plan = (_chunks(index, chunk_size), _chunks(_complement(n, index), chunk_size))
    return _SelectiveEncode.apply(encoder, *plan, clips, *params)


# ----------------------------------------------------------------------------------------
# Long memory
# ----------------------------------------------------------------------------------------


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str (a video id), got {type(key).__name__}")
    if not key:
        raise ValueError("key must be a non-empty str")
    return key


def _check_index(index: object, n: int, *, unique: bool) -> torch.Tensor:
    """``index`` (None = all, int tensor or sequence of ints) as int64 CPU ``[k]`` in ``[0, n)``."""
    if index is None:
        return torch.arange(n)
    if isinstance(index, torch.Tensor):
        check.tensor("index", index, ndim=1, dtypes=check.INDEX_DTYPES)
        index = index.to("cpu", torch.long)
    elif isinstance(index, Sequence) and all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        index = torch.tensor(list(index), dtype=torch.long).reshape(-1)
    else:
        raise TypeError(f"index must be None, a 1-D integer tensor or a sequence of ints, got {type(index).__name__}")
    if index.numel() and (index.min() < 0 or index.max() >= n):
        raise ValueError(
            f"index must hold clip indices in [0, {n}), got values in [{int(index.min())}, {int(index.max())}]"
        )
    if unique and index.unique().numel() != index.numel():
        raise ValueError("index must not repeat a clip when writing")
    return index


def _check_features(features: object, shape: tuple[int, ...] | None, what: str) -> torch.Tensor:
    check.tensor("features", features, ndim=None, dtypes=check.FLOAT_DTYPES)
    if shape is not None and tuple(features.shape) != shape:
        raise ValueError(f"features must have shape {shape} ({what}), got {tuple(features.shape)}")
    if shape is None and (features.dim() < 1 or features.shape[0] < 1):
        raise ValueError(f"features must be [N, ...] with N >= 1 ({what}), got shape {tuple(features.shape)}")
    return features


class _TensorStore:
    """Feature arrays as tensors on one device (RAM or a GPU), private to this process."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.arrays: dict[str, torch.Tensor] = {}

    def keys(self) -> list[str]:
        return sorted(self.arrays)

    def contains(self, key: str) -> bool:
        return key in self.arrays

    def shape(self, key: str) -> tuple[int, ...] | None:
        array = self.arrays.get(key)
        return None if array is None else tuple(array.shape)

    def init(self, key: str, features: torch.Tensor) -> None:
        self.arrays[key] = features.detach().to(self.device, self.dtype, copy=True).contiguous()

    def read(self, key: str, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return self.arrays[key][index.to(self.device)]

    def write(self, key: str, index: torch.Tensor, features: torch.Tensor, shape: tuple[int, ...]) -> None:
        self.arrays[key][index.to(self.device)] = features.detach().to(self.device, self.dtype)

    def flush(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# Key <-> file name of a directory memory: the key with "%", "/" and the ASCII control
# characters written as "%XX" (two uppercase hex digits), then ".npy". A file belongs to
# the memory only when its name is exactly that encoding of its decoded key.
_ESCAPED = frozenset("%/\x7f") | frozenset(map(chr, range(0x20)))
_ESCAPE_CODE = re.compile("%([0-9A-F]{2})")
_NPY = ".npy"
# Bytes of a file name kept for ".npy" and the longest helper suffix (".<pid>.<12 hex>.tmp").
_RESERVED_NAME_BYTES = 40


def _key_to_name(key: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in key)


def _name_to_key(stem: str) -> str | None:
    """The key stored under file name ``stem + ".npy"``, or None when the name is not a key's encoding."""
    key = _ESCAPE_CODE.sub(lambda m: chr(int(m.group(1), 16)), stem)
    return key if key and _key_to_name(key) == stem else None


def _npy_layout(path: Path) -> NpyLayout:
    """:func:`fastlocal._npy.npy_layout`, refusing a 0-d array (a memory array is ``[N, *F]``)."""
    layout = npy_layout(path)
    if not layout.shape:
        raise ValueError(f"{path} holds a 0-d array (a scalar); a memory array must be [N, *F]")
    return layout


# Undo journal of an in-place write: magic, u64 length of a JSON header (shape, dtype str,
# row count k), the k row indices (int64 LE), the k old rows, CRC32 of all that. An empty
# journal file means no write in progress.
_JOURNAL_MAGIC = b"FLJOURN1"


def _journal_bytes(shape: tuple[int, ...], dtype: np.dtype, index: np.ndarray, old: np.ndarray) -> bytes:
    meta = json.dumps({"shape": list(shape), "dtype": dtype.str, "rows": int(index.size)}).encode()
    body = b"".join([_JOURNAL_MAGIC, struct.pack("<Q", len(meta)), meta, index.astype("<i8").tobytes(), old.tobytes()])
    return body + struct.pack("<I", zlib.crc32(body))


def _parse_journal(data: bytes) -> tuple[tuple[int, ...], np.dtype, np.ndarray, np.ndarray] | None:
    """``(shape, dtype, index, old rows)`` of a complete journal, or None for a torn one."""
    head = len(_JOURNAL_MAGIC) + 8
    if len(data) < head + 4 or not data.startswith(_JOURNAL_MAGIC):
        return None
    if struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
        return None
    (meta_size,) = struct.unpack("<Q", data[len(_JOURNAL_MAGIC) : head])
    meta = json.loads(data[head : head + meta_size])
    shape, dtype, rows = tuple(meta["shape"]), np.dtype(meta["dtype"]), meta["rows"]
    start = head + meta_size
    index = np.frombuffer(data, "<i8", rows, start).astype(np.int64)
    old = np.frombuffer(data, dtype, rows * math.prod(shape[1:]), start + 8 * rows)
    return shape, dtype, index, old.reshape(rows, *shape[1:])


def _store_rows(array: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``array[index] = values`` (a function of its own, so tests can crash a writer in it)."""
    array[index] = values


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _FileStore:
    """One ``.npy`` file per video in a directory, read and written through ``numpy`` memory maps.

    Files: ``<name>.npy`` (the array), ``<name>.npy.lock`` (taken with ``fcntl.flock``,
    shared by readers, exclusive by writers) and ``<name>.npy.journal`` (the undo journal of
    the write in progress, empty otherwise); see :class:`LongMemory` for the name scheme
    and what a crash leaves.

    :meth:`init` writes the whole array to a temporary file, fsyncs it and renames it over
    the old one. :meth:`write` overwrites the rows in place, under the key's exclusive lock:
    it first saves the rows' old values to the journal, then writes the rows, then empties
    the journal. Whoever next takes the lock of a key whose journal is complete (a writer
    died between the two steps) writes the old rows back first, so every write is all or
    nothing; a torn journal means the rows were not touched yet and is discarded.
    """

    def __init__(self, root: Path, dtype: torch.dtype, durable: bool) -> None:
        if fcntl is None:
            raise ValueError("storage: a directory memory needs fcntl.flock (POSIX systems); use storage='ram'")
        if root.exists() and not root.is_dir():
            raise ValueError(f"storage must be a directory, but {root} is a file")
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.dtype, self.durable = root, dtype, durable
        self._written: set[str] = set()  # keys this process wrote since the last flush
        try:
            name_max = os.pathconf(root, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = 255
        self.max_key_bytes = name_max - _RESERVED_NAME_BYTES
        foreign = [n for n in self._npy_names() if self._key_of(n) is None]
        if foreign:
            warnings.warn(
                f"LongMemory({str(root)!r}): {len(foreign)} .npy file(s) are not keys of this memory and are "
                f"ignored, e.g. {sorted(foreign)[0]!r} (a key's file name is the key with '%', '/' and control "
                f"characters written as %XX, then '.npy', at most {self.max_key_bytes} bytes before '.npy')",
                UserWarning,
                stacklevel=3,
            )

    # ---- names ---------------------------------------------------------------------------
    def _npy_names(self) -> list[str]:
        with os.scandir(self.root) as entries:
            return [e.name for e in entries if e.name.endswith(_NPY)]

    def _key_of(self, name: str) -> str | None:
        stem = name[: -len(_NPY)]
        if len(os.fsencode(stem)) > self.max_key_bytes:
            return None
        return _name_to_key(stem)

    def path(self, key: str) -> Path:
        """``<root>/<encoded key>.npy``; ValueError for a key that cannot be a file name here."""
        name = _key_to_name(key)
        try:
            size = len(os.fsencode(name))
        except UnicodeEncodeError:
            raise ValueError(f"key {key!r} cannot be a file name (it holds a lone surrogate)") from None
        if size > self.max_key_bytes:
            raise ValueError(
                f"key is too long for a directory memory: {size} bytes as a file name, at most "
                f"{self.max_key_bytes} here (the file system's name limit minus {_RESERVED_NAME_BYTES}); "
                f"got key {key[:40]!r}... of {len(key)} characters. Use shorter keys (e.g. a hash of the video id)"
            )
        return self.root / (name + _NPY)

    def keys(self) -> list[str]:
        return sorted(key for key in map(self._key_of, self._npy_names()) if key is not None)

    def contains(self, key: str) -> bool:
        try:
            return os.path.lexists(self.path(key))
        except ValueError:
            return False

    # ---- reading the files ---------------------------------------------------------------
    def _layout(self, path: Path) -> NpyLayout:
        layout = _npy_layout(path)
        if layout.dtype != _NUMPY_DTYPES[self.dtype]:
            raise ValueError(f"{path} holds {layout.dtype} features but this memory has dtype {self.dtype}")
        return layout

    def _open(self, path: Path, mode: str, expected: tuple[int, ...] | None = None) -> np.memmap:
        layout = self._layout(path)
        if expected is not None and layout.shape != expected:
            raise ValueError(f"{path} changed shape from {expected} to {layout.shape} (another process called init)")
        return np.memmap(path, layout.dtype, mode, layout.offset, layout.shape, "F" if layout.fortran else "C")

    def shape(self, key: str) -> tuple[int, ...] | None:
        try:
            return self._layout(self.path(key)).shape
        except FileNotFoundError:
            return None

    # ---- locking and the journal ---------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, path: Path, exclusive: bool) -> Iterator[None]:
        """Hold ``path``'s lock (shared or exclusive), after rolling back a crashed writer's rows."""
        fd = self._lock_file(path, exclusive)
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if self._journal_pending(path):
                if fd is None:
                    raise ValueError(f"{path} has the journal of an interrupted write, but no lock file to "
                                     "roll it back (a read-only directory?)")
                if not exclusive:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # converts; not atomic, so look again
                if self._journal_pending(path):
                    self._roll_back(path)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _lock_file(self, path: Path, exclusive: bool) -> int | None:
        lock = path.with_name(path.name + ".lock")
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError:
            if exclusive:
                raise
        try:  # a read-only directory: lock an existing lock file, or nobody writes here
            return os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    @staticmethod
    def _journal(path: Path) -> Path:
        return path.with_name(path.name + ".journal")

    def _journal_pending(self, path: Path) -> bool:
        try:
            return self._journal(path).stat().st_size > 0
        except FileNotFoundError:
            return False

    def _roll_back(self, path: Path) -> None:
        """Write back the old rows saved by a writer that died mid-write, then empty the journal."""
        journal = self._journal(path)
        entry = _parse_journal(journal.read_bytes())
        if entry is not None:  # complete: the rows may be partly written
            shape, dtype, index, old = entry
            try:
                array = self._open(path, "r+")
            except (FileNotFoundError, ValueError) as exc:  # removed or replaced by hand: nothing to restore
                warnings.warn(f"{journal}: the array of the interrupted write cannot be rolled back ({exc}); "
                              "discarding the journal", UserWarning, stacklevel=2)
            else:
                if tuple(array.shape) == shape and array.dtype == dtype:
                    array[index] = old
                    array.flush()
                else:
                    warnings.warn(f"{journal} is for an array of shape {shape} {dtype}, but {path} holds "
                                  f"{tuple(array.shape)} {array.dtype}: not rolled back", UserWarning, stacklevel=2)
                del array
        with open(journal, "r+b") as f:  # a torn journal: its write never touched the array
            f.truncate(0)
            if self.durable:
                os.fsync(f.fileno())

    def _begin(self, path: Path, array: np.ndarray, index: np.ndarray, old: np.ndarray) -> int:
        """Save the rows' old values to the journal; return its open file descriptor."""
        journal = self._journal(path)
        created = not journal.exists()
        fd = os.open(journal, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            _write_all(fd, _journal_bytes(tuple(array.shape), array.dtype, index, old))
            if self.durable:
                os.fsync(fd)
                if created:
                    self._sync_directory()
        except BaseException:
            os.ftruncate(fd, 0)
            os.close(fd)
            raise
        return fd

    # ---- operations ------------------------------------------------------------------------
    def init(self, key: str, features: torch.Tensor) -> None:
        array = features.detach().to("cpu", self.dtype).contiguous().numpy()
        final = self.path(key)
        with self._locked(final, exclusive=True):
            if final.is_dir():
                raise ValueError(f"{final} is a directory, not a .npy array file")
            tmp = final.with_name(f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
            try:
                with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the name
                    np.save(f, array)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        self._written.add(key)

    def read(self, key: str, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        path = self.path(key)
        with self._locked(path, exclusive=False):
            array = self._open(path, "r", shape)
            return torch.from_numpy(np.ascontiguousarray(array[index.numpy()]))

    def write(self, key: str, index: torch.Tensor, features: torch.Tensor, shape: tuple[int, ...]) -> None:
        values = features.detach().to("cpu", self.dtype).contiguous().numpy()
        rows = index.numpy()
        path = self.path(key)
        with self._locked(path, exclusive=True):
            array = self._open(path, "r+", shape)
            fd = self._begin(path, array, rows, np.ascontiguousarray(array[rows]))
            try:
                try:
                    _store_rows(array, rows, values)
                    if self.durable:
                        array.flush()
                except BaseException:
                    del array
                    self._roll_back(path)
                    raise
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
        self._written.add(key)

    def _sync_directory(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def flush(self) -> None:
        """fsync the arrays and journals this process wrote since the last flush, and the directory."""
        for key in sorted(self._written):
            path = self.path(key)
            with self._locked(path, exclusive=True):
                for name in (path, self._journal(path)):
                    try:
                        fd = os.open(name, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        self._written.clear()
        self._sync_directory()


class LongMemory:
    """Long-term feature memory (TALLFormer): one ``[N, *F]`` feature array per video key.

    Storage:
        ``"ram"``: CPU tensors in this process. ``"cuda"`` / ``"cuda:<i>"``: tensors on
        that GPU. Any other non-empty ``str`` or a path: a directory of memory-mapped
        ``.npy`` files, one per video, created if missing and reopened as is, for datasets
        whose features do not fit in RAM (``"."`` for the current directory; ``""`` is refused).

    Directory layout:
        Key ``k`` is stored in ``<k with "%", "/" and ASCII control characters written as
        %XX>.npy`` (uppercase hex): ``"video/1"`` -> ``video%2F1.npy``, ``"A B"`` ->
        ``A B.npy``, ``"50%"`` -> ``50%25.npy``. A ``.npy`` file whose name is not exactly
        that encoding of a key (``50%.npy``, ``A%20B.npy``) is not a key: :meth:`keys` and
        ``in`` leave it out, and opening the memory warns about it. Keys are at most the file
        system's name limit minus 40 bytes once encoded (215 bytes with the usual 255); a
        longer key is refused (ValueError naming the key). Beside each array lie
        ``<name>.npy.lock`` and, once written, ``<name>.npy.journal`` (empty between writes).
        A ``.npy`` file that is empty, a directory, a 0-d array, pickled objects, or shorter
        than its header says raises ValueError naming the file when read.

    Processes:
        A directory memory is shared through the file system by ``DataLoader`` workers and
        ranks. Writes of one key are serialised by an exclusive ``fcntl.flock`` on its lock
        file and write their rows in place; reads hold the shared lock, so a read sees whole
        writes only, and concurrent writers of distinct (or the same) rows lose nothing.
        The file system must support ``flock`` across processes (local disks do; check
        network file systems). A RAM memory travels to ``DataLoader`` workers with the
        dataset and shows them what was written before they started; a CUDA memory is read
        in the main process only.

    Crashes:
        :meth:`write` saves the old values of its rows to the journal before overwriting
        them; the next access to the key after a writer died mid-write puts them back. So a
        process killed at any point (SIGKILL, out of memory) leaves every array whole, at
        its full size, holding each write entirely or not at all. :meth:`init` writes a
        temporary file and renames it over the array: a killed init leaves the old array
        (or no key) and a ``*.tmp`` file, which is ignored. After a power loss or OS crash,
        arrays and their headers are still whole (init fsyncs before its rename), but rows
        written since this process's last :meth:`flush` may hold old values, or, with
        ``durable=False``, a mix of old and new ones; with ``durable=True`` every write is
        all or nothing across power loss too, at two fsyncs per write.

    Distributed:
        Under ``torch.distributed`` (or with ``rank`` / ``world_size`` given) a directory
        memory is shared by the ranks and each rank writes only the videos it owns
        (:meth:`owns`: ``crc32(key) % world_size == rank``); :meth:`init` and
        :meth:`write` of another rank's video do nothing and return False. RAM and CUDA
        memories are private to their process, so every rank writes its own.

    Args:
        storage: ``"ram"``, ``"cuda"``, ``"cuda:<i>"``, or a directory (``str`` or path).
        dtype: storage dtype, ``torch.float32`` or ``torch.float16``; :meth:`read` returns it.
        rank, world_size: this process's rank and the number of ranks (both or neither;
            default: from ``torch.distributed`` when initialised, else 0 and 1).
        durable: directory storage only: fsync the journal and the rows on every write.
    """

    def __init__(
        self,
        storage: str | os.PathLike[str] = "ram",
        dtype: torch.dtype = torch.float32,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        durable: bool = False,
    ) -> None:
        if not isinstance(dtype, torch.dtype) or dtype not in MEMORY_DTYPES:
            raise TypeError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
        if (rank is None) != (world_size is None):
            raise ValueError(f"rank and world_size must be given together, got rank={rank}, world_size={world_size}")
        if world_size is not None:
            check.integer("world_size", world_size, minimum=1)
            check.integer("rank", rank, minimum=0)
            if rank >= world_size:
                raise ValueError(f"rank must be < world_size = {world_size}, got {rank}")
        if not isinstance(durable, bool):
            raise TypeError(f"durable must be a bool, got {type(durable).__name__}")
        self.dtype, self._rank, self._world_size = dtype, rank, world_size
        self._store: _TensorStore | _FileStore
        if isinstance(storage, (str, os.PathLike)) and not os.fspath(storage):
            raise ValueError("storage must be 'ram', 'cuda', 'cuda:<i>' or a directory path, got an empty path "
                             "(use '.' for the current directory)")
        if isinstance(storage, str) and storage == "ram":
            self._store = _TensorStore(torch.device("cpu"), dtype)
        elif isinstance(storage, str) and (storage == "cuda" or storage.startswith("cuda:")):
            if not torch.cuda.is_available():
                raise ValueError(f"storage={storage!r} needs a CUDA device, but torch.cuda.is_available() is False")
            self._store = _TensorStore(torch.device(storage), dtype)
        elif isinstance(storage, (str, os.PathLike)):
            self._store = _FileStore(Path(storage), dtype, durable)
        else:
            raise TypeError(
                f"storage must be 'ram', 'cuda', 'cuda:<i>' or a directory path, got {type(storage).__name__}"
            )
        if durable and not isinstance(self._store, _FileStore):
            raise ValueError(f"durable=True applies to directory storage only, got storage={self.storage!r}")

    @property
    def storage(self) -> str:
        """``"ram"``, ``"cuda:<i>"`` or the directory path."""
        if isinstance(self._store, _FileStore):
            return str(self._store.root)
        return "ram" if self._store.device.type == "cpu" else str(self._store.device)

    def __repr__(self) -> str:
        return f"LongMemory(storage={self.storage!r}, dtype={self.dtype})"

    def keys(self) -> list[str]:
        """Keys of the stored videos, sorted (a directory's: the files named as a key's encoding)."""
        return self._store.keys()

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is stored: ``key in memory`` exactly when ``key in memory.keys()``."""
        return isinstance(key, str) and bool(key) and self._store.contains(key)

    def shape(self, key: str) -> tuple[int, ...]:
        """``(N, *F)`` of the array stored for ``key``; ``KeyError`` when there is none."""
        shape = self._store.shape(_check_key(key))
        if shape is None:
            raise KeyError(f"LongMemory has no features for key {key!r} (call init first)")
        return shape

    def owns(self, key: str) -> bool:
        """Whether this rank writes ``key`` (always True for RAM and CUDA storage)."""
        _check_key(key)
        if not isinstance(self._store, _FileStore):
            return True
        rank, world_size = self._rank, self._world_size
        if world_size is None:
            dist = torch.distributed
            distributed = dist.is_available() and dist.is_initialized()
            rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % world_size == rank

    def init(self, key: str, features: torch.Tensor) -> bool:
        """Store ``features`` ``[N, *F]`` (copied, detached) as the whole array of ``key``.

        Replaces any array already stored for ``key``. Returns False (and stores nothing)
        when another rank owns ``key``.
        """
        _check_key(key)
        _check_features(features, None, "the whole array of the video")
        if not self.owns(key):
            return False
        self._store.init(key, features)
        return True

    def read(self, key: str, index: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Rows ``index`` (default: all) of ``key``'s array: ``[len(index), *F]`` in the storage
        dtype, on the storage device (CPU for RAM and directories). A copy: later writes do not
        change it."""
        shape = self.shape(key)
        return self._store.read(key, _check_index(index, shape[0], unique=False), shape)

    def write(self, key: str, index: torch.Tensor | Sequence[int] | None, features: torch.Tensor) -> bool:
        """Overwrite rows ``index`` (distinct; None = all) of ``key``'s array with ``features`` ``[len(index), *F]``
        (detached, converted to the storage dtype). Returns False (and writes nothing) when
        another rank owns ``key``. A directory memory writes the rows in place under the key's
        file lock, all or nothing (see the class docstring)."""
        shape = self.shape(key)
        index = _check_index(index, shape[0], unique=True)
        _check_features(features, (index.numel(), *shape[1:]), f"{index.numel()} rows of key {key!r}")
        if not self.owns(key):
            return False
        self._store.write(key, index, features, shape)
        return True

    def flush(self) -> None:
        """Make this process's completed writes durable: fsync a directory memory's arrays written
        since the last flush, their journals and the directory; synchronise a GPU.

        Every :meth:`write` is complete, visible to other processes and safe from the writer
        being killed when it returns; ``flush`` adds durability across a power loss.
        """
        self._store.flush()


# ----------------------------------------------------------------------------------------
# Module
# ----------------------------------------------------------------------------------------


class SelectiveEncoder(nn.Module):
    """Clip encoder trained through a sampled fraction of the clips (ETAD, or TALLFormer with a memory).

    Training mode, ``memory=None`` (ETAD): :func:`selective_encode`; every clip is encoded,
    only the sampled ones are back-propagated (re-encoded in backward).

    Training mode with a :class:`LongMemory` (TALLFormer): the sampled clips are encoded
    with autograd (``chunk_size`` per call), the others are read from the memory under
    ``key`` (not encoded), in temporal order; the fresh features of the sampled clips are
    written back, detached. A key the memory does not hold yet is initialised by encoding
    its un-sampled clips without autograd (the offline pass of TALLFormer, done lazily).

    Eval mode, or autograd off: every clip is encoded without autograd; the memory is
    neither read nor written.

    Args:
        encoder: module mapping clips ``[n, ...]`` to features ``[n, *F]``.
        ratio: sampled fraction in ``(0, 1]``.
        strategy: ``"random"``, ``"grid"`` or ``"block"`` (:func:`sample_indices`).
        chunk_size: clips per encoder call (default: all at once).
        memory: a :class:`LongMemory`, or None for ETAD mode.
        generator: CPU generator for the sampling (default: the global RNG).
    """

    def __init__(
        self,
        encoder: nn.Module,
        ratio: float,
        strategy: str = "random",
        chunk_size: int | None = None,
        memory: LongMemory | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.encoder = _check_encoder(encoder)
        self.ratio = check.real("ratio", ratio, low=0.0, high=1.0, low_open=True)
        self.strategy = check.choice("strategy", strategy, STRATEGIES)
        self.chunk_size = _check_chunk_size(chunk_size)
        if memory is not None and not isinstance(memory, LongMemory):
            raise TypeError(f"memory must be a LongMemory or None, got {type(memory).__name__}")
        self.memory = memory
        _check_generator(generator)
        self.generator = generator

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, strategy={self.strategy!r}, chunk_size={self.chunk_size}, memory={self.memory}"

    def forward(self, clips: torch.Tensor, key: str | None = None) -> torch.Tensor:
        """Features of every clip.

        Args:
            clips: ``[N, ...]`` clips of one video, in temporal order.
            key: the video's id in the memory (required with a memory; ignored without).
        Returns:
            ``[N, *F]`` features.
        """
        _check_clips(clips)
        if self.memory is not None:
            _check_key(key)
        if not self.training or not torch.is_grad_enabled():
            return _encode_all(self.encoder, clips, self.chunk_size)
        if self.memory is None:
            return selective_encode(
                self.encoder,
                clips,
                self.ratio,
                strategy=self.strategy,
                chunk_size=self.chunk_size,
                generator=self.generator,
            )
        return self._with_memory(clips, key)

    def _with_memory(self, clips: torch.Tensor, key: str) -> torch.Tensor:
        n = clips.shape[0]
        index = sample_indices(n, self.ratio, self.strategy, self.generator)
        rest = _complement(n, index)
        sampled = _encode_with_grad(self.encoder, clips[index.to(clips.device)], self.chunk_size)
        stored = key in self.memory
        if stored and self.memory.shape(key) != (n, *sampled.shape[1:]):
            raise ValueError(
                f"memory holds features of shape {self.memory.shape(key)} for key {key!r}, but the "
                f"encoder gives {(n, *sampled.shape[1:])} for these clips"
            )
        out = sampled.new_empty((n, *sampled.shape[1:]))
        if rest.numel():
            if stored:
                others = self.memory.read(key, rest).to(sampled.device, sampled.dtype)
            else:
                others = _encode_all(self.encoder, clips[rest.to(clips.device)], self.chunk_size)
                _check_like(sampled, others)
            out = out.index_copy(0, rest.to(out.device), others)
        out = out.index_copy(0, index.to(out.device), sampled)
        if stored:
            self.memory.write(key, index, sampled.detach())
        else:
            self.memory.init(key, out.detach())
        return out
