"""The ``dropkit`` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropkit", description="Dropout done right.")
    commands = parser.add_subparsers(dest="command")
    trace = commands.add_parser("trace", help="print dropout's forward and backward by hand")
    trace.add_argument("--seed", type=int, default=0, help="seed of the drawn mask (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in (None, "trace"):
        from dropkit.trace import worked_trace

        print(worked_trace(getattr(args, "seed", 0)))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
