"""Attention-dropout benchmark on the CPU: time and peak memory, dropkit against torch's two SDPA paths.

For ``B = 2, H = 8, E = 64``, ``L = S`` in ``lengths``, ``dropout_p = 0.1``, each dtype and each method:

- **dropkit**: ``dropkit.torch.functional.scaled_dot_product_attention`` (tiles, mask regenerated);
- **torch dropout (math)**: ``torch.nn.functional.scaled_dot_product_attention(..., dropout_p=0.1)``,
  which on CPU falls back to the math path that materializes the ``B·H·L·S`` probabilities and mask;
- **torch flash, no dropout**: the same call at ``dropout_p = 0``, torch's fused CPU flash kernel: the
  memory floor any attention pays.

The phases are the forward (with autograd recording, as in training) and forward+backward. Every
(method, length, dtype, phase) gets a fresh process for its *peak*: a warm-up at ``L = 64``, then one
call at full size, whose peak resident memory above the process's just before it (Linux ``VmHWM``, reset
through ``/proc/self/clear_refs``, after returning freed heap to the OS) is the peak. Times come from one
more process per (length, dtype, phase) that runs the three methods interleaved, ``repeats`` rounds in
rotated order after a warm-up call each, and takes medians: a shared machine's changing load then slows
every method alike. Every process uses the same number of torch and numba threads; the load average is
recorded beside each row.

Nothing heavy is imported at module level, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "goals", "main", "measure_peak", "measure_times", "run_benchmarks", "table"]

BATCH, HEADS, FEATURES, P = 2, 8, 64, 0.1
DEFAULT_LENGTHS = (512, 1024, 2048, 4096)
DEFAULT_DTYPES = ("float32", "bfloat16")
METHODS = ("dropkit", "torch dropout (math)", "torch flash, no dropout")
PHASES = ("forward", "forward+backward")
GOAL_LENGTH = 2048
WARM_UP_LENGTH = 64


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc's ``malloc_trim``), so the call's allocations show in RSS
    instead of reusing memory freed before it."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _call(method: str):
    """``f(q, k, v)`` of ``method``, imported in the worker only."""
    import torch

    if method == "dropkit":
        from dropkit.torch.functional import scaled_dot_product_attention

        return lambda q, k, v: scaled_dot_product_attention(q, k, v, dropout_p=P, seed=0)
    if method == "torch dropout (math)":
        return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=P)
    return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _inputs(length: int, dtype: str):
    import torch

    generator = torch.Generator().manual_seed(0)
    shape, kind = (BATCH, HEADS, length, FEATURES), getattr(torch, dtype)
    return [torch.randn(shape, generator=generator, dtype=kind).requires_grad_() for _ in range(3)]


def _step(attend, phase: str, q, k, v, grad) -> None:
    y = attend(q, k, v)
    if phase == "forward+backward":
        y.backward(grad)
        for x in (q, k, v):
            x.grad = None


def measure_peak(method: str, length: int, dtype: str, phase: str) -> dict[str, Any]:
    """``{"peak_mib": ...}``: the resident memory one call adds, in this (fresh) process."""
    import gc

    import torch

    attend = _call(method)
    small = _inputs(WARM_UP_LENGTH, dtype)
    _step(attend, phase, *small, torch.ones_like(small[0]))
    q, k, v = _inputs(length, dtype)
    grad = torch.ones_like(q)
    gc.collect()
    _release_free_heap()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set, to VmRSS
    base = _status_kib("VmRSS")
    _step(attend, phase, q, k, v, grad)
    return {"peak_mib": (_status_kib("VmHWM") - base) / 1024}


def measure_times(length: int, dtype: str, phase: str, repeats: int) -> dict[str, float]:
    """``{method: median ms}``, the methods interleaved round by round (each round in a rotated order), so
    a change of the machine's load touches all of them alike."""
    import torch

    calls = {method: _call(method) for method in METHODS}
    q, k, v = _inputs(length, dtype)
    grad = torch.ones_like(q)
    for attend in calls.values():  # warm-up at full size: first-touch page faults, kernel loading
        _step(attend, phase, q, k, v, grad)
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for round_ in range(repeats):
        for i in range(len(METHODS)):
            method = METHODS[(i + round_) % len(METHODS)]
            start = time.perf_counter()
            _step(calls[method], phase, q, k, v, grad)
            times[method].append((time.perf_counter() - start) * 1e3)
    return {method: statistics.median(values) for method, values in times.items()}


def _run_worker(kind: str, config: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """:func:`measure_peak` or :func:`measure_times` in a fresh interpreter; a timeout or a crash becomes
    ``{"note": ...}``; ``"load"`` is the 1-minute load average at its start or end, the higher."""
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "dropkit.bench.attention", "--worker", kind, json.dumps(config)]
    load = os.getloadavg()[0]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"note": f"over {timeout:g} s", "load": load}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"note": f"failed: {last[:120]}", "load": load}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load": max(load, os.getloadavg()[0])}


def run_benchmarks(
    lengths, dtypes, *, repeats: int, threads: int, timeout: float, progress=None
) -> list[dict[str, Any]]:
    """Every (length, dtype, phase): one process timing the methods, one process per method's peak."""
    rows = []
    for dtype in dtypes:
        for length in lengths:
            for phase in PHASES:
                where = {"length": length, "dtype": dtype, "phase": phase}
                times = _run_worker("time", {**where, "repeats": repeats}, threads, timeout)
                for method in METHODS:
                    peak = _run_worker("peak", {**where, "method": method}, threads, timeout)
                    row = {
                        **where, "method": method, "repeats": repeats, "threads": threads,
                        "ms": times.get(method), "peak_mib": peak.get("peak_mib"), "load": times["load"],
                        "note": times.get("note") or peak.get("note"),
                    }  # fmt: skip
                    rows.append(row)
                    if progress is not None:
                        progress(_line(row))
    return rows


