"""The figures of ``dropkit train`` and ``dropkit sweep``, as PNG bytes.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display, no global
state), and returned as bytes so the caller decides when and how to write them. Every number a
figure states sits in a panel title or a legend, never in a box over the curves.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from dropkit.experiments.protocol import RunResult
from dropkit.experiments.stats import paired_difference
from dropkit.mc import Calibration, ReliabilityBins

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["MIN_BIN_COUNT", "learning_curves_png", "reliability_png", "sweep_png"]

COLORS = {"dropout": "tab:blue", "no_dropout": "tab:red"}
# A reliability bin with fewer predictions than this is drawn hollow: its accuracy is a few coin flips.
MIN_BIN_COUNT = 30


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # A fixed Software tag (matplotlib would write its version) keeps the bytes a function of the data.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _curves(results: Mapping[int, Mapping[str, RunResult]], key: str, field: str) -> np.ndarray:
    """``(seeds, epochs)`` values of ``field`` for run ``key``."""
    return np.array([[getattr(m, field) for m in runs[key].history] for runs in results.values()])


def _band(ax: Axes, epochs: np.ndarray, values: np.ndarray, color: str, label: str, ls: str = "-") -> None:
    """The mean over seeds as a line, the range over seeds (min to max) as a band."""
    ax.plot(epochs, values.mean(axis=0), color=color, ls=ls, label=label)
    if len(values) > 1:
        ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=color, alpha=0.18, lw=0)


def _difference(ax: Axes, epochs: np.ndarray, a: np.ndarray, b: np.ndarray, name: str) -> str:
    """Per-epoch paired difference ``a - b`` with its 95 % interval as a band; returns its title."""
    diffs = [paired_difference(a[:, i], b[:, i]) for i in range(a.shape[1])]
    ax.axhline(0, color="gray", lw=1)
    ax.plot(epochs, [d.mean for d in diffs], color="black")
    last = diffs[-1]
    if a.shape[0] < 2:
        return f"Δ {name}, dropout − none (one seed)\nlast epoch {last.mean:+.2f}"
    ax.fill_between(epochs, [d.low for d in diffs], [d.high for d in diffs], color="gray", alpha=0.3, lw=0)
    return (
        f"Δ {name}, dropout − none: mean over seeds\n"
        f"last epoch {last.mean:+.2f} [{last.low:+.2f}, {last.high:+.2f}]; band: 95% interval"
    )


def learning_curves_png(results: Mapping[int, Mapping[str, RunResult]], title: str, last_k: int) -> bytes:
    """Four panels: accuracy and loss per epoch (validation solid, train dashed; mean line and
    min–max band over seeds), and below them the paired differences of validation accuracy (points)
    and loss, with their 95 % intervals."""
    from matplotlib.figure import Figure

    first = next(iter(results.values()))
    epochs = np.array([m.epoch for m in first["dropout"].history])
    figure = Figure(figsize=(12, 8.4), layout="constrained")
    (acc_ax, loss_ax), (dacc_ax, dloss_ax) = figure.subplots(2, 2, sharex=True)
    for key, run in first.items():
        color, label = COLORS[key], run.config.label
        for ax, field, scale in ((acc_ax, "acc", 100.0), (loss_ax, "loss", 1.0)):
            _band(ax, epochs, _curves(results, key, f"val_{field}") * scale, color, f"{label}: validation")
            _band(ax, epochs, _curves(results, key, f"train_{field}") * scale, color, f"{label}: train", "--")
    n = len(results)
    band = f"lines: mean of {n} seeds; bands: min to max" if n > 1 else "one seed"
    acc_ax.set(ylabel="accuracy, % (dropout off)", title=f"accuracy ({band})")
    loss_ax.set(ylabel="cross-entropy (dropout off)", yscale="log", title=f"loss ({band})")
    handles, labels = acc_ax.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=4, fontsize="small")
    # The first epochs' climb would squash the part of the curves that differs: start the axis below
    # the lowest mean curve of the last four fifths of training.
    later = slice(len(epochs) // 5, None)
    lowest = min(
        _curves(results, key, field)[:, later].mean(axis=0).min()
        for key in first
        for field in ("val_acc", "train_acc")
    )
    acc_ax.set_ylim(bottom=max(0.0, 100 * lowest - 3))
    val_acc = {key: _curves(results, key, "val_acc") for key in first}
    val_loss = {key: _curves(results, key, "val_loss") for key in first}
    dacc_ax.set(
        xlabel="epoch",
        ylabel="points",
        title=_difference(dacc_ax, epochs, val_acc["dropout"] * 100, val_acc["no_dropout"] * 100, "val acc"),
    )
    dloss_ax.set(
        xlabel="epoch",
        title=_difference(dloss_ax, epochs, val_loss["dropout"], val_loss["no_dropout"], "val loss"),
    )
    for ax in (acc_ax, loss_ax, dacc_ax, dloss_ax):
        ax.grid(alpha=0.3)
    tail = paired_difference(
        val_acc["dropout"][:, -last_k:].mean(axis=1), val_acc["no_dropout"][:, -last_k:].mean(axis=1)
    )
    figure.suptitle(f"{title}\nΔ val acc over the last {last_k} epochs: {tail.format(100, 2)} points")
    return _png(figure)


def reliability_png(panels: Sequence[tuple[str, tuple[ReliabilityBins, Calibration]]], title: str) -> bytes:
    """One reliability diagram per ``(label, (bins, calibration))``: accuracy per confidence bin against
    the diagonal, the gap to each bin's mean confidence hatched; bins with fewer than
    ``MIN_BIN_COUNT`` predictions hollow; below, each bin's count, written on its bar."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.4 * len(panels), 5.6), layout="constrained")
    axes = figure.subplots(2, len(panels), squeeze=False, sharex=True, height_ratios=(3, 1.3))
    for column, (label, (stats, calibration)) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        width, left = np.diff(stats.edges), stats.edges[:-1]
        solid = stats.counts >= MIN_BIN_COUNT
        sparse = (stats.counts > 0) & ~solid
        accuracy = np.nan_to_num(stats.accuracy)
        confidence = np.nan_to_num(stats.confidence)
        bars = {"width": width[solid], "align": "edge"}
        top.bar(
            left[solid],
            accuracy[solid],
            **bars,
            color="tab:blue",
            edgecolor="black",
            lw=0.5,
            label="accuracy",
        )
        if sparse.any():
            few = f"accuracy, < {MIN_BIN_COUNT} predictions"
            top.bar(left[sparse], accuracy[sparse], width=width[sparse], align="edge", fill=False,
                    edgecolor="gray", ls=":", lw=0.8, label=few)  # fmt: skip
        # The gap is hatched, not filled, so it reads the same above a bar (over-confident) and inside it.
        gap, low = np.abs(confidence - accuracy)[solid], np.minimum(confidence, accuracy)[solid]
        top.bar(left[solid], gap, bottom=low, **bars, fill=False, hatch="///", edgecolor="tab:red", lw=0.8,
                label="gap to mean confidence")  # fmt: skip
        top.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
        top.set(
            xlim=(0, 1),
            ylim=(0, 1),
            title=f"{label}\naccuracy {calibration.accuracy:.3f}, ECE {calibration.ece:.4f}, "
            f"entropy {calibration.mean_entropy:.3f}",
        )
        filled = stats.counts > 0
        bottom.bar(left[filled], stats.counts[filled], width=width[filled], align="edge", color="gray")
        for x, w, count in zip(left[filled], width[filled], stats.counts[filled], strict=True):
            bottom.text(x + w / 2, count, f"{count}", ha="center", va="bottom", fontsize=6, rotation=90)
        bottom.set(xlabel="confidence (max probability)", yscale="log", ylim=(0.8, stats.counts.max() * 40))
        if column == 0:
            top.set_ylabel("accuracy")
            bottom.set_ylabel("predictions")
            top.legend(loc="upper left", fontsize="small")
    figure.suptitle(title)
    return _png(figure)


