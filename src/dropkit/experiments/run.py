"""``dropkit train``: the dropout MLP trained twice, with and without dropout, and the gap between them.

The experiment of Srivastava et al. (JMLR 2014) at the scale of a laptop: the same MLP, from the
same initial weights and with the same batch order, trained once with dropout ``(p1, p2)`` and once
with ``p = 0``; then MC dropout (Gal & Ghahramani, ICML 2016) on the validation set. Steps:

1. :func:`prepare` checks every option, loads the data and checks the output directory, before any
   training, so bad input fails fast and leaves nothing behind;
2. :func:`run_experiment` trains and evaluates, printing per-epoch numbers and the final tables;
3. :func:`render` turns the result into the files' bytes; :func:`write_files` writes them atomically.

:func:`main` is the command line's entry; the defaults live in :class:`TrainOptions`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dropkit._validation import check_count, check_positive_finite, check_probability, check_uint64
from dropkit.experiments.datasets import DATASETS, Dataset, load_dataset
from dropkit.experiments.training import (
    Backend,
    EpochMetrics,
    NumpyBackend,
    RunSummary,
    Seeds,
    build_mlp,
    fit,
    predict_logits,
    summarize_run,
)
from dropkit.mc import ECE_BINS, Calibration, ReliabilityBins, mc_predictive_mean, reliability_bins, summarize
from dropkit.nn import softmax

__all__ = [
    "Experiment",
    "Prepared",
    "TrainOptions",
    "add_arguments",
    "main",
    "prepare",
    "render",
    "run_experiment",
]

BACKENDS = ("numpy", "torch")


@dataclass(frozen=True)
class TrainOptions:
    """The options of ``dropkit train``; each field is the option of the same name (``--batch-size``...).

    The model and optimizer defaults are the texts' (256 units, p = 0.5, SGD lr 0.1, batch 256);
    the epochs are what makes the no-dropout model overfit visibly on the digits' small training split.
    """

    hidden: int = 256  # units in each of the two hidden layers
    p1: float = 0.5  # drop probability after the first hidden layer
    p2: float = 0.5  # drop probability after the second hidden layer
    lr: float = 0.1  # SGD learning rate
    batch_size: int = 256
    epochs: int = 100
    seed: int = 0  # the split, the initial weights, the batch order and the dropout masks
    dataset: str = "digits"
    data_dir: str | None = None  # IDX files for fashion-mnist / mnist; default data/<dataset>
    out: str | None = None  # default runs/train-<dataset>-seed<seed>
    mc_samples: int = 30  # MC-dropout passes; 0 skips MC dropout
    backend: str = "numpy"  # numpy (dropkit.nn) or torch (torch.nn + dropkit.torch.Dropout, CPU)

    def output_dir(self) -> Path:
        """``out``, or ``runs/train-<dataset>-seed<seed>`` when it is not given."""
        return (
            Path(self.out) if self.out is not None else Path("runs", f"train-{self.dataset}-seed{self.seed}")
        )


_HELP = {
    "hidden": "units in each hidden layer",
    "p1": "drop probability after the first hidden layer, in [0, 1]",
    "p2": "drop probability after the second hidden layer, in [0, 1]",
    "lr": "SGD learning rate",
    "batch_size": "minibatch size",
    "epochs": "passes over the training set",
    "seed": "seed of the split, initial weights, batch order and dropout masks",
    "dataset": f"one of {', '.join(DATASETS)}",
    "data_dir": "directory holding the IDX files of fashion-mnist / mnist (default data/<dataset>)",
    "out": "output directory (default runs/train-<dataset>-seed<seed>)",
    "mc_samples": "MC-dropout forward passes after training; 0 skips MC dropout",
    "backend": "numpy (the from-scratch MLP) or torch (the same MLP in torch.nn with dropkit.torch.Dropout)",
}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one option per :class:`TrainOptions` field, with its default, to ``parser``."""
    defaults = TrainOptions()
    types = {"int": int, "float": float, "str": str, "str | None": str}
    for option in fields(TrainOptions):
        default = getattr(defaults, option.name)
        shown = "" if default is None else f" (default {default})"
        parser.add_argument(
            f"--{option.name.replace('_', '-')}",
            type=types[str(option.type)],
            default=default,
            help=_HELP[option.name] + shown,
        )
    return parser


