"""The one training engine of :mod:`fastlocal.models`: every model trains and evaluates through it.

A model brings a :class:`Task` (its datasets, batching, loss, predictions and metrics) and a
training config (a subclass of :class:`TrainConfig`); :func:`fit` does the rest:

- optimizer (Adam, AdamW, SGD) and learning-rate schedule (constant, plateau on the training
  loss, cosine or step decay with linear warm-up) from the config;
- gradient accumulation (``grad_accum`` micro-batches per optimizer step) and clipping;
- ``torch.autocast`` (``amp="bf16"`` or ``"fp16"`` with a gradient scaler on CUDA, ``"bf16"``
  on CPU);
- evaluation every ``eval_every`` epochs, records gathered from every process;
- an atomic checkpoint ``RUN/last.pt`` after every epoch (and every ``checkpoint_every``
  optimizer steps): model, optimizer, scheduler, gradient scaler, every process's RNG states,
  position, history and configs; :func:`fit` resumes from it and ends bitwise where an
  uninterrupted run ends;
- ``RUN/metrics.jsonl`` (one line per epoch), ``RUN/config.json``, seeds, the fastlocal backend,
  ``tqdm`` progress bars.

Distributed. The same command runs under ``torchrun --nproc_per_node N`` (and multi-node):
the process group comes from torchrun's environment (NCCL on CUDA, gloo on CPU), the model is
wrapped in ``DistributedDataParallel``, and rank 0 alone writes checkpoints and logs.

Batches. ``batch_size`` is the number of samples per optimizer step over all processes and
accumulation steps, so a run's trajectory does not depend on how many processes share it.
Each epoch's order is a permutation seeded by ``(seed, epoch)``; every step's samples are
split evenly into ``world_size x grad_accum`` micro-batches and each micro-batch's loss (a
mean over its samples, which is what :meth:`Task.loss` returns) is weighted by its share of
the step's samples. With losses that are means over samples, two processes with half the
batch each therefore take the same steps as one process with the whole batch. A process
left without a sample for a micro-step (a short last batch) runs a duplicate with weight 0,
so every process joins every gradient all-reduce.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .configs import check_choice, check_positive_ints, to_dict

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "Distributed",
    "Task",
    "TrainConfig",
    "autocast",
    "backend_scope",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
    "step_plan",
]

CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
_FORMAT = "fastlocal.models.engine/1"


@dataclass
class TrainConfig:
    """Training hyper-parameters every model shares (a model's training config subclasses it).

    ``epochs``; ``batch_size`` samples per optimizer step over all processes and
    ``grad_accum`` accumulation steps; ``optimizer`` ("adam", "adamw", "sgd") with ``lr``,
    ``weight_decay``, ``betas`` (Adam) or ``momentum`` (SGD); ``scheduler``: "constant",
    "plateau" (multiply the lr by ``plateau_factor`` after ``plateau_patience`` epochs without
    a lower training loss, as ``ReduceLROnPlateau``), "cosine" (to ``min_lr``) or "step"
    (times ``gamma`` at each epoch in ``milestones``), both after ``warmup_epochs`` of linear
    warm-up and updated every optimizer step; ``clip_grad_norm`` (None: no clipping);
    ``amp``: "none", "bf16" or "fp16" (CUDA only); ``eval_every`` epochs (0: never; the last
    epoch is always evaluated); ``checkpoint_every`` optimizer steps (0: at epoch ends only);
    ``seed``; ``num_workers`` of the data loader; ``backend``: the fastlocal backend for the
    run (None: automatic).
    """

    epochs: int = 1
    batch_size: int = 1
    grad_accum: int = 1
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    scheduler: Literal["constant", "plateau", "cosine", "step"] = "constant"
    warmup_epochs: float = 0.0
    plateau_patience: int = 3
    plateau_factor: float = 0.5
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr: float = 0.0
    clip_grad_norm: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    eval_every: int = 1
    checkpoint_every: int = 0
    seed: int = 0
    num_workers: int = 0
    backend: str | None = None

    def __post_init__(self) -> None:
        check_positive_ints(self, ("epochs", "batch_size", "grad_accum", "plateau_patience"))
        check_positive_ints(self, ("eval_every", "checkpoint_every", "seed", "num_workers"), minimum=0)
        check_choice(self, "optimizer", ("adam", "adamw", "sgd"))
        check_choice(self, "scheduler", ("constant", "plateau", "cosine", "step"))
        check_choice(self, "amp", ("none", "bf16", "fp16"))
        self.betas = tuple(float(b) for b in self.betas)
        self.milestones = tuple(int(m) for m in self.milestones)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"{type(self).__name__}.betas must be two floats in [0, 1), got {self.betas!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "min_lr", "momentum"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{type(self).__name__}.{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"{type(self).__name__}.lr must be > 0, got {self.lr!r}")
        if not 0.0 < self.plateau_factor < 1.0 or not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"{type(self).__name__}: plateau_factor must be in (0, 1) and gamma in (0, 1], "
                             f"got {self.plateau_factor!r} and {self.gamma!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"{type(self).__name__}.clip_grad_norm must be > 0 or None, got {self.clip_grad_norm!r}")
        from fastlocal._dispatch import BACKENDS

        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"{type(self).__name__}.backend must be one of {BACKENDS} or None, got {self.backend!r}")


class Task:
    """What the engine needs from a model; each model folder has one subclass (its ``data.py``).

    Datasets are map-style (``len`` and integer indexing) so that every process can take its
    share. ``loss`` returns a scalar that is a *mean over the batch's samples* (the engine
    weights micro-batches by their sample counts) and a dict of floats to log (also means).
    ``predict`` returns one JSON-able or picklable record per sample; ``score`` turns the
    records of the whole evaluation set (gathered from every process, in dataset order)
    into metrics; ``write`` saves predictions under a run folder (rank 0 only).
    """

    #: DDP's ``find_unused_parameters``: True when some parameters get no gradient in a step.
    find_unused_parameters: bool = False
    #: samples per evaluation batch
    eval_batch_size: int = 1

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def train_set(self) -> Sequence[Any]:
        raise NotImplementedError

    def eval_set(self) -> Sequence[Any] | None:
        return None

    def collate(self, items: list[Any]) -> Any:
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]] | None:
        """Optimizer parameter groups, each a dict with ``params`` and optionally ``lr_scale``
        (its lr is ``lr * lr_scale``; e.g. a backbone trained 1000x slower than the head) and
        ``weight_decay``. None (the default): one group of every trainable parameter."""
        return None

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def predict(self, model: nn.Module, batch: Any) -> list[Any]:
        raise NotImplementedError

    def score(self, records: list[Any]) -> dict[str, float]:
        raise NotImplementedError

    def write(self, records: list[Any], out: Path) -> None:
        """Save predictions under ``out`` (default: nothing)."""


# ---- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size`` and its ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (float64)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def distributed(device: str | torch.device = "cpu") -> Iterator[Distributed]:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else run alone.

    Under torchrun a CUDA run takes ``cuda:LOCAL_RANK`` and NCCL; a CPU run gloo. A group
    that already exists (a test or a notebook started it) is used and left running.
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    if dist.is_initialized():
        yield Distributed(dist.get_rank(), dist.get_world_size(), device)
    else:
        yield Distributed(0, 1, device)
    if created:
        dist.destroy_process_group()


# ---- batches -----------------------------------------------------------------------------------


def step_plan(
    n: int, epoch: int, config: TrainConfig, world_size: int = 1, rank: int = 0
) -> list[list[tuple[list[int], float]]]:
    """This process's micro-batches for every optimizer step of ``epoch``: ``(indices, weight)``.

    The epoch's order is a permutation of ``range(n)`` seeded by ``(config.seed, epoch)``;
    each global batch is split evenly into ``world_size x grad_accum`` parts (rank r takes
    part ``m * world_size + r`` at micro-step m), weighted ``len(part) * world_size / len(batch)``
    (DDP averages gradients over processes). A part left empty gets a duplicate of the batch's
    first sample with weight 0; micro-steps empty on every process are dropped.
    """
    if n < 1:
        raise ValueError("the training set is empty")
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    parts_per_step = world_size * config.grad_accum
    steps = []
    for start in range(0, n, config.batch_size):
        batch = order[start:start + config.batch_size]
        parts = [p.tolist() for p in np.array_split(np.asarray(batch), parts_per_step)]
        micro = []
        for m in range(config.grad_accum):
            group = parts[m * world_size:(m + 1) * world_size]
            if not any(group):
                continue
            mine = group[rank]
            micro.append((mine, len(mine) * world_size / len(batch)) if mine else ([batch[0]], 0.0))
        steps.append(micro)
    return steps


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_device(b, device) for b in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _loader(
    task: Task, dataset: Sequence[Any], batches: list[list[int]], config: TrainConfig, seed: int
) -> Iterator[Any]:
    # A generator of its own: a DataLoader draws its workers' base seed from the global RNG otherwise,
    # and a run resumed mid-epoch (a new loader) would shift every later dropout mask.
    generator = torch.Generator().manual_seed(seed)
    return iter(torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=task.collate,
                                            num_workers=config.num_workers, generator=generator))


# ---- optimizer, schedule, precision ------------------------------------------------------------


def _optimizer(model: nn.Module, config: TrainConfig, groups: list[dict[str, Any]] | None) -> torch.optim.Optimizer:
    if groups is None:
        groups = [{"params": list(model.parameters())}]
    params = []
    for group in groups:
        group = dict(group)
        group["params"] = [p for p in group["params"] if p.requires_grad]
        group["lr"] = config.lr * group.pop("lr_scale", 1.0)
        params.append(group)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def _lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The lr multiplier after ``step`` optimizer steps (cosine and step schedules)."""

    def factor(step: int) -> float:
        epoch = step / steps_per_epoch
        if epoch < config.warmup_epochs:
            return (step + 1) / max(config.warmup_epochs * steps_per_epoch, 1)
        if config.scheduler == "step":
            return config.gamma ** sum(epoch >= m for m in config.milestones)
        span = max(config.epochs - config.warmup_epochs, 1e-12)
        progress = min((epoch - config.warmup_epochs) / span, 1.0)
        floor = config.min_lr / config.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Any:
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                          patience=config.plateau_patience)
    if config.scheduler in ("cosine", "step"):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, steps_per_epoch))
    return None


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``config.amp`` on ``device`` (a null context for "none")."""
    if config.amp == "none":
        return contextlib.nullcontext()
    if config.amp == "fp16" and device.type != "cuda":
        raise ValueError("TrainConfig.amp='fp16' needs a CUDA device; use amp='bf16' on CPU")
    return torch.autocast(device.type, dtype=torch.float16 if config.amp == "fp16" else torch.bfloat16)


@contextlib.contextmanager
def backend_scope(name: str | None) -> Iterator[None]:
    """``fastlocal.use_backend(name)``, or nothing when ``name`` is None (automatic)."""
    if name is None:
        yield
        return
    import fastlocal

    with fastlocal.use_backend(name):
        yield


# ---- RNG and checkpoints -----------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (what :func:`fit` does first)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    # numpy's key array travels as a tensor so that checkpoints load with weights_only=True
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss,
                                                        gauss), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a temporary file beside ``path``, flushed to disk, then renamed,
    so a run killed while saving leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint of :func:`fit` (with ``weights_only=True``: a file cannot run code)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError...: name the file
        raise ValueError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a checkpoint of fastlocal.models.engine (format {_FORMAT})")
    return state


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    task: Task,
    model: nn.Module,
    dataset: Sequence[Any] | None = None,
    *,
    out: str | os.PathLike | None = None,
    config: TrainConfig | None = None,
    progress: bool = False,
    env: Distributed | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``dataset`` (default: the task's evaluation set).

    Each process predicts its share (every ``world_size``-th sample); the records are
    gathered in dataset order and scored on every process. With ``out``, rank 0 also calls
    :meth:`Task.write`.
    """
    config = config or TrainConfig()
    env = env or Distributed(0, 1, next(model.parameters()).device)
    dataset = task.eval_set() if dataset is None else dataset
    if dataset is None or len(dataset) == 0:
        raise ValueError("nothing to evaluate: the task has no evaluation set")
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    mine = list(range(env.rank, len(dataset), env.world_size))
    batches = [mine[i:i + task.eval_batch_size] for i in range(0, len(mine), task.eval_batch_size)]
    records: list[tuple[int, Any]] = []
    bar = tqdm(total=len(batches), desc="eval", leave=False, dynamic_ncols=True,
               disable=not (progress and env.is_main))
    with backend_scope(config.backend), autocast(config, env.device):
        for indices, batch in zip(batches, _loader(task, dataset, batches, config, env.rank), strict=True):
            predictions = task.predict(net, _to_device(batch, env.device))
            records.extend(zip(indices, predictions, strict=True))
            bar.update()
    bar.close()
    net.train(was_training)
    ordered = [r for _, r in sorted((pair for part in env.gather(records) for pair in part), key=lambda p: p[0])]
    if out is not None and env.is_main:
        Path(out).mkdir(parents=True, exist_ok=True)
        task.write(ordered, Path(out))
    # plain Python numbers: NumPy scalars in the history would make last.pt unreadable with weights_only
    return {name: _plain_number(name, value) for name, value in task.score(ordered).items()}


