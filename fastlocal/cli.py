"""Command-line entry point: ``python -m fastlocal {backends,smoke,bench}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._dispatch import available_backends
from .bench.run import CHOICES, OPS, run_bench


def _backends(_: argparse.Namespace) -> int:
    for name, status in available_backends().items():
        print(f"{name:10s} {status}")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from .smoke import run_smoke

    return run_smoke(seed=args.seed)


def _bench(args: argparse.Namespace) -> int:
    return run_bench(args.ops, quick=args.quick, device=args.device, out=args.out, tiny=args.tiny)


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
    bench = commands.add_parser(
        "bench", help="fastlocal against its peers: speed, peak memory, GFLOP/s; writes bench.json and plots"
    )
    bench.add_argument("--quick", action="store_true",
                       help="the smaller configurations of each suite, the slowest peers skipped "
                            "(about 2.5 minutes on 2 idle CPU cores)")
    bench.add_argument("--ops", nargs="+", choices=CHOICES, default=list(OPS),
                       help=f"ops to benchmark (default: {' '.join(OPS)}; opt-in whole-model steps: "
                            f"{' '.join(c for c in CHOICES if c not in OPS)})")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    bench.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="folder for bench.json and the plots (default: bench-results)")
    # Each suite's tiny configurations, one memory probe: the CLI's own smoke test (tests/test_bench_cli.py).
    bench.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    bench.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