def _check_output_dir(path: Path) -> Path:
    """Fail now, not after training, if ``path`` cannot become a directory we can write into."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {path} cannot be created: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"--out {path} is not writable: {error.strerror or error}") from None
    return path


def check_options(options: TrainOptions) -> TrainOptions:
    """Return ``options`` with numbers normalised; raise ``ValueError`` naming the first bad option."""
    probabilities = {}
    for name in ("p1", "p2"):
        try:
            probabilities[name] = check_probability(getattr(options, name), name)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--{name}: {error}") from None
    lr = check_positive_finite("--lr", options.lr)
    if options.backend not in BACKENDS:
        raise ValueError(f"--backend {options.backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if options.backend == "torch" and importlib.util.find_spec("torch") is None:
        raise ValueError("--backend torch needs PyTorch: pip install 'dropkit[torch]'")
    if options.dataset not in DATASETS:
        raise ValueError(f"--dataset {options.dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
    mc_samples = check_count("--mc-samples", options.mc_samples, minimum=0)
    try:
        seed = check_uint64("seed", options.seed)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--{error}") from None
    return replace(
        options,
        hidden=check_count("--hidden", options.hidden),
        epochs=check_count("--epochs", options.epochs),
        batch_size=check_count("--batch-size", options.batch_size),
        lr=lr,
        mc_samples=mc_samples,
        seed=seed,
        **probabilities,
    )


@dataclass(frozen=True)
class Prepared:
    """Checked options, the loaded data and the output directory: everything training needs."""

    options: TrainOptions
    data: Dataset
    seeds: Seeds
    out_dir: Path


def prepare(options: TrainOptions) -> Prepared:
    """Check every option, the output directory and the data files, then load the data.

    Raises ``ValueError`` (bad option, bad file, unwritable output) or ``FileNotFoundError``
    (missing IDX files) before anything is trained or written.
    """
    options = check_options(options)
    out_dir = _check_output_dir(options.output_dir())
    seeds = Seeds.from_seed(options.seed)
    data = load_dataset(options.dataset, seed=seeds.split, data_dir=options.data_dir)
    return Prepared(options, data, seeds, out_dir)


@dataclass(frozen=True)
class Run:
    """One training run: its label, drop probabilities, per-epoch history and summary."""

    label: str
    p1: float
    p2: float
    history: list[EpochMetrics]
    summary: RunSummary


@dataclass(frozen=True)
class Experiment:
    """Everything ``dropkit train`` measured; ``metrics`` is what ``metrics.json`` holds."""

    prepared: Prepared
    runs: dict[str, Run]
    calibration: dict[str, tuple[ReliabilityBins, Calibration]] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        """Config (paths left out), data, every run's epochs and summary, and MC calibration; JSON-ready."""
        config = asdict(self.prepared.options)
        del config["out"], config["data_dir"]  # where files live is not a result
        return {
            "config": config,
            "data": self.prepared.data.describe(),
            "runs": {
                key: {
                    "label": run.label,
                    "p1": run.p1,
                    "p2": run.p2,
                    "epochs": [m.as_dict() for m in run.history],
                    "final": run.history[-1].as_dict(),
                    **run.summary.as_dict(),
                }
                for key, run in self.runs.items()
            },
            "mc": {
                "samples": self.prepared.options.mc_samples,
                "ece_bins": ECE_BINS,
                "evaluated_on": "validation set",
                **{key: calibration.as_dict() for key, (_, calibration) in self.calibration.items()},
            },
        }


def _print_table(out: TextIO, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells), file=out)


def _epoch_line(m: EpochMetrics) -> str:
    return f"{m.epoch:5d}  {m.train_loss:10.4f}  {m.train_acc:9.4f}  {m.val_loss:8.4f}  {m.val_acc:7.4f}"


