"""Command-line entry point: ``python -m fastlocal {backends,smoke}``."""

from __future__ import annotations

import argparse
import sys

from ._dispatch import available_backends


def _backends(_: argparse.Namespace) -> int:
    for name, status in available_backends().items():
        print(f"{name:10s} {status}")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from .smoke import run_smoke

    return run_smoke(seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlocal", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="list backends and why missing ones are missing").set_defaults(
        run=_backends
    )
    smoke = commands.add_parser(
        "smoke", help="run every op on every available backend at a small size and check it against the reference"
    )
    smoke.add_argument("--seed", type=int, default=0)
    smoke.set_defaults(run=_smoke)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
