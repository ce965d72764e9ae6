"""``dropkit train``: the dropout MLP trained with and without dropout, for several seeds, compared honestly.

The experiment of Srivastava et al. (JMLR 2014) at the scale of a laptop. For each seed the same MLP,
from the same initial weights and with the same batch order, is trained once with dropout
``(p1, p2)`` and once with ``p = 0``, on the same train / validation split; the report gives every
seed's numbers, their mean ± sd, and the paired difference (dropout - no dropout) with its 95 %
interval, so the noise between seeds stands next to the effect. The test set is evaluated once
per run, at its best validation epoch, and MC dropout (Gal & Ghahramani, ICML 2016) runs on it.

:func:`run_experiment` trains and prints; :func:`render` turns the result into the files' bytes;
:func:`main` is the command line's entry. The protocol itself is :mod:`~dropkit.experiments.protocol`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import numpy as np

from dropkit.experiments.datasets import Splits
from dropkit.experiments.options import TrainOptions
from dropkit.experiments.protocol import (
    LAST_K,
    Config,
    Prepared,
    RunResult,
    print_table,
    run_seeds,
    table_lines,
    without_nan,
)
from dropkit.experiments.report import (
    COMPARED,
    calibration_summary,
    describe_setup,
    pool_bins,
    run_command,
    verdicts,
)
from dropkit.experiments.sources import IDX_FILES, locate
from dropkit.experiments.stats import paired_difference, spread
from dropkit.experiments.training import Backend, predict_logits
from dropkit.mc import ECE_BINS, Calibration, ReliabilityBins, mc_predictive_mean, reliability_bins, summarize
from dropkit.nn import softmax

__all__ = ["Experiment", "main", "render", "run_experiment", "train_configs"]

CALIBRATION_LABELS = {
    "no_dropout_deterministic": "no dropout, deterministic",
    "dropout_deterministic": "dropout, deterministic",
    "dropout_mc": "dropout, MC mean of K={k}",
}


def train_configs(options: TrainOptions) -> tuple[Config, Config]:
    """The two runs of every seed: with dropout ``(p1, p2)``, then without."""
    return (
        Config("dropout", f"dropout p1={options.p1:g} p2={options.p2:g}", options.p1, options.p2),
        Config("no_dropout", "no dropout (p = 0)", 0.0, 0.0),
    )


@dataclass(frozen=True)
class Experiment:
    """Everything ``dropkit train`` measured; ``metrics`` is what ``metrics.json`` holds."""

    prepared: Prepared
    results: dict[int, dict[str, RunResult]]
    calibration: dict[int, dict[str, tuple[ReliabilityBins, Calibration]]] = field(default_factory=dict)

    def values(self, key: str, metric: str) -> list[float]:
        """``metric`` of run ``key`` for every seed, in seed order."""
        return [runs[key].summary()[metric] for runs in self.results.values()]

    @property
    def metrics(self) -> dict[str, Any]:
        """Options (paths left out), data, every seed's runs, the comparison across seeds, MC dropout."""
        options = self.prepared.options
        config = asdict(options)
        del config["out"], config["data_dir"], config["threads"]  # where files live, cores: not results
        summary = {
            metric: {
                "dropout": spread(self.values("dropout", metric)).as_dict(),
                "no_dropout": spread(self.values("no_dropout", metric)).as_dict(),
                "difference": paired_difference(
                    self.values("dropout", metric), self.values("no_dropout", metric)
                ).as_dict(),
            }
            for metric, _, _ in COMPARED
        }
        mc: dict[str, Any] = {"samples": options.mc_samples, "ece_bins": ECE_BINS, "evaluated_on": "test set"}
        if self.calibration:
            mc["per_seed"] = {
                str(seed): {key: c.as_dict() for key, (_, c) in kinds.items()}
                for seed, kinds in self.calibration.items()
            }
            mc["summary"] = calibration_summary(self.calibration)
        return {
            "config": config,
            "data": {**self.prepared.data.describe(), **_split_sizes(self.prepared)},
            "last_k": LAST_K,
            "seeds": {
                str(seed): {
                    key: {
                        "label": run.config.label,
                        "p1": run.config.p1,
                        "p2": run.config.p2,
                        "epochs": [m.as_dict() for m in run.history],
                        **run.summary(),
                    }
                    for key, run in runs.items()
                }
                for seed, runs in self.results.items()
            },
            "summary": summary,
            "mc": mc,
        }


def _split_sizes(prepared: Prepared) -> dict[str, int]:
    options = prepared.options
    return {
        "train_size": options.train_size,
        "val_size": options.val_size,
        "train_eval_size": prepared.train_eval_size,
    }