def _train_one(
    prepared: Prepared,
    key: str,
    label: str,
    p1: float,
    p2: float,
    index: int,
    out: TextIO,
    progress: bool | None,
) -> tuple[Run, Backend]:
    from tqdm import tqdm  # imported here: only training needs it

    options, data = prepared.options, prepared.data
    model = build_mlp(
        int(np.prod(data.x_train.shape[1:])),
        data.classes,
        hidden=options.hidden,
        p1=p1,
        p2=p2,
        seeds=prepared.seeds,
    )
    if options.backend == "torch":
        from dropkit.torch.training import TorchBackend  # torch is an optional extra

        backend: Backend = TorchBackend.from_numpy(model, options.lr)
    else:
        backend = NumpyBackend(model, options.lr)
    steps = options.epochs * math.ceil(len(data.y_train) / options.batch_size)
    print(f"\nrun {index}/2: {label}", file=out)
    print("epoch  train loss  train acc  val loss  val acc", file=out)
    with tqdm(
        total=steps,
        desc=f"run {index}/2",
        unit="batch",
        leave=False,
        disable=None if progress is None else not progress,
    ) as bar:

        def on_batch(epoch: int, loss: float) -> None:
            bar.update(1)

        def on_epoch(metrics: EpochMetrics) -> None:
            bar.write(_epoch_line(metrics), file=out)
            bar.set_postfix_str(f"epoch {metrics.epoch}/{options.epochs}, val acc {metrics.val_acc:.4f}")

        history = fit(
            backend,
            data.x_train,
            data.y_train,
            data.x_val,
            data.y_val,
            epochs=options.epochs,
            batch_size=options.batch_size,
            order_seed=prepared.seeds.order,
            on_batch=on_batch,
            on_epoch=on_epoch,
        )
    return Run(label, p1, p2, history, summarize_run(history)), backend


def run_experiment(
    prepared: Prepared, *, out: TextIO | None = None, progress: bool | None = None
) -> Experiment:
    """Train both runs, print per-epoch numbers and the gap table, then evaluate MC dropout.

    Args:
        out: where the report goes (default ``sys.stdout``).
        progress: show progress bars on stderr; ``None`` shows them only on a terminal.
    """
    out = sys.stdout if out is None else out
    options, data = prepared.options, prepared.data
    shape = "x".join(str(n) for n in data.x_train.shape[1:])
    print(
        f"dropkit train: {data.name}, {len(data.y_train)} train / {len(data.y_val)} validation images "
        f"({shape}, {data.classes} classes), seed {options.seed}",
        file=out,
    )
    print(
        f"model: flatten {shape} -> {options.hidden} -> ReLU -> Dropout(p1) -> {options.hidden} -> ReLU -> "
        f"Dropout(p2) -> {data.classes}; SGD lr {options.lr}, batch {options.batch_size}, "
        f"{options.epochs} epochs; loss and accuracy measured with dropout off",
        file=out,
    )
    dropout_label = f"dropout p1={options.p1:g} p2={options.p2:g}"
    runs: dict[str, Run] = {}
    backends: dict[str, Backend] = {}
    for index, (key, label, p1, p2) in enumerate(
        (("dropout", dropout_label, options.p1, options.p2), ("no_dropout", "no dropout (p = 0)", 0.0, 0.0)),
        start=1,
    ):
        runs[key], backends[key] = _train_one(prepared, key, label, p1, p2, index, out, progress)

    print(
        f"\ngeneralization gap after epoch {options.epochs} (train numbers measured with dropout off)",
        file=out,
    )
    _print_table(
        out,
        ["run", "train acc", "val acc", "acc gap", "train loss", "val loss", "loss gap", "best val acc"],
        [
            [
                run.label,
                f"{run.history[-1].train_acc:.4f}",
                f"{run.history[-1].val_acc:.4f}",
                f"{run.summary.acc_gap:.4f}",
                f"{run.history[-1].train_loss:.4f}",
                f"{run.history[-1].val_loss:.4f}",
                f"{run.summary.loss_gap:.4f}",
                f"{run.summary.best_val_acc:.4f} (epoch {run.summary.best_epoch})",
            ]
            for run in runs.values()
        ],
    )

    calibration: dict[str, tuple[ReliabilityBins, Calibration]] = {}
    if options.mc_samples > 0:
        probabilities = {
            "no_dropout_deterministic": softmax(
                predict_logits(backends["no_dropout"], data.x_val).astype(np.float64)
            ),
            "dropout_deterministic": softmax(
                predict_logits(backends["dropout"], data.x_val).astype(np.float64)
            ),
            "dropout_mc": mc_predictive_mean(
                lambda x: predict_logits(backends["dropout"], x, dropout=True), data.x_val, options.mc_samples
            ),
        }
        for key, probs in probabilities.items():
            calibration[key] = (reliability_bins(probs, data.y_val), summarize(probs, data.y_val))
        print(
            f"\nMC dropout on the validation set (K = {options.mc_samples} passes, ECE over {ECE_BINS} bins)",
            file=out,
        )
        _print_table(
            out,
            ["predictions", "accuracy", "mean entropy", "ECE"],
            [
                [
                    _CALIBRATION_LABELS[key].format(k=options.mc_samples),
                    f"{c.accuracy:.4f}",
                    f"{c.mean_entropy:.4f}",
                    f"{c.ece:.4f}",
                ]
                for key, (_, c) in calibration.items()
            ],
        )
    return Experiment(prepared, runs, calibration)