def _plain_number(name: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"Task.score must return numbers, got {name}={value!r}")
    return int(value) if isinstance(value, int | np.integer) else float(value)


# ---- training ----------------------------------------------------------------------------------


def fit(
    task: Task,
    config: TrainConfig,
    out: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    run_info: dict[str, Any] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train ``task``'s model for ``config.epochs`` epochs; returns the model and per-epoch records.

    With ``out``, the run folder holds ``config.json`` (``run_info`` plus the training
    config), ``metrics.jsonl`` and the checkpoint ``last.pt``, which a later call resumes
    (``resume=False`` starts over and clears the old metrics). Under torchrun every process
    calls :func:`fit`; the returned model is the unwrapped module.
    """
    with distributed(device) as env:
        return _fit(task, config, None if out is None else Path(out), env, resume, progress, log, run_info or {})


def _fit(
    task: Task, config: TrainConfig, run: Path | None, env: Distributed, resume: bool, progress: bool,
    log: Callable[[str], None] | None, run_info: dict[str, Any],
) -> tuple[nn.Module, list[dict[str, Any]]]:
    say = log if (log is not None and env.is_main) else None
    seed_everything(config.seed)
    net = task.build_model().to(env.device)
    train_set = task.train_set()
    eval_set = task.eval_set() if config.eval_every else None
    steps_per_epoch = len(step_plan(len(train_set), 0, config, env.world_size, env.rank))
    optimizer = _optimizer(net, config, task.param_groups(net))
    scheduler = _scheduler(optimizer, config, steps_per_epoch)
    autocast(config, env.device)  # reject fp16 on CPU before any work
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    epoch, step_in_epoch, history = 0, 0, []
    log_names: list[str] = []
    carried: list[float] | None = None  # log sums of a partly done epoch, from the checkpoint

    checkpoint = None if run is None else run / CHECKPOINT
    if run is not None and env.is_main:
        run.mkdir(parents=True, exist_ok=True)
        if not resume:
            for name in (METRICS, CHECKPOINT):
                (run / name).unlink(missing_ok=True)
    env.barrier()
    if checkpoint is not None and resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        epoch, step_in_epoch, history = state["epoch"], state["step"], state["history"]
        log_names = state["log_names"]
        if step_in_epoch:
            carried = state["partial"] if env.is_main else [0.0] * len(state["partial"])
        if state["world_size"] == env.world_size:
            _set_rng_state(state["rng"][env.rank])
        elif say:
            say(f"warning: {checkpoint} was written by {state['world_size']} processes, this run has "
                f"{env.world_size}: random streams restart (data order is unaffected)")
        if say:
            where = f"epoch {epoch}" if step_in_epoch == 0 else f"step {step_in_epoch} of epoch {epoch + 1}"
            say(f"resumed from {checkpoint} after {where}")
    if run is not None and env.is_main:
        (run / CONFIG).write_text(json.dumps({**run_info, "train_config": to_dict(config)}, indent=2) + "\n")

    if env.rank:
        seed_everything(config.seed + 1_000_003 * env.rank)  # own dropout and augmentation streams
    model = net
    if env.active:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[env.device.index] if env.device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters)

    def snapshot(next_epoch: int, next_step: int, partial: list[float]) -> None:
        rngs = env.gather(_rng_state())
        if env.is_main and checkpoint is not None:
            save_checkpoint(checkpoint, {
                "format": _FORMAT, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(), "rng": rngs, "epoch": next_epoch,
                "step": next_step, "history": history, "log_names": log_names, "partial": partial,
                "world_size": env.world_size, "config": {**run_info, "train_config": to_dict(config)}})
        env.barrier()

    with backend_scope(config.backend):
        while epoch < config.epochs:
            started = time.perf_counter()
            net.train()
            plan = step_plan(len(train_set), epoch, config, env.world_size, env.rank)
            micro = [m for step in plan[step_in_epoch:] for m in step]
            batches = _loader(task, train_set, [indices for indices, _ in micro], config,
                              ((config.seed * 1_000_003 + epoch) * 1_000_003 + step_in_epoch) * 1009 + env.rank)
            sums = list(carried) if carried else [0.0] * (1 + len(log_names))  # [samples, *log sums]
            bar = tqdm(total=len(plan), initial=step_in_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                       leave=False, dynamic_ncols=True, disable=not (progress and env.is_main))
            for s in range(step_in_epoch, len(plan)):
                optimizer.zero_grad(set_to_none=True)
                for m, (indices, weight) in enumerate(plan[s]):
                    batch = _to_device(next(batches), env.device)
                    last = m == len(plan[s]) - 1
                    sync = contextlib.nullcontext() if last or not env.active else model.no_sync()
                    with sync:
                        with autocast(config, env.device):
                            loss, logs = task.loss(model, batch)
                        scaled = loss.float() * weight
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    if not log_names:  # the same names on every process: weight-0 batches count too
                        log_names = ["loss", *logs]
                        sums += [0.0] * len(log_names)
                    if weight > 0:
                        n = len(indices)
                        values = [float(loss.detach()), *(float(logs[k]) for k in log_names[1:])]
                        sums[0] += n
                        for i, v in enumerate(values, 1):
                            sums[i] += n * v
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if config.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(net.parameters(), config.clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                    scheduler.step()
                bar.update()
                if len(sums) > 1:
                    bar.set_postfix_str(f"loss {sums[1] / max(sums[0], 1):.4g}")
                done = s + 1
                if config.checkpoint_every and done < len(plan) and done % config.checkpoint_every == 0:
                    snapshot(epoch, done, env.sum(sums))
            bar.close()
            totals = env.sum(sums)
            record: dict[str, Any] = {"epoch": epoch + 1}
            record.update({k: totals[i + 1] / max(totals[0], 1) for i, k in enumerate(log_names)})
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(record.get("loss", 0.0))
            record["lr"] = optimizer.param_groups[0]["lr"]
            last_epoch = epoch + 1 == config.epochs
            if eval_set is not None and ((epoch + 1) % config.eval_every == 0 or last_epoch):
                scores = evaluate(task, net, eval_set, config=config, progress=progress, env=env)
                record.update({f"eval_{k}": v for k, v in scores.items()})
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            epoch, step_in_epoch, carried = epoch + 1, 0, None
            if run is not None and env.is_main:
                with open(run / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
            snapshot(epoch, 0, [0.0] * (len(log_names) + 1))
            if say:
                say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    return net, history