SHOWN_EPOCHS = 20  # a longer run prints every k-th epoch, so about this many rows (epochs.csv has all)


def _epoch_table(runs: dict[str, RunResult]) -> list[str]:
    """Both runs' epochs side by side, the dropout run first (every k-th epoch of a long run)."""
    dropout, plain = runs["dropout"].history, runs["no_dropout"].history
    every = math.ceil(len(dropout) / SHOWN_EPOCHS)
    columns = ["train loss", "train acc", "val loss", "val acc"]
    rows = [
        [str(a.epoch)]
        + [f"{v:.4f}" for v in (a.train_loss, a.train_acc, a.val_loss, a.val_acc)]
        + [f"{v:.4f}" for v in (b.train_loss, b.train_acc, b.val_loss, b.val_acc)]
        for a, b in zip(dropout, plain, strict=True)
        if a.epoch % every == 0 or a.epoch == 1
    ]
    header = ["epoch", *columns, *columns]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    starts = [sum(widths[:j]) + 2 * j for j in range(len(header))]
    first = runs["dropout"].config.label.ljust(starts[5] - starts[1])
    labels = " " * starts[1] + first + runs["no_dropout"].config.label
    lines = table_lines(header, rows)
    return [labels.rstrip(), *lines]


def _mc_on_test(
    options: TrainOptions, splits: Splits, backends: dict[str, Backend]
) -> dict[str, tuple[ReliabilityBins, Calibration]]:
    probabilities = {
        "no_dropout_deterministic": softmax(
            predict_logits(backends["no_dropout"], splits.x_test).astype(np.float64)
        ),
        "dropout_deterministic": softmax(
            predict_logits(backends["dropout"], splits.x_test).astype(np.float64)
        ),
        "dropout_mc": mc_predictive_mean(
            lambda x: predict_logits(backends["dropout"], x, dropout=True), splits.x_test, options.mc_samples
        ),
    }
    return {
        key: (reliability_bins(probs, splits.y_test), summarize(probs, splits.y_test))
        for key, probs in probabilities.items()
    }


def run_experiment(
    prepared: Prepared, *, out: TextIO | None = None, progress: bool | None = None
) -> Experiment:
    """Train both runs for every seed, print per-epoch numbers, per-seed rows and the comparison,
    then MC dropout on the test set.

    Args:
        out: where the report goes (default ``sys.stdout``).
        progress: show a progress bar on stderr; ``None`` shows it only on a terminal.
    """
    out = sys.stdout if out is None else out
    options = prepared.options
    configs = train_configs(options)
    for line in describe_setup(prepared, "dropkit train", "the two runs of a seed"):
        print(line, file=out)
    calibration: dict[int, dict[str, tuple[ReliabilityBins, Calibration]]] = {}

    def after_seed(seed, splits, runs, backends, seconds) -> Sequence[str]:
        if options.mc_samples > 0:
            calibration[seed] = _mc_on_test(options, splits, backends)
        best = ", ".join(
            f"{run.config.label}: epoch {run.best_epoch} (test acc {run.test_acc:.4f})"
            for run in runs.values()
        )
        every = math.ceil(options.epochs / SHOWN_EPOCHS)
        shown = "" if every == 1 else f"; one epoch in {every} shown, all of them in epochs.csv"
        return [
            "",
            f"seed {seed} ({seconds:.1f} s{shown})",
            *_epoch_table(runs),
            f"best validation epoch: {best}",
        ]

    results = run_seeds(prepared, configs, out=out, progress=progress, after_seed=after_seed)
    experiment = Experiment(prepared, results, calibration)
    _print_summary(experiment, out)
    if prepared.data.name == "digits":
        try:
            where = f"found in {locate('fashion-mnist')[IDX_FILES[0]].parent}"
        except FileNotFoundError:
            where = "get it with `sudo apt-get install dataset-fashion-mnist`, or add --download"
        print(
            f"\nthe texts' experiment is on Fashion-MNIST ({where}): dropkit train --dataset fashion-mnist",
            file=out,
        )
    return experiment


