"""The ``dropkit`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """Bad options get one line on stderr and exit status 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    """``--seed``: an unsigned 64-bit integer, or a one-line usage error."""
    from dropkit._validation import check_uint64

    try:
        return check_uint64("seed", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer in [0, 2**64), got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``dropkit`` parser with its ``trace``, ``train``, ``sweep`` and ``bench`` subcommands."""
    from dropkit.bench import add_arguments as add_bench_arguments
    from dropkit.experiments.options import SweepOptions, TrainOptions, add_arguments  # light imports

    parser = _Parser(prog="dropkit", description="Dropout done right.")
    commands = parser.add_subparsers(dest="command")
    trace = commands.add_parser("trace", help="print dropout's forward and backward by hand")
    trace.add_argument("--seed", type=_seed, default=0, help="seed of the drawn mask (default 0)")
    train = commands.add_parser(
        "train", help="train the dropout MLP with and without dropout, then MC dropout"
    )
    add_arguments(train, TrainOptions)
    sweep = commands.add_parser("sweep", help="train the dropout MLP for several drop probabilities p")
    add_arguments(sweep, SweepOptions)
    bench = commands.add_parser("bench", help="time dropout against torch, NumPy and a pass over memory")
    add_bench_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dropkit`` on ``argv`` (default: the process arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from dropkit.experiments.run import main as train

        return train(args)
    if args.command == "sweep":
        from dropkit.experiments.sweep import main as sweep

        return sweep(args)
    if args.command == "bench":
        from dropkit.bench import main as bench

        return bench(args)
    from dropkit.trace import worked_trace  # "trace", and no command at all

    print(worked_trace(getattr(args, "seed", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
