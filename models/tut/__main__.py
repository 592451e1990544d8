"""``python -m fastlocal.models.tut train|eval --data DIR --preset salads50 --split 1 --out RUN_DIR``.

``train`` trains (resuming ``RUN_DIR/last.pt`` if present) and evaluates the test split;
``eval`` loads ``RUN_DIR/last.pt`` (or ``--weights FILE``, which may also be a state dict
of the released TUT code) and writes ``RUN_DIR/predictions/``, ``RUN_DIR/plots/`` and
``RUN_DIR/eval.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from fastlocal.data import DatasetError, MSTCNDataset

from .model import TUT, TUTConfig
from .train import CHECKPOINT, evaluate, fit, maybe_backend

PRESETS = ("salads50", "50salads", "gtea", "breakfast", "small")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastlocal.models.tut", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "eval"):
        p = commands.add_parser(name, help=f"{name} TUT on an MS-TCN-layout dataset")
        p.add_argument("--data", required=True, help="dataset directory (MS-TCN layout)")
        p.add_argument("--preset", default="salads50", choices=PRESETS, help="TUTConfig preset (paper Table 10)")
        p.add_argument("--split", type=int, default=1)
        p.add_argument("--out", required=True, help="run directory")
        p.add_argument("--device", default="cpu")
        p.add_argument("--backend", default=None, help="fastlocal backend (cpu, reference, cuda, triton)")
        p.add_argument("--sample-rate", type=int, default=None, help="override the preset's temporal subsampling")
        p.add_argument("--background", nargs="*", default=[], help="class names left out of F1 / edit")
        p.add_argument("--plots", type=int, default=3, help="PNG plots of this many test videos")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--length-mismatch", default="error", choices=("error", "truncate"))
        if name == "train":
            p.add_argument("--epochs", type=int, default=None)
            p.add_argument("--batch-size", type=int, default=None)
            p.add_argument("--lr", type=float, default=None)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--eval-every", type=int, default=1, help="test every N epochs (0: never)")
            p.add_argument("--no-resume", action="store_true", help="start over even if RUN_DIR/last.pt exists")
        else:
            p.add_argument("--weights", default=None, help=f"weights file (default RUN_DIR/{CHECKPOINT})")
    return parser


def _config(args: argparse.Namespace, train: MSTCNDataset) -> TUTConfig:
    overrides = {"input_dim": train.feature_dim(), "num_classes": train.num_classes}
    for key in ("epochs", "batch_size", "lr", "sample_rate"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return TUTConfig.preset(args.preset, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    try:
        probe = MSTCNDataset(args.data, args.split, "train", length_mismatch=args.length_mismatch)
        config = _config(args, probe)
        checkpoint = out / CHECKPOINT
        if checkpoint.is_file() and (args.command == "eval" or not args.no_resume):
            # a run keeps its config: resuming or evaluating uses the one it was trained with
            stored = TUTConfig.from_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["config"])
            config = stored.replace(epochs=config.epochs) if args.command == "train" else stored
        datasets = {subset: MSTCNDataset(args.data, args.split, subset, sample_rate=config.sample_rate,
                                         length_mismatch=args.length_mismatch) for subset in ("train", "test")}
        with maybe_backend(args.backend):
            if args.command == "train":
                model, _ = fit(config, datasets["train"], datasets["test"], out, seed=args.seed, device=args.device,
                               eval_every=args.eval_every, progress=not args.no_progress, resume=not args.no_resume,
                               background=args.background)
            else:
                weights = Path(args.weights) if args.weights else checkpoint
                if not weights.is_file():
                    raise FileNotFoundError(f"no weights to evaluate: {weights} (train first or pass --weights)")
                model = TUT(config).to(args.device)
                model.load_weights(weights)
            scores = evaluate(model, datasets["test"], out, device=args.device, background=args.background,
                              plots=args.plots, progress=not args.no_progress)
    except (DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (out / "eval.json").write_text(json.dumps({"split": args.split, **scores}, indent=2) + "\n")
    print(" ".join(f"{k}={v:.2f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
