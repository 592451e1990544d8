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

import os
import shutil
import uuid
import warnings
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import _validate as check

STRATEGIES = ("random", "grid", "block")
MEMORY_DTYPES = (torch.float32, torch.float16)
_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float16: np.dtype(np.float16)}

__all__ = ["STRATEGIES", "LongMemory", "SelectiveEncoder", "sample_indices", "selective_encode"]


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------


def sample_indices(
    n: int, ratio: float, strategy: str = "random", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``k = max(1, round(n * ratio))`` distinct clip indices out of ``n`` (k = 0 when n = 0).

    Args:
        n: number of clips (>= 0).
        ratio: sampled fraction in ``(0, 1]``; ``n * ratio`` is rounded half up.
        strategy: ``"random"`` uniform without replacement; ``"grid"`` a fixed stride
            ``n / k`` (~ ``1 / ratio``) from a random phase in ``[0, n / k)``, each position
            rounded down; ``"block"`` one contiguous run of k clips at a random offset.
        generator: CPU ``torch.Generator`` to draw from (default: the global RNG).
    Returns:
        ``[k]`` int64 CPU tensor, sorted ascending (temporal order). ``ratio = 1`` gives
        ``arange(n)`` for every strategy.
    """
    check.integer("n", n, minimum=0)
    ratio = check.real("ratio", ratio, low=0.0, high=1.0, low_open=True)
    check.choice("strategy", strategy, STRATEGIES)
    _check_generator(generator)
    k = _sample_count(n, ratio)
    if k == 0:
        return torch.empty(0, dtype=torch.long)
    if strategy == "random":
        return torch.randperm(n, generator=generator)[:k].sort().values
    if strategy == "grid":
        stride = n / k
        phase = torch.rand((), generator=generator, dtype=torch.float64).item() * stride
        return torch.floor(phase + stride * torch.arange(k, dtype=torch.float64)).long()
    start = int(torch.randint(n - k + 1, (), generator=generator))
    return torch.arange(start, start + k)


def _sample_count(n: int, ratio: float) -> int:
    return 0 if n == 0 else max(1, int(n * ratio + 0.5))


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

    def shape(self, key: str) -> tuple[int, ...] | None:
        array = self.arrays.get(key)
        return None if array is None else tuple(array.shape)

    def init(self, key: str, features: torch.Tensor) -> None:
        self.arrays[key] = features.detach().to(self.device, self.dtype, copy=True).contiguous()

    def read(self, key: str, index: torch.Tensor) -> torch.Tensor:
        return self.arrays[key][index.to(self.device)]

    def write(self, key: str, index: torch.Tensor, features: torch.Tensor) -> None:
        self.arrays[key][index.to(self.device)] = features.detach().to(self.device, self.dtype)

    def flush(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class _FileStore:
    """One ``.npy`` file per video in a directory, read through ``numpy`` memory maps.

    Every change is written to a temporary file in the same directory, fsynced and renamed
    over the old file (``os.replace`` is atomic): after a crash each file holds either the
    old or the new array, never a mix, and a reader (another process) that opened the old
    file keeps a consistent snapshot. A write therefore rewrites the whole file of its video
    (one video's features, a few MB). Leftover ``*.tmp`` files of a crashed writer are ignored.
    """

    SUFFIX = ".npy"

    def __init__(self, root: Path, dtype: torch.dtype) -> None:
        self.root, self.dtype = root, dtype
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / (quote(key, safe="") + self.SUFFIX)

    def keys(self) -> list[str]:
        return sorted(unquote(p.name[: -len(self.SUFFIX)]) for p in self.root.iterdir() if p.name.endswith(self.SUFFIX))

    def _open(self, path: Path, mode: str = "r") -> np.memmap:
        array = np.load(path, mmap_mode=mode)
        if array.dtype != _NUMPY_DTYPES[self.dtype]:
            raise ValueError(f"{path} holds {array.dtype} features but this memory has dtype {self.dtype}")
        return array

    def shape(self, key: str) -> tuple[int, ...] | None:
        try:
            return tuple(self._open(self.path(key)).shape)
        except FileNotFoundError:
            return None

    def _replace(self, key: str, fill: Callable[[Path], None]) -> None:
        """Build the new file under a temporary name with ``fill(tmp_path)``, fsync it, rename it."""
        final = self.path(key)
        tmp = final.with_name(f"{final.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
        try:
            fill(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def init(self, key: str, features: torch.Tensor) -> None:
        array = features.detach().to("cpu", self.dtype).contiguous().numpy()

        def fill(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the name
                np.save(f, array)

        self._replace(key, fill)

    def read(self, key: str, index: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._open(self.path(key))[index.numpy()]))

    def write(self, key: str, index: torch.Tensor, features: torch.Tensor) -> None:
        values = features.detach().to("cpu", self.dtype).contiguous().numpy()

        def fill(tmp: Path) -> None:
            shutil.copyfile(self.path(key), tmp)
            array = self._open(tmp, "r+")
            array[index.numpy()] = values
            array.flush()
            del array

        self._replace(key, fill)

    def flush(self) -> None:
        """fsync the directory, so that the renames of earlier writes survive a power loss."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LongMemory:
    """Long-term feature memory (TALLFormer): one ``[N, *F]`` feature array per video key.

    Storage:
        ``"ram"``: CPU tensors in this process. ``"cuda"`` / ``"cuda:<i>"``: tensors on
        that GPU. Any other ``str`` or a path: a directory of memory-mapped ``.npy`` files,
        one per video (``<quoted key>.npy``), created if missing and reopened as is, for
        datasets whose features do not fit in RAM. Files are replaced atomically on every
        change (see below), so a directory memory is safe to reopen after a crash.

    Processes:
        A directory memory is shared through the file system: ``DataLoader`` workers (and
        other ranks) read what the last completed write left, never a half-written file.
        A RAM memory travels to ``DataLoader`` workers with the dataset and shows them what
        was written before they started; a CUDA memory is read in the main process only.

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
    """

    def __init__(
        self,
        storage: str | os.PathLike[str] = "ram",
        dtype: torch.dtype = torch.float32,
        *,
        rank: int | None = None,
        world_size: int | None = None,
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
        self.dtype, self._rank, self._world_size = dtype, rank, world_size
        self._store: _TensorStore | _FileStore
        if isinstance(storage, str) and storage == "ram":
            self._store = _TensorStore(torch.device("cpu"), dtype)
        elif isinstance(storage, str) and (storage == "cuda" or storage.startswith("cuda:")):
            if not torch.cuda.is_available():
                raise ValueError(f"storage={storage!r} needs a CUDA device, but torch.cuda.is_available() is False")
            self._store = _TensorStore(torch.device(storage), dtype)
        elif isinstance(storage, (str, os.PathLike)):
            self._store = _FileStore(Path(storage), dtype)
        else:
            raise TypeError(
                f"storage must be 'ram', 'cuda', 'cuda:<i>' or a directory path, got {type(storage).__name__}"
            )

    @property
    def storage(self) -> str:
        """``"ram"``, ``"cuda:<i>"`` or the directory path."""
        if isinstance(self._store, _FileStore):
            return str(self._store.root)
        return "ram" if self._store.device.type == "cpu" else str(self._store.device)

    def __repr__(self) -> str:
        return f"LongMemory(storage={self.storage!r}, dtype={self.dtype})"

    def keys(self) -> list[str]:
        """Keys of the stored videos, sorted."""
        return self._store.keys()

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(key) and self._store.shape(key) is not None

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
        return zlib.crc32(key.encode()) % world_size == rank

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
        return self._store.read(key, _check_index(index, shape[0], unique=False))

    def write(self, key: str, index: torch.Tensor | Sequence[int] | None, features: torch.Tensor) -> bool:
        """Overwrite rows ``index`` (distinct; None = all) of ``key``'s array with ``features`` ``[len(index), *F]``
        (detached, converted to the storage dtype). Returns False (and writes nothing) when
        another rank owns ``key``."""
        shape = self.shape(key)
        index = _check_index(index, shape[0], unique=True)
        _check_features(features, (index.numel(), *shape[1:]), f"{index.numel()} rows of key {key!r}")
        if not self.owns(key):
            return False
        self._store.write(key, index, features)
        return True

    def flush(self) -> None:
        """Make completed writes durable: fsync a directory (its renames), synchronise a GPU.

        Every :meth:`write` of a directory memory is already complete and atomic when it
        returns; ``flush`` adds durability across a power loss.
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
