"""``dropkit bench``: dropout on the CPU against torch, textbook NumPy and a plain pass over memory.

The options and the command (:func:`add_arguments`, :func:`main`) are here; the methods and the
timing rules are :mod:`dropkit.bench.measure`'s. Nothing is imported at module level beyond NumPy,
so ``dropkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dropkit._validation import one_line
from dropkit.bench.measure import (
    DEFAULT_PS,
    DEFAULT_REPEATS,
    DEFAULT_SIZES,
    GOAL_SIZE,
    QUICK_REPEATS,
    QUICK_SIZES,
    BenchReport,
    Row,
    run_benchmarks,
)

__all__ = [
    "GOAL_SIZE",
    "BenchReport",
    "Row",
    "add_arguments",
    "first_call_latency",
    "main",
    "run_benchmarks",
]


_FIRST_CALL_SCRIPT = """
import time
begin = time.perf_counter()
import numpy as np
import dropkit
from dropkit.kernels import dropout_apply
imported = time.perf_counter()
x = np.ones(2**20, np.float32)
dropout_apply(x, 0.5, seed=0, stream=0, scale=2.0)
first = time.perf_counter()
dropout_apply(x, 0.5, seed=0, stream=1, scale=2.0)
second = time.perf_counter()
print(imported - begin, first - imported, second - first)
"""


def first_call_latency(runs: int = 3) -> dict[str, float]:
    """Seconds to ``import dropkit`` and for the first and second kernel call (2**20 float32
    elements), each the median over ``runs`` fresh Python processes.

    Call it after this process has run the kernel once, so numba's on-disk cache is warm.
    """
    samples = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", _FIRST_CALL_SCRIPT], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"the fresh process for the first-call latency failed: {last}")
        samples.append([float(v) for v in done.stdout.split()])
    names = ("import dropkit", "first call (2^20 elements)", "second call")
    return {
        name: statistics.median(column)
        for name, column in zip(names, zip(*samples, strict=True), strict=True)
    }


def _parse_size(text: str) -> int:
    """``"16777216"``, ``"2**24"`` or ``"2^24"``."""
    for power in ("**", "^"):
        if power in text:
            base, exponent = text.split(power, 1)
            if base.strip() == "2" and exponent.strip().isdigit() and int(exponent) <= 64:
                return 2 ** int(exponent)
    if text.strip().isdigit() and len(text.strip()) <= 20 and int(text) >= 1:  # 20 digits: past 2**64
        return int(text)
    raise argparse.ArgumentTypeError(
        f"sizes must be positive integers like 1048576, 2**20 or 2^20, got {text!r}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``dropkit bench`` (also used by ``benchmarks/cpu_dropout.py``)."""
    parser.add_argument(
        "--sizes",
        type=_parse_size,
        nargs="+",
        metavar="N",
        help="float32 element counts, e.g. 2**20 2**24 "
        "(default 2**12 2**20 2**24 2**26; --quick: 2**12 2**20 2**22)",
    )
    parser.add_argument(
        "--ps",
        type=float,
        nargs="+",
        metavar="P",
        default=list(DEFAULT_PS),
        help="drop probabilities (default 0.1 0.5)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help=f"timed runs after one warm-up (default {DEFAULT_REPEATS}; --quick: {QUICK_REPEATS})",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="numba and torch threads (default: all cores)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke run")
    parser.add_argument("--no-torch", dest="use_torch", action="store_false", help="skip the torch rows")
    parser.add_argument(
        "--no-first-call",
        dest="first_call",
        action="store_false",
        help="skip measuring the first call in fresh processes",
    )


def main(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed options describe, print the table, write the files asked for."""
    sizes = args.sizes if args.sizes is not None else QUICK_SIZES if args.quick else DEFAULT_SIZES
    repeats = args.repeats if args.repeats is not None else QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    try:
        for option, path in (("--json", args.json), ("--markdown", args.markdown)):
            if path is not None and (Path(path).is_dir() or not Path(path).absolute().parent.is_dir()):
                raise ValueError(f"{option}: {path!r} must be a file in an existing folder")
        if args.json is not None and args.json == args.markdown:
            raise ValueError(f"--json and --markdown must be different files, got {args.json!r} for both")
        report = run_benchmarks(
            sizes,
            args.ps,
            repeats=repeats,
            threads=args.threads,
            use_torch=args.use_torch,
            progress=lambda line: print(line, file=sys.stderr),
        )
    except (TypeError, ValueError) as error:
        print(f"dropkit bench: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dropkit bench: interrupted; nothing written", file=sys.stderr)
        return 130
    if args.first_call:
        try:
            report.first_call = first_call_latency(runs=1 if args.quick else 3)
        except RuntimeError as error:
            report.notes.append(f"first-call latency not measured: {error}")
    print(report.table())
    outputs = [(args.json, report.to_json()), (args.markdown, report.table(markdown=True))]
    try:
        _write_all([(Path(path), text + "\n") for path, text in outputs if path])
    except OSError as error:
        print(f"dropkit bench: error: cannot write the results: {one_line(str(error))}", file=sys.stderr)
        return 1
    return 0


def _write_all(files: Sequence[tuple[Path, str]]) -> None:
    """Write every file whole or none: each is staged beside its target, then renamed into place."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in files:
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            staged.append((temporary, path))
            temporary.write_text(text)
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            with contextlib.suppress(OSError):
                temporary.unlink()