def _line(row: dict[str, Any]) -> str:
    numbers = row["note"] or f"{row['ms']:.1f} ms, peak {row['peak_mib']:.0f} MiB"
    where = f"{row['dtype']} L={row['length']} {row['method']}, {row['phase']}"
    return f"{where}: {numbers} (load {row['load']:.1f})"


def _find(rows, method, length, dtype, phase):
    for row in rows:
        if (row["method"], row["length"], row["dtype"], row["phase"]) == (method, length, dtype, phase):
            return row
    return None


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 16's goals at ``L = 2048`` (and linear memory up to the longest length), per dtype."""
    found = []
    for dtype in sorted({row["dtype"] for row in rows}):
        phase = "forward+backward"
        ours = _find(rows, "dropkit", GOAL_LENGTH, dtype, phase)
        math_path = _find(rows, "torch dropout (math)", GOAL_LENGTH, dtype, phase)
        flash = _find(rows, "torch flash, no dropout", GOAL_LENGTH, dtype, phase)
        checks = []
        if ours and flash and ours["peak_mib"] and flash["peak_mib"]:
            checks.append(
                ("peak ≤ 1.5 × torch flash (no dropout)", ours["peak_mib"] / flash["peak_mib"], 1.5)
            )
        if ours and math_path and ours["peak_mib"] and math_path["peak_mib"]:
            checks.append(("peak ≤ ¼ × torch dropout (math)", ours["peak_mib"] / math_path["peak_mib"], 0.25))
        if ours and math_path and ours["ms"] and math_path["ms"]:
            checks.append(("time ≤ torch dropout (math)", ours["ms"] / math_path["ms"], 1.0))
        measured = sorted(
            (row["length"], row["peak_mib"])
            for row in rows
            if (row["method"], row["dtype"], row["phase"]) == ("dropkit", dtype, phase) and row["peak_mib"]
        )
        if len(measured) >= 2:  # the two longest: small lengths are dominated by fixed costs
            (l0, m0), (l1, m1) = measured[-2:]
            # Linear growth multiplies the peak by l1 / l0, quadratic by its square; the bar is halfway.
            checks.append((f"peak linear in L ({l0} → {l1}: ≤ (L ratio)^1.5)", m1 / m0, (l1 / l0) ** 1.5))
        for goal, value, bound in checks:
            found.append(
                {"dtype": dtype, "goal": goal, "measured": value, "bound": bound, "met": value <= bound}
            )
    return found


def table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The rows as a table: time and peak for each method and phase, with ratios to torch's math path."""
    header = ["dtype", "L", "method", "phase", "ms", "peak MiB", "time ÷ math", "peak ÷ math", "load", "note"]
    body = []
    for row in rows:
        math_row = _find(rows, "torch dropout (math)", row["length"], row["dtype"], row["phase"])

        def ratio(key, row=row, math_row=math_row):
            if not (math_row and row[key] and math_row[key]):
                return ""
            return f"{row[key] / math_row[key]:.2f}"

        peak = "" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        ms = "" if row["ms"] is None else f"{row['ms']:.1f}"
        load = f"{row['load']:.1f}"
        where = [row["dtype"], str(row["length"]), row["method"], row["phase"]]
        body.append([*where, ms, peak, ratio("ms"), ratio("peak_mib"), load, row["note"] or ""])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        lines += ["", "| goal | dtype | measured | bound | met |", "|---|---|---|---|---|"]
        for g in goals(rows):
            met = "met" if g["met"] else "missed"
            lines.append(f"| {g['goal']} | {g['dtype']} | {g['measured']:.2f} | {g['bound']:.2f} | {met} |")
        return "\n".join(lines)
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in [header, *body]]
    lines += [
        f"{'met' if g['met'] else 'MISSED'}: {g['dtype']} {g['goal']}: {g['measured']:.2f}"
        for g in goals(rows)
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (``benchmarks/attention.py``)."""
    parser.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), metavar="L")
    parser.add_argument(
        "--dtypes", nargs="+", default=list(DEFAULT_DTYPES), choices=["float32", "bfloat16", "float16"]
    )
    parser.add_argument(
        "--repeats", type=int, default=3, metavar="N", help="interleaved timing rounds (median)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch and numba threads (default 1)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, metavar="S", help="seconds per configuration")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and goals as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown")


def main(args: argparse.Namespace) -> int:
    """Run every configuration, print the table, write the files asked for."""
    from dropkit._validation import check_count

    try:
        for name in ("repeats", "threads"):
            check_count(f"--{name}", getattr(args, name))
        for length in args.lengths:
            check_count("--lengths", length)
    except ValueError as error:
        print(f"attention benchmark: error: {error}", file=sys.stderr)
        return 2
    try:
        rows = run_benchmarks(
            args.lengths, args.dtypes, repeats=args.repeats, threads=args.threads, timeout=args.timeout,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )  # fmt: skip
    except KeyboardInterrupt:
        print("attention benchmark: interrupted", file=sys.stderr)
        return 130
    print(table(rows))
    try:
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "goals": goals(rows)}, indent=2) + "\n")
        if args.markdown:
            Path(args.markdown).write_text(table(rows, markdown=True) + "\n")
    except OSError as error:
        print(f"attention benchmark: error: cannot write the results: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        measure = measure_peak if sys.argv[2] == "peak" else measure_times
        print(json.dumps(measure(**json.loads(sys.argv[3]))))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        add_arguments(parser)
        sys.exit(main(parser.parse_args()))
