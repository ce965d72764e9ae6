"""What the commands print and how they end: the set-up lines, the verdicts in plain words, MC summaries,
and the shared entry (:func:`run_command`: check, run, write, one-line errors, Ctrl-C)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from dropkit.experiments.options import CommonOptions, from_namespace
from dropkit.experiments.protocol import LAST_K, Prepared, prepare, write_files
from dropkit.experiments.stats import paired_difference, spread
from dropkit.mc import Calibration, ReliabilityBins

__all__ = ["COMPARED", "calibration_summary", "describe_setup", "pool_bins", "run_command", "verdicts"]

# (metric, label, +1 if higher is better else -1): the rows of the comparison table.
COMPARED = (
    ("final_val_acc", "val acc, final epoch", +1),
    ("last_val_acc", f"val acc, mean of last {LAST_K} epochs", +1),
    ("best_val_acc", "val acc, best epoch", +1),
    ("final_val_loss", "val loss, final epoch", -1),
    ("last_val_loss", f"val loss, mean of last {LAST_K} epochs", -1),
    ("acc_gap", "acc gap (train - val), final epoch", -1),
    ("loss_gap", "loss gap (val - train), final epoch", -1),
    ("test_acc", "test acc (at the best val epoch)", +1),
    ("test_loss", "test loss (at the best val epoch)", -1),
)
_SIGN = {metric: sign for metric, _, sign in COMPARED}


def describe_setup(prepared: Prepared, command: str, shared_by: str) -> list[str]:
    """The lines that open a report: data and where it came from, split, model, what is measured how."""
    options, data = prepared.options, prepared.data
    shape = "x".join(str(n) for n in data.x_pool.shape[1:])
    checked = {True: " (SHA-256: the published files)", False: " (SHA-256: NOT the published files)"}
    lines = [f"{command}: {data.name} from {data.source}{checked.get(data.verified, '')}"]
    if prepared.downloaded:
        lines.append(f"downloaded {len(prepared.downloaded)} file(s) into {prepared.downloaded[0].parent}")
    lines += [
        f"data: {options.train_size} train / {options.val_size} validation images, drawn from the "
        f"{len(data.y_pool)} training images with each seed; test: {len(data.y_test)} images "
        f"({data.test_source}), evaluated once per run, at its best validation epoch",
        f"model: flatten {shape} -> {options.hidden} -> ReLU -> Dropout(p1) -> {options.hidden} -> ReLU -> "
        f"Dropout(p2) -> {data.classes}; SGD lr {options.lr:g}, batch {options.batch_size}, "
        f"{options.epochs} epochs",
        f"measured with dropout off, after every epoch: validation loss and accuracy on the validation "
        f"images, train loss and accuracy on a fixed {prepared.train_eval_size} of the training images",
        f"seeds {' '.join(map(str, options.seeds))}: {shared_by} share the seed's split, initial weights "
        f"and batch order; backend {_BACKENDS[options.backend]}, {options.threads} thread(s)",
    ]
    return lines


_BACKENDS = {"numpy": "numpy (dropkit.nn)", "torch": "torch (torch.nn + dropkit.torch.Dropout, CPU)"}


def verdicts(values: Callable[[str, str], list[float]], n: int) -> list[str]:
    """Plain-language lines: for accuracy, loss, gap and test, whether dropout's difference is beyond
    the noise between seeds (its 95 % interval excludes 0). ``values(run, metric)`` lists seeds' values."""
    if n < 2:
        return [
            "one seed: no estimate of the noise between seeds, so no difference above means anything "
            "yet; run with --seeds 0 1 2 3 4"
        ]
    lines = []
    for metric, what in (
        ("last_val_acc", f"validation accuracy (mean of the last {LAST_K} epochs)"),
        ("last_val_loss", f"validation loss (mean of the last {LAST_K} epochs)"),
        ("acc_gap", "train - validation accuracy gap (final epoch)"),
        ("test_acc", "test accuracy (once, at the best validation epoch)"),
    ):
        a, b = values("dropout", metric), values("no_dropout", metric)
        d = paired_difference(a, b)
        if not d.beyond_noise:
            verdict = "no difference beyond the noise between seeds"
        elif d.mean * _SIGN[metric] > 0:
            verdict = "dropout better, beyond the noise between seeds"
        else:
            verdict = "dropout worse, beyond the noise between seeds"
        unit = "points" if metric == "acc_gap" else "%"
        if metric.endswith("loss"):
            numbers = (
                f"dropout {spread(a).mean:.4f}, none {spread(b).mean:.4f}; "
                f"difference {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
            )
        else:
            numbers = (
                f"dropout {100 * spread(a).mean:.2f} {unit}, none {100 * spread(b).mean:.2f} {unit}; "
                f"difference {100 * d.mean:+.2f} points [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
            )
        lines.append(f"{what}: {numbers}: {verdict}")
    return lines


CalibrationBySeed = Mapping[int, Mapping[str, tuple[ReliabilityBins, Calibration]]]


def calibration_summary(calibration: CalibrationBySeed) -> dict[str, dict[str, dict[str, float]]]:
    """For each kind of prediction, the mean ± sd over seeds of accuracy, mean entropy and ECE."""
    kinds = next(iter(calibration.values())).keys()
    return {
        kind: {
            name: spread([getattr(seed[kind][1], name) for seed in calibration.values()]).as_dict()
            for name in ("accuracy", "mean_entropy", "ece")
        }
        for kind in kinds
    }


def pool_bins(calibration: CalibrationBySeed, kind: str) -> tuple[ReliabilityBins, Calibration]:
    """The reliability bins of ``kind`` pooled over seeds (counts added, per-bin means weighted by
    count), and the seeds' mean accuracy, entropy and ECE."""
    bins = [seed[kind][0] for seed in calibration.values()]
    counts = np.sum([b.counts for b in bins], axis=0)

    def pooled(field: str) -> np.ndarray:
        total = np.sum([np.where(b.counts > 0, getattr(b, field) * b.counts, 0.0) for b in bins], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)

    means = calibration_summary(calibration)[kind]
    return (
        ReliabilityBins(bins[0].edges, counts, pooled("accuracy"), pooled("confidence")),
        Calibration(means["accuracy"]["mean"], means["mean_entropy"]["mean"], means["ece"]["mean"]),
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n"))


def run_command(
    name: str,
    args: argparse.Namespace | CommonOptions,
    options_type: type[CommonOptions],
    run: Callable[[Prepared], Any],
    render: Callable[[Any], dict[str, bytes]],
) -> int:
    """Check and load (exit 2 and one line on stderr for bad input), ``run``, write ``render``'s files
    atomically; Ctrl-C anywhere exits 130 with nothing written. Returns the exit status."""
    started = time.perf_counter()
    options = from_namespace(args, options_type) if isinstance(args, argparse.Namespace) else args
    try:
        try:
            prepared = prepare(options)
        except (ValueError, TypeError, OSError) as error:
            print(f"dropkit {name}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        if prepared.data.verified is False:
            print(
                f"dropkit {name}: warning: the files in {prepared.data.source} are not the published "
                f"{prepared.data.name} (SHA-256 differs); training on them anyway",
                file=sys.stderr,
            )
        experiment = run(prepared)
        try:
            paths = write_files(prepared.out_dir, render(experiment))
        except OSError as error:
            print(
                f"dropkit {name}: error: cannot write to {prepared.out_dir}: {_one_line(error)}",
                file=sys.stderr,
            )
            return 2
    except KeyboardInterrupt:
        print(f"dropkit {name}: interrupted; nothing written", file=sys.stderr)
        return 130
    print()
    for path in paths:
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