def sweep_png(
    ps: Sequence[float], summary: Mapping[str, Mapping[float, tuple[float, float]]], title: str
) -> bytes:
    """Three panels against the drop probability ``p``: accuracy (validation, last epochs, and test),
    loss (validation and test) and the train - validation accuracy gap; points are means over
    seeds, error bars one sd. ``summary[metric][p] = (mean, sd)``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4.2), layout="constrained")
    acc_ax, loss_ax, gap_ax = figure.subplots(1, 3, sharex=True)
    val = "validation (mean of the last epochs)"
    panels = (
        (acc_ax, (("last_val_acc", val), ("test_acc", "test")), 100, "accuracy, %"),
        (loss_ax, (("last_val_loss", val), ("test_loss", "test")), 1, "cross-entropy"),
        (gap_ax, (("acc_gap", "train − validation accuracy"),), 100, "gap, points"),
    )
    for ax, metrics, scale, ylabel in panels:
        for (metric, label), color in zip(metrics, ("tab:blue", "tab:green"), strict=False):
            mean = np.array([summary[metric][p][0] for p in ps]) * scale
            sd = np.nan_to_num(np.array([summary[metric][p][1] for p in ps])) * scale
            ax.errorbar(ps, mean, yerr=sd, color=color, marker="o", capsize=3, label=label)
        ax.set(xlabel="drop probability p (both hidden layers)", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    figure.suptitle(title)
    return _png(figure)
