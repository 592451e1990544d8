"""``python -m fastlocal.models NAME train|eval|info --preset P ...``: one command line for every model.

``list``             the models and their presets.
``NAME info``        the preset's configs, the parameter count and the multiply-adds of one
                     sample, measured with ``torch.utils.flop_counter`` (fused attention included).
``NAME train``       trains with :func:`fastlocal.models.engine.fit` into ``--out RUN``; resumes
                     ``RUN/last.pt`` (with the configs it was trained with) unless ``--no-resume``.
``NAME eval``        evaluates ``RUN/last.pt`` (or ``--weights FILE``), writes ``RUN/eval.json``
                     and the model's predictions.
``NAME COMMAND``     a model's own command (``ModelSpec.extra_commands``, e.g. ``tallformer
                     init-memory``), with the configs ``train`` would use.

Every command runs unchanged under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from fastlocal.data import DatasetError

from . import engine
from .configs import from_dict, parse_assignment, replace, to_dict
from .registry import MODULES, ModelSpec, get_preset, get_spec, list_models
from .weights import read_state_dict

# command-line flag -> TrainConfig field
_TRAIN_FLAGS = {
    "epochs": int, "batch_size": int, "grad_accum": int, "lr": float, "clip_grad_norm": float, "eval_every": int,
    "checkpoint_every": int, "seed": int, "num_workers": int,
}


def _parser(spec: ModelSpec, prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=f"{spec.name}: {spec.summary}")
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"train": "train (resuming RUN/last.pt)", "eval": "evaluate RUN/last.pt or --weights",
             "info": "configs, parameter count and multiply-adds of one sample", **spec.extra_commands}
    for command, text in helps.items():
        p = commands.add_parser(command, help=text)
        p.add_argument("--preset", default=spec.default_preset, choices=sorted(spec.presets))
        p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a field of the architecture or training config (repeatable)")
        if command != "info":
            p.add_argument("--out", required=True, type=Path, help="run directory")
            p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
            p.add_argument("--backend", default=None, help="fastlocal backend (cpu, reference, cuda, triton)")
            p.add_argument("--amp", default=None, choices=("none", "bf16", "fp16"))
            p.add_argument("--no-progress", action="store_true")
        if command == "train":
            for flag, kind in _TRAIN_FLAGS.items():
                p.add_argument("--" + flag.replace("_", "-"), type=kind, default=None)
            p.add_argument("--no-resume", action="store_true", help="start over even if RUN/last.pt exists")
        if command == "eval":
            p.add_argument("--weights", type=Path, default=None,
                           help="weights file (default RUN/last.pt; a state dict or an engine checkpoint)")
        spec.cli.add_arguments(p, command)
    return parser


def _configs(spec: ModelSpec, args: argparse.Namespace) -> tuple[Any, Any]:
    """The preset's configs with the data, the flags and ``--set`` applied (in that order)."""
    preset = get_preset(spec.name, args.preset)
    model, train = spec.cli.configure(args, preset.model, preset.train)
    flags = {k: getattr(args, k) for k in (*_TRAIN_FLAGS, "backend", "amp") if getattr(args, k, None) is not None}
    train = replace(train, **flags)
    for assignment in args.set:
        name = assignment.split("=", 1)[0].strip()
        target_is_model = name in {f.name for f in dataclasses.fields(model)}
        if not target_is_model and name not in {f.name for f in dataclasses.fields(train)}:
            raise ValueError(f"--set {assignment}: unknown field {name!r} (neither {type(model).__name__} "
                             f"nor {type(train).__name__}; `info` lists the fields)")
        key, value = parse_assignment(model if target_is_model else train, assignment)
        if target_is_model:
            model = replace(model, **{key: value})
        else:
            train = replace(train, **{key: value})
    return model, train


def _stored(spec: ModelSpec, checkpoint: Path) -> tuple[Any, Any]:
    """The configs a run was trained with, from its checkpoint."""
    config = engine.load_checkpoint(checkpoint)["config"]
    if config.get("model") != spec.name:
        raise ValueError(f"{checkpoint} is a checkpoint of model {config.get('model')!r}, not {spec.name!r}")
    return from_dict(spec.config_class, config["model_config"]), from_dict(spec.train_class, config["train_config"])


