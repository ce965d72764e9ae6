"""The figures of ``dropkit train``: learning curves and a reliability diagram, as PNG bytes.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display, no global
state), and returned as bytes so the caller decides when and how to write them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from dropkit.experiments.training import EpochMetrics
from dropkit.mc import Calibration, ReliabilityBins

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["learning_curves_png", "reliability_png"]

COLORS = ("tab:blue", "tab:red", "tab:green")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # A fixed Software tag (matplotlib would write its version) keeps the bytes a function of the data.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def learning_curves_png(runs: Mapping[str, Sequence[EpochMetrics]], title: str) -> bytes:
    """Two panels, loss and accuracy per epoch; each run in its own colour, train solid, validation dashed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, acc_ax = figure.subplots(1, 2)
    for color, (label, history) in zip(COLORS, runs.items(), strict=False):
        epochs = [m.epoch for m in history]
        for ax, field in ((loss_ax, "loss"), (acc_ax, "acc")):
            ax.plot(
                epochs, [getattr(m, f"train_{field}") for m in history], color=color, label=f"{label}: train"
            )
            ax.plot(
                epochs,
                [getattr(m, f"val_{field}") for m in history],
                color=color,
                ls="--",
                label=f"{label}: validation",
            )
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy (dropout off)", yscale="log", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (dropout off)", title="accuracy")
    acc_ax.set_ylim(max(0.0, min(min(m.val_acc for m in h) for h in runs.values()) - 0.02), 1.002)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(loc="lower right", fontsize="small")
    gaps = "\n".join(f"{label}: {h[-1].train_acc - h[-1].val_acc:.3f}" for label, h in runs.items())
    acc_ax.text(
        0.98,
        0.36,
        f"gap after epoch {max(h[-1].epoch for h in runs.values())} (train acc - val acc)\n{gaps}",
        transform=acc_ax.transAxes,
        ha="right",
        va="bottom",
        fontsize="small",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "lightgray"},
    )
    figure.suptitle(title)
    return _png(figure)


def reliability_png(panels: Sequence[tuple[str, ReliabilityBins, Calibration]], title: str) -> bytes:
    """One reliability diagram per ``(label, bins, calibration)``: accuracy per confidence bin against
    the diagonal of perfect calibration, the gap to each bin's mean confidence shaded, and the share
    of predictions per bin below."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(panels), 4.8), layout="constrained")
    axes = figure.subplots(2, len(panels), squeeze=False, sharex=True, height_ratios=(3, 1))
    for column, (label, stats, calibration) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        width = np.diff(stats.edges)
        left = stats.edges[:-1]
        filled = stats.counts > 0
        accuracy = np.where(filled, stats.accuracy, 0.0)
        confidence = np.where(filled, stats.confidence, 0.0)
        top.bar(
            left,
            accuracy,
            width=width,
            align="edge",
            color=COLORS[0],
            edgecolor="black",
            lw=0.5,
            label="accuracy",
        )
        # The gap is hatched, not filled, so it reads the same above a bar (an over-confident bin)
        # and inside it (an under-confident bin).
        top.bar(
            left[filled],
            np.abs(confidence - accuracy)[filled],
            bottom=np.minimum(confidence, accuracy)[filled],
            width=width[filled],
            align="edge",
            fill=False,
            hatch="///",
            edgecolor="tab:red",
            lw=0.8,
            label="gap to mean confidence",
        )
        top.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
        top.set(xlim=(0, 1), ylim=(0, 1), title=label)
        top.text(
            0.04,
            0.96,
            f"accuracy {calibration.accuracy:.3f}\nECE {calibration.ece:.4f}\n"
            f"mean entropy {calibration.mean_entropy:.3f}",
            transform=top.transAxes,
            va="top",
            fontsize="small",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        bottom.bar(left, stats.counts / stats.counts.sum(), width=width, align="edge", color="gray")
        bottom.set(xlabel="confidence (max probability)", yscale="log", ylim=(1e-3, 1))
        if column == 0:
            top.set_ylabel("accuracy")
            bottom.set_ylabel("share")
            top.legend(loc="lower right", fontsize="small")
    figure.suptitle(title)
    return _png(figure)
