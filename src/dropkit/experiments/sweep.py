"""``dropkit sweep``: validation and test accuracy, loss and the generalization gap against ``p``.

The picture of Srivastava et al. (JMLR 2014), figure 9, at the scale of a laptop: for every seed,
one run per ``p`` in ``--ps`` (the same ``p`` after both hidden layers), all from that seed's initial
weights, batch order and split. Numbers are means ± sd over seeds; where ``p = 0`` is swept, each
``p`` also gets its paired difference to it, with the 95 % interval.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from typing import Any, TextIO

from dropkit.experiments.options import SweepOptions
from dropkit.experiments.protocol import (
    LAST_K,
    Config,
    Prepared,
    RunResult,
    print_table,
    run_seeds,
    without_nan,
)
from dropkit.experiments.report import describe_setup, run_command
from dropkit.experiments.stats import paired_difference, spread

__all__ = ["SWEPT", "main", "render", "run_sweep"]

SWEPT = ("last_val_acc", "final_val_acc", "last_val_loss", "acc_gap", "loss_gap", "test_acc", "test_loss")


def _key(p: float) -> str:
    return f"p={p:g}"


def run_sweep(
    prepared: Prepared, *, out: TextIO | None = None, progress: bool | None = None
) -> dict[int, dict[str, RunResult]]:
    """Train one run per ``p`` for every seed and print the table; returns ``results[seed][key]``."""
    out = sys.stdout if out is None else out
    options = prepared.options
    configs = [Config(_key(p), _key(p), p, p) for p in options.ps]
    for line in describe_setup(prepared, "dropkit sweep", f"the {len(configs)} runs of a seed"):
        print(line, file=out)

    def after_seed(seed, splits, runs, backends, seconds):
        cells = ", ".join(f"{key} {run.summary()['last_val_acc']:.4f}" for key, run in runs.items())
        return [f"seed {seed} ({seconds:.1f} s), val acc (mean of last {LAST_K} epochs): {cells}"]

    results = run_seeds(prepared, configs, out=out, progress=progress, after_seed=after_seed)
    summary = summarize(results, options.ps)
    n = len(options.seeds)
    print(
        f"\nacross {n} seed{'s' * (n > 1)}: mean ± sd; test evaluated once per run, "
        f"at its best validation epoch",
        file=out,
    )
    header = ["p", f"val acc (last {LAST_K})", "test acc", f"val loss (last {LAST_K})", "acc gap"]
    with_zero = 0.0 in options.ps
    if with_zero:
        header += ["Δ val acc vs p=0 [95% CI]", "better"]
    rows = []
    for p in options.ps:
        cells = summary["per_p"][_key(p)]
        row = [f"{p:g}"] + [
            _format(cells[m]) for m in ("last_val_acc", "test_acc", "last_val_loss", "acc_gap")
        ]
        if with_zero:
            d = cells["vs_p0"]["last_val_acc"]
            row += ["—" if p == 0 else _format_diff(d), "—" if p == 0 else f"{d['positive']}/{n}"]
        rows.append(row)
    print_table(out, header, rows)
    return results


def _format(values: dict[str, float]) -> str:
    return f"{values['mean']:.4f}" if values["n"] < 2 else f"{values['mean']:.4f} ± {values['sd']:.4f}"


def _format_diff(d: dict[str, Any]) -> str:
    if d["n"] < 2:
        return f"{d['mean']:+.4f}"
    return f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def summarize(results: dict[int, dict[str, RunResult]], ps: tuple[float, ...]) -> dict[str, Any]:
    """Per ``p``: mean ± sd over seeds of every swept metric and, if ``p = 0`` was swept, the paired
    difference to it."""
    per_p: dict[str, Any] = {}
    for p in ps:
        values = {m: [runs[_key(p)].summary()[m] for runs in results.values()] for m in SWEPT}
        cells: dict[str, Any] = {m: spread(values[m]).as_dict() for m in SWEPT}
        if 0.0 in ps:
            zero = {m: [runs[_key(0.0)].summary()[m] for runs in results.values()] for m in SWEPT}
            cells["vs_p0"] = {m: paired_difference(values[m], zero[m]).as_dict() for m in SWEPT}
        per_p[_key(p)] = cells
    return {"ps": list(ps), "last_k": LAST_K, "per_p": per_p}


def render(results: dict[int, dict[str, RunResult]], prepared: Prepared) -> dict[str, bytes]:
    """``sweep.png``, ``sweep.json`` (options, data, every run's epochs and summary, the per-p summary)
    and ``sweep.csv`` (one row per seed and p)."""
    from dropkit.experiments.plots import sweep_png

    options, data = prepared.options, prepared.data
    summary = summarize(results, options.ps)
    per_metric = {
        m: {p: (summary["per_p"][_key(p)][m]["mean"], summary["per_p"][_key(p)][m]["sd"]) for p in options.ps}
        for m in SWEPT
    }
    seeds = " ".join(map(str, options.seeds))
    title = (
        f"{data.name}: {options.train_size} train / {options.val_size} validation images, MLP "
        f"{options.hidden}-{options.hidden}, {options.epochs} epochs, SGD lr {options.lr:g}, seeds {seeds} "
        f"(mean ± sd)"
    )
    config = {k: v for k, v in vars(options).items() if k not in ("out", "data_dir", "threads")}
    document = {
        "config": {**config, "ps": list(options.ps), "seeds": list(options.seeds)},
        "data": {**data.describe(), "train_size": options.train_size, "val_size": options.val_size},
        "summary": summary,
        "seeds": {
            str(seed): {
                key: {"p": run.config.p1, "epochs": [m.as_dict() for m in run.history], **run.summary()}
                for key, run in runs.items()
            }
            for seed, runs in results.items()
        },
    }
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    names = list(next(iter(next(iter(results.values())).values())).summary())
    writer.writerow(["seed", "p", *names])
    for seed, runs in results.items():
        for run in runs.values():
            writer.writerow([seed, run.config.p1, *run.summary().values()])
    return {
        "sweep.png": sweep_png(options.ps, per_metric, title),
        "sweep.json": (json.dumps(without_nan(document), indent=2, allow_nan=False) + "\n").encode(),
        "sweep.csv": table.getvalue().encode(),
    }


def main(args: argparse.Namespace | SweepOptions) -> int:
    """Run ``dropkit sweep`` with parsed options; returns the exit status (2 for bad input)."""
    return run_command(
        "sweep",
        args,
        SweepOptions,
        lambda prepared: (run_sweep(prepared), prepared),
        lambda done: render(*done),
    )
