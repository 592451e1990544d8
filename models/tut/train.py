"""Training and evaluation of TUT on a dataset in the MS-TCN layout.

:func:`fit` trains with Adam (the config's lr, betas, weight decay) and halves the lr when
the epoch's training loss has not improved for ``config.lr_patience`` epochs
(``ReduceLROnPlateau(factor=0.5)``, as the released code), checkpoints to ``RUN/last.pt``
after every epoch (model, optimizer, scheduler, RNG states; resumed from automatically),
appends one JSON line per epoch to ``RUN/metrics.jsonl`` and evaluates the test split
every ``eval_every`` epochs. :func:`evaluate` writes predictions in the groundTruth format
(``RUN/predictions/<video>.txt``, full frame rate) and, when matplotlib is importable,
PNGs of predicted vs ground-truth segments (``RUN/plots/<video>.png``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastlocal.data import MSTCNDataset, Video, write_labels
from fastlocal.metrics import SegmentationMetrics

from .losses import compute_loss
from .model import TUT, TUTConfig

CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"


# ---- progress bars: tqdm when installed, else a plain one on stderr ---------------------------


class _PlainBar:
    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n, self.postfix = total, desc, 0, ""
        self.start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        width = 30
        done = int(width * self.n / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r{self.desc} [{'#' * done}{'.' * (width - done)}] {self.n}/{self.total} "
                         f"{elapsed:.0f}s {self.postfix}")
        sys.stderr.flush()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A progress bar with ``update``, ``set_postfix_str`` and ``close`` (None when disabled)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainBar(total, desc)
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


# ---- batches ---------------------------------------------------------------------------------


def collate(videos: Sequence[Video], device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Pad videos to one batch: ``features [B, T, D]`` (zeros), ``labels [B, T]`` (-100), ``lengths [B]``."""
    lengths = [v.labels.size for v in videos]
    T, D = max(lengths), videos[0].features.shape[1]
    features = torch.zeros(len(videos), T, D)
    labels = torch.full((len(videos), T), -100, dtype=torch.long)
    for i, v in enumerate(videos):
        features[i, : lengths[i]] = torch.from_numpy(v.features)
        labels[i, : lengths[i]] = torch.from_numpy(v.labels)
    return features.to(device), labels.to(device), torch.tensor(lengths, device=device)


def _batches(videos: list[Video], batch_size: int, order: np.ndarray) -> Iterator[list[Video]]:
    for start in range(0, len(order), batch_size):
        yield [videos[i] for i in order[start:start + batch_size]]


# ---- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: TUT, video: Video, device: torch.device | str = "cpu") -> np.ndarray:
    """Class indices ``[T]`` at the original frame rate from the last stage."""
    was_training = model.training
    model.eval()
    features = torch.from_numpy(video.features).unsqueeze(0).to(device)
    pred = model(features).logits[-1, 0].argmax(-1).cpu().numpy()
    model.train(was_training)
    return video.upsample(pred)