_CALIBRATION_LABELS = {
    "no_dropout_deterministic": "no dropout, deterministic",
    "dropout_deterministic": "dropout, deterministic",
    "dropout_mc": "dropout, MC mean of K={k}",
}


def render(experiment: Experiment) -> dict[str, bytes]:
    """The output files' names and contents: learning curves, reliability diagram, metrics, CSV."""
    from dropkit.experiments.plots import learning_curves_png, reliability_png

    options = experiment.prepared.options
    data = experiment.prepared.data
    files = {
        "learning_curves.png": learning_curves_png(
            {run.label: run.history for run in experiment.runs.values()},
            f"{data.name}: {len(data.y_train)} train / {len(data.y_val)} validation images, "
            f"MLP {options.hidden}-{options.hidden}, SGD lr {options.lr}, batch {options.batch_size}, "
            f"seed {options.seed}",
        )
    }
    if experiment.calibration:
        files["reliability.png"] = reliability_png(
            [
                (_CALIBRATION_LABELS[key].format(k=options.mc_samples), stats, calibration)
                for key, (stats, calibration) in experiment.calibration.items()
            ],
            f"reliability on the {data.name} validation set ({ECE_BINS} bins)",
        )
    metrics = json.dumps(_without_nan(experiment.metrics), indent=2, allow_nan=False)
    files["metrics.json"] = (metrics + "\n").encode()
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["run", "p1", "p2", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"])
    for key, run in experiment.runs.items():
        for m in run.history:
            writer.writerow([key, run.p1, run.p2, m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc])
    files["epochs.csv"] = table.getvalue().encode()
    return files


def _without_nan(value: Any) -> Any:
    """``value`` with every non-finite float (a diverged run's loss) as None: JSON has no NaN or inf."""
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_files(out_dir: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write every file or none: stage each next to its target, then rename them all into place."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content in files.items():
            temporary = out_dir / f".{name}.{os.getpid()}.tmp"
            staged.append((temporary, out_dir / name))
            with open(temporary, "wb") as handle:
                handle.write(content)
    except BaseException:
        for temporary, _ in staged:
            with contextlib.suppress(OSError):
                temporary.unlink()
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    for temporary, target in staged:
        os.replace(temporary, target)
    return [target for _, target in staged]


def main(args: argparse.Namespace | TrainOptions) -> int:
    """Run ``dropkit train`` with parsed options; returns the exit status (2 for bad input)."""
    started = time.perf_counter()
    if isinstance(args, argparse.Namespace):
        args = TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions)})
    try:
        prepared = prepare(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"dropkit train: error: {error}", file=sys.stderr)
        return 2
    try:
        experiment = run_experiment(prepared)
        paths = write_files(prepared.out_dir, render(experiment))
    except KeyboardInterrupt:
        print("dropkit train: interrupted; nothing written", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"dropkit train: error: cannot write to {prepared.out_dir}: {error}", file=sys.stderr)
        return 2
    print(file=sys.stdout)
    for path in paths:
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
