"""The ``dropkit`` command line: ``trace``, ``train`` and ``bench``.

It never shows a traceback for user error, interruption or a missing extra: a bad option is one line
and status 2 (pointing at the subcommand's ``--help``), a missing optional dependency is one line
naming the extra to install, found before any work starts, Ctrl-C is status 130 and
"interrupted; nothing written" (every file is written whole at the end, or not at all), and running
out of memory is one line and status 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import NoReturn

from dropkit import __version__
from dropkit._validation import one_line

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)
SUBCOMMANDS = ("trace", "train", "bench")


class _Parser(argparse.ArgumentParser):
    """Bad options get one line on stderr and exit status 2, without the usage block."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subcommands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but an unknown option is reported by the subcommand it was given to."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            owner = self.subcommands.get(getattr(parsed, "command", None) or "", self)
            owner.error(f"unrecognized arguments: {' '.join(map(repr, unknown))}")
        return parsed


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
    parser.add_argument("--version", action="version", version=f"dropkit {__version__}")
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
    parser.subcommands.update(trace=trace, train=train, bench=bench)
    return parser


def missing_extra(args: argparse.Namespace) -> str | None:
    """The one-line message for an optional dependency the command needs and cannot import, or None.

    ``dropkit train`` needs matplotlib (the plots) and tqdm (progress), scikit-learn for the bundled
    digits, and PyTorch for ``--backend torch``; ``trace`` and ``bench`` need only NumPy.
    """
    if args.command != "train":
        return None
    needed = {"matplotlib": "matplotlib", "tqdm": "tqdm"}
    if getattr(args, "dataset", "digits") == "digits":
        needed["sklearn"] = "scikit-learn"
    missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        listed = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        return f"dropkit train needs {listed}: pip install 'dropkit[train]'"
    if getattr(args, "backend", "numpy") == "torch" and importlib.util.find_spec("torch") is None:
        return "dropkit train --backend torch needs PyTorch: pip install 'dropkit[torch]'"
    return None


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    missing = missing_extra(args)
    if missing is not None:
        print(f"dropkit {args.command}: error: {missing}", file=sys.stderr)
        return 2
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


def main(argv: list[str] | None = None) -> int:
    """Run ``dropkit`` on ``argv`` (default: the process arguments); returns the exit status."""
    words = sys.argv[1:] if argv is None else argv
    command = f"dropkit {words[0]}" if words and words[0] in SUBCOMMANDS else "dropkit"
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print(f"{command}: interrupted; nothing written", file=sys.stderr)
        return INTERRUPTED
    except MemoryError as error:
        detail = f" ({one_line(str(error))})" if str(error) else ""
        print(f"{command}: error: out of memory{detail}; nothing written", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (dropkit trace | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's own flush at exit finds no closed pipe
        return 1


if __name__ == "__main__":
    sys.exit(main())