def plot_segments(path: str | os.PathLike, gt: np.ndarray, pred: np.ndarray, num_classes: int, title: str) -> bool:
    """PNG of ground-truth (top) and predicted (bottom) segment bars; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(12, 2.2), sharex=True)
    cmap = plt.get_cmap("tab20", max(num_classes, 2))
    for ax, labels, name in ((axes[0], gt, "ground truth"), (axes[1], pred, "prediction")):
        ax.imshow(labels[None, :], aspect="auto", cmap=cmap, vmin=0, vmax=max(num_classes - 1, 1),
                  interpolation="nearest")
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[0].set_title(title)
    axes[1].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def evaluate(
    model: TUT,
    dataset: MSTCNDataset,
    out: str | os.PathLike | None = None,
    *,
    device: torch.device | str = "cpu",
    background: Sequence[str] = (),
    plots: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """MS-TCN's metrics of ``model`` on ``dataset`` at the original frame rate.

    With ``out``: predictions to ``out/predictions/<video>.txt`` (one class name per frame) and
    up to ``plots`` PNGs to ``out/plots/``.
    """
    background_ids = [dataset.class_index[name] for name in background]
    metrics = SegmentationMetrics(background=background_ids)
    if out is not None:
        (Path(out) / "predictions").mkdir(parents=True, exist_ok=True)
        if plots:
            (Path(out) / "plots").mkdir(parents=True, exist_ok=True)
    bar = progress_bar(len(dataset), "eval", progress)
    for i, video in enumerate(dataset):
        pred = predict(model, video, device)
        metrics.update(pred, video.full_labels)
        if out is not None:
            write_labels(Path(out) / "predictions" / f"{video.name}.txt", pred, dataset.classes)
            if i < plots:
                plot_segments(Path(out) / "plots" / f"{video.name}.png", video.full_labels, pred,
                              dataset.num_classes, video.name)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return metrics.compute()


# ---- training --------------------------------------------------------------------------------


def fit(
    config: TUTConfig,
    train_set: MSTCNDataset | Sequence[Video],
    test_set: MSTCNDataset | None = None,
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    eval_every: int = 1,
    progress: bool = True,
    resume: bool = True,
    background: Sequence[str] = (),
    log: Callable[[str], None] | None = print,
) -> tuple[TUT, list[dict[str, Any]]]:
    """Train TUT for ``config.epochs`` epochs (continuing ``out/last.pt`` when ``resume``).

    Returns the model and the per-epoch records (also appended to ``out/metrics.jsonl``).
    The training videos are loaded once and kept in memory.
    """
    torch.manual_seed(seed)
    model = TUT(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.adam_betas,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                           patience=config.lr_patience)
    start_epoch, history = 0, []
    run = None if out is None else Path(out)
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        checkpoint = run / CHECKPOINT
        if resume and checkpoint.is_file():
            state = torch.load(checkpoint, map_location=device, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"]["torch"].cpu())
            start_epoch, history = state["epoch"], state["history"]
            if log:
                log(f"resumed from {checkpoint} after epoch {start_epoch}")
        elif not resume and (run / METRICS).exists():
            (run / METRICS).unlink()
        (run / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    videos = list(train_set)
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        order = np.random.default_rng(seed * 100003 + epoch).permutation(len(videos))
        totals = {"loss": 0.0, "ce": 0.0, "smooth": 0.0, "boundary": 0.0}
        correct = frames = 0
        bar = progress_bar(math.ceil(len(videos) / config.batch_size), f"epoch {epoch + 1}/{config.epochs}", progress)
        for batch in _batches(videos, config.batch_size, order):
            features, labels, lengths = collate(batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss, output = compute_loss(model, features, labels, lengths)
            loss.total.backward()
            optimizer.step()
            for name, value in zip(totals, loss, strict=True):
                totals[name] += float(value.detach())
            valid = labels != -100
            correct += int((output.logits[-1].argmax(-1)[valid] == labels[valid]).sum())
            frames += int(valid.sum())
            if bar is not None:
                bar.set_postfix_str(f"loss {float(loss.total):.3f}")
                bar.update()
        if bar is not None:
            bar.close()
        scheduler.step(totals["loss"])
        record: dict[str, Any] = {"epoch": epoch + 1, **{k: v / len(videos) for k, v in totals.items()},
                                  "train_acc": 100.0 * correct / max(frames, 1),
                                  "lr": optimizer.param_groups[0]["lr"]}
        if test_set is not None and eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == config.epochs):
            record.update({f"test_{k}": v for k, v in evaluate(model, test_set, device=device,
                                                               background=background).items()})
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if run is not None:
            with open(run / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()}, "epoch": epoch + 1,
                     "history": history, "config": config.to_dict()}
            tmp = run / (CHECKPOINT + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, run / CHECKPOINT)
        if log:
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    return model, history


@contextlib.contextmanager
def maybe_backend(name: str | None) -> Iterator[None]:
    """``fastlocal.use_backend(name)`` when a name is given."""
    if name is None:
        yield
        return
    import fastlocal

    with fastlocal.use_backend(name):
        yield