def _print_summary(experiment: Experiment, out: TextIO) -> None:
    options = experiment.prepared.options
    n = len(options.seeds)
    print(
        f"\nper seed (final epoch; last {LAST_K}: mean of the last {LAST_K} epochs; "
        f"test at the best validation epoch)",
        file=out,
    )
    rows = []
    for seed, runs in experiment.results.items():
        for run in runs.values():
            s = run.summary()
            rows.append(
                [str(seed), run.config.label]
                + [
                    f"{s[k]:.4f}"
                    for k in ("final_val_acc", "last_val_acc", "final_val_loss", "acc_gap", "loss_gap")
                ]
                + [str(s["best_epoch"]), f"{s['test_acc']:.4f}"]
            )
    header = [
        "seed",
        "run",
        "val acc",
        f"last {LAST_K}",
        "val loss",
        "acc gap",
        "loss gap",
        "best",
        "test acc",
    ]
    print_table(out, header, rows, left=2)
    interval = "with its 95% t interval" if n > 1 else "(one seed: no interval)"
    print(
        f"\nacross {n} seed{'s' * (n > 1)}: mean ± sd; paired difference dropout − no dropout {interval}",
        file=out,
    )
    rows = []
    for metric, label, sign in COMPARED:
        a, b = experiment.values("dropout", metric), experiment.values("no_dropout", metric)
        d = paired_difference(a, b)
        better = d.positive if sign > 0 else d.negative
        rows.append([label, spread(a).format(), spread(b).format(), d.format(), f"{better}/{n}"])
    print_table(out, ["metric", "dropout", "no dropout", "difference", "dropout better"], rows)
    print("\nwhat this shows", file=out)
    for line in verdicts(experiment.values, n):
        print(f"  {line}", file=out)
    if experiment.calibration:
        print(
            f"\nMC dropout on the test set (K = {options.mc_samples} passes, ECE over {ECE_BINS} bins; "
            f"mean ± sd over seeds)",
            file=out,
        )
        summary = calibration_summary(experiment.calibration)
        rows = [
            [CALIBRATION_LABELS[key].format(k=options.mc_samples)]
            + [_format_spread(summary[key][name]) for name in ("accuracy", "mean_entropy", "ece")]
            for key in CALIBRATION_LABELS
        ]
        print_table(out, ["predictions", "accuracy", "mean entropy", "ECE"], rows)


def _format_spread(values: dict[str, float]) -> str:
    if values["n"] < 2:
        return f"{values['mean']:.4f}"
    return f"{values['mean']:.4f} ± {values['sd']:.4f}"


def render(experiment: Experiment) -> dict[str, bytes]:
    """The output files' names and contents: learning curves, reliability diagram, metrics, CSVs."""
    from dropkit.experiments.plots import learning_curves_png, reliability_png

    prepared = experiment.prepared
    options, data = prepared.options, prepared.data
    seeds = " ".join(map(str, options.seeds))
    files = {
        "learning_curves.png": learning_curves_png(
            experiment.results,
            f"{data.name}: {options.train_size} train / {options.val_size} validation images, "
            f"MLP {options.hidden}-{options.hidden}, SGD lr {options.lr:g}, batch {options.batch_size}, "
            f"seeds {seeds}",
            LAST_K,
        )
    }
    if experiment.calibration:
        files["reliability.png"] = reliability_png(
            [
                (CALIBRATION_LABELS[key].format(k=options.mc_samples), pool_bins(experiment.calibration, key))
                for key in CALIBRATION_LABELS
            ],
            f"reliability on the {data.name} test set ({ECE_BINS} bins; "
            + (
                f"{len(experiment.calibration)} seeds pooled)"
                if len(experiment.calibration) > 1
                else "one seed)"
            ),
        )
    metrics = json.dumps(without_nan(experiment.metrics), indent=2, allow_nan=False)
    files["metrics.json"] = (metrics + "\n").encode()
    epochs, runs = io.StringIO(), io.StringIO()
    epoch_writer = csv.writer(epochs, lineterminator="\n")
    epoch_writer.writerow(
        ["seed", "run", "p1", "p2", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    )
    run_writer = csv.writer(runs, lineterminator="\n")
    metric_names = list(next(iter(next(iter(experiment.results.values())).values())).summary())
    run_writer.writerow(["seed", "run", "p1", "p2", *metric_names])
    for seed, seed_runs in experiment.results.items():
        for key, run in seed_runs.items():
            c = run.config
            for m in run.history:
                epoch_writer.writerow(
                    [seed, key, c.p1, c.p2, m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc]
                )
            run_writer.writerow([seed, key, c.p1, c.p2, *run.summary().values()])
    files["epochs.csv"] = epochs.getvalue().encode()
    files["runs.csv"] = runs.getvalue().encode()
    return files


def main(args: argparse.Namespace | TrainOptions) -> int:
    """Run ``dropkit train`` with parsed options; returns the exit status (2 for bad input)."""
    return run_command("train", args, TrainOptions, run_experiment, render)