def multiply_adds(model: torch.nn.Module, inputs: tuple[Any, ...]) -> tuple[int, dict[str, int]]:
    """Multiply-adds of ``model(*inputs)`` (FLOPs / 2 as ``FlopCounterMode`` counts them) and per op."""
    from torch.utils.flop_counter import FlopCounterMode

    import fastlocal.flop_formulas  # noqa: F401  (counts the fused attention ops)

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    per_op = {str(op): flops // 2 for op, flops in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() // 2, per_op


def info(spec: ModelSpec, args: argparse.Namespace) -> str:
    """What ``info`` prints."""
    model_config, train_config = _configs(spec, args)
    model = spec.build(model_config).eval()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    macs, per_op = multiply_adds(model, spec.example(model_config))
    preset = spec.presets[args.preset]
    lines = [f"{spec.name} / {args.preset}: {preset.description}", "", f"{type(model_config).__name__}:"]
    lines += [f"  {k} = {v}" for k, v in dataclasses.asdict(model_config).items()]
    lines += ["", f"{type(train_config).__name__}:"]
    lines += [f"  {k} = {v}" for k, v in dataclasses.asdict(train_config).items()]
    lines += ["", f"parameters: {params:,} ({trainable:,} trainable)",
              f"multiply-adds of one sample ({spec.example_note}): {macs:,} ({macs / 1e9:.3f} G)"]
    lines += [f"  {op}: {n:,}" for op, n in sorted(per_op.items(), key=lambda kv: -kv[1])]
    lines += list(spec.published(args.preset))
    return "\n".join(lines)


def _check_device(name: str) -> None:
    """Refuse a device this machine cannot use before any work (one line, not a traceback)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device (expected cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible (torch {torch.__version__}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda are supported")


def _run(spec: ModelSpec, args: argparse.Namespace) -> int:
    if args.command == "info":
        print(info(spec, args))
        return 0
    out: Path = args.out
    _check_device(args.device)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a run directory")
    checkpoint = out / engine.CHECKPOINT
    model_config, train_config = _configs(spec, args)
    resuming = checkpoint.is_file() and (args.command != "train" or not args.no_resume)
    if resuming:  # a run keeps its configs; train may extend its epochs
        model_config, train_config = _stored(spec, checkpoint)
        if args.command == "train" and args.epochs is not None:
            train_config = replace(train_config, epochs=args.epochs)
    if args.command in spec.extra_commands:  # a model's own command (e.g. init-memory), with the run's configs
        return spec.cli.run(args, model_config, train_config, args.command)
    run_info = {"model": spec.name, "preset": args.preset, "model_config": to_dict(model_config)}
    task = spec.cli.task(args, model_config, train_config, args.command)
    if args.command == "train":
        engine.fit(task, train_config, out, device=args.device, resume=not args.no_resume,
                   progress=not args.no_progress, run_info=run_info)
        return 0
    weights = args.weights or checkpoint
    if not weights.is_file():
        raise FileNotFoundError(f"no weights to evaluate: {weights} (train first or pass --weights)")
    model = task.build_model()
    if hasattr(model, "load_weights"):
        model.load_weights(weights)
    else:
        model.load_state_dict(read_state_dict(weights))
    with engine.distributed(args.device) as env:
        scores = engine.evaluate(task, model.to(env.device), out=out, config=train_config,
                                 progress=not args.no_progress, env=env)
    if env.is_main:
        record = {"model": spec.name, "weights": str(weights), **spec.cli.describe(args), **scores}
        (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
        print(" ".join(f"{k}={v:.2f}" for k, v in scores.items()))
    return 0


def main(argv: list[str] | None = None, model: str | None = None) -> int:
    """Entry point; ``model`` fixes the model name (``python -m fastlocal.models.<name>``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if model is None:
        if not argv or argv[0] in ("-h", "--help"):
            names = ",".join(MODULES)
            print(f"usage: python -m fastlocal.models {{list,{names}}} {{train,eval,info}} ...\n\n{__doc__}")
            return 0 if argv else 2
        if argv[0] == "list":
            for name, presets in list_models().items():
                print(f"{name:12s} {get_spec(name).summary}; presets: {', '.join(presets)}")
            return 0
        model, argv = argv[0], argv[1:]
    try:
        spec = get_spec(model)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prog = "python -m fastlocal.models " + model
    args = _parser(spec, prog).parse_args(argv)
    try:
        return _run(spec, args)
    except (DatasetError, ValueError, OSError) as exc:  # OSError: missing or unwritable files, named by the message
        print(f"error: {exc}", file=sys.stderr)
        return 2
