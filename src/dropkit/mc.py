"""Monte Carlo dropout and calibration, in NumPy.

MC dropout (Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016) keeps dropout on
at test time and averages the softmax of ``K`` stochastic forward passes::

    p(y | x) ~= (1/K) sum_k softmax(f(x; m_k)),     m_k a fresh dropout mask per pass

Its spread is measured by the predictive entropy ``H[p] = -sum_c p_c log p_c`` (nats), and its
calibration by the expected calibration error over 15 equal-width confidence bins (Guo, Pleiss,
Sun, Weinberger, "On calibration of modern neural networks", ICML 2017)::

    ECE = sum_b (n_b / N) |accuracy_b - confidence_b|

Every function here takes arrays or a forward function, so it works with any backend that can
return logits as a NumPy array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dropkit._validation import check_count, shown
from dropkit.nn import Sequential, softmax

__all__ = [
    "ECE_BINS",
    "Calibration",
    "ReliabilityBins",
    "expected_calibration_error",
    "mc_dropout_predict",
    "mc_predictive_mean",
    "predictive_entropy",
    "reliability_bins",
    "summarize",
]

ECE_BINS = 15
MAX_BINS = 2**20  # a million bins is no diagram, and more would be arrays too big to make


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError):  # a ragged list
        raise TypeError(f"{name} must be an array, got {type(value).__name__}") from None


def _check_probs(probs: Any, labels: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    array = _as_array("probs", probs)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"probs must be a real array of probabilities, got dtype {array.dtype}")
    probs = array.astype(np.float64, copy=False)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"probs must have shape (N, classes) with N, classes > 0, got {probs.shape}")
    if not ((probs >= 0) & (probs <= 1)).all():  # NaN fails too
        raise ValueError("probs must be probabilities in [0, 1], got values outside (or NaN)")
    if labels is None:
        return probs, None
    labels = _as_array("labels", labels)
    if labels.shape != probs.shape[:1] or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array of shape ({probs.shape[0]},), got {labels.shape}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be class indexes in [0, {probs.shape[1]}), got values outside")
    return probs, labels


def mc_predictive_mean(sample_logits: Callable[[np.ndarray], np.ndarray], x: Any, samples: int) -> np.ndarray:
    """Average of ``softmax(sample_logits(x))`` over ``samples`` calls, in float64.

    Args:
        sample_logits: one stochastic forward pass, dropout on, returning ``(N, classes)`` logits;
            each call must draw fresh masks (a ``Dropout`` layer takes a new stream per call).
        x: the inputs, passed through unchanged.
        samples: K, a positive integer.

    Shape: ``(N, classes)``; each row sums to 1.

    >>> flip = iter([np.array([[0.0, 50.0]]), np.array([[50.0, 0.0]])])
    >>> mc_predictive_mean(lambda x: next(flip), None, 2).round(6).tolist()
    [[0.5, 0.5]]
    """
    samples = check_count("samples", samples)
    if not callable(sample_logits):
        raise TypeError(f"sample_logits must be a function of x returning logits, got {shown(sample_logits)}")
    total = softmax(np.asarray(sample_logits(x), dtype=np.float64))
    for _ in range(samples - 1):
        total += softmax(np.asarray(sample_logits(x), dtype=np.float64))
    return total / samples


def mc_dropout_predict(model: Sequential, x: np.ndarray, samples: int) -> np.ndarray:
    """MC-dropout predictive mean of a NumPy ``Sequential``: ``samples`` passes in training mode.

    The model's mode is restored afterwards. The Dropout layers advance their streams, so a seeded
    model gives the same answer in every run.

    >>> from dropkit import Dropout
    >>> from dropkit.nn import Linear
    >>> model = Sequential(Dropout(0.5, seed=0), Linear(4, 3, rng=np.random.default_rng(0)))
    >>> mc_dropout_predict(model, np.ones((2, 4), np.float32), 30).sum(axis=1).round(6).tolist()
    [1.0, 1.0]
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a dropkit.nn.Sequential, got {type(model).__name__}")
    samples = check_count("samples", samples)
    was_training = model.training
    model.train()
    try:
        return mc_predictive_mean(model.forward, x, samples)
    finally:
        model.train(was_training)


def predictive_entropy(probs: Any) -> np.ndarray:
    """``H[p_n] = -sum_c p_nc log p_nc`` per row, in nats (``0 log 0 = 0``); between 0 and log(classes).

    >>> predictive_entropy([[0.5, 0.5], [1.0, 0.0]]).round(6).tolist()
    [0.693147, 0.0]
    """
    probs, _ = _check_probs(probs)
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=1) + 0.0  # + 0.0 turns a certain prediction's -0.0 into 0.0


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram; bin ``b`` holds confidences in ``(b/B, (b+1)/B]``.

    ``accuracy`` and ``confidence`` are NaN for empty bins.
    """

    edges: np.ndarray  # (B + 1,)
    counts: np.ndarray  # (B,)
    accuracy: np.ndarray  # (B,)
    confidence: np.ndarray  # (B,)


def reliability_bins(probs: Any, labels: Any, bins: int = ECE_BINS) -> ReliabilityBins:
    """Group predictions by confidence ``max_c p_c`` into ``bins`` equal-width bins.

    >>> stats = reliability_bins([[0.9, 0.1], [0.8, 0.2]], [0, 1], bins=5)
    >>> stats.counts.tolist(), stats.accuracy[3:].tolist(), stats.confidence[3:].tolist()
    ([0, 0, 0, 1, 1], [0.0, 1.0], [0.8, 0.9])
    """
    probs, labels = _check_probs(probs, labels)
    bins = check_count("bins", bins)
    if bins > MAX_BINS:
        raise ValueError(f"bins must be at most {MAX_BINS}, got {shown(bins)}")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Bins are (lower, upper], as in Guo et al.; a confidence of exactly 0 cannot be a maximum.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), counts, accuracy, mean_confidence)


def expected_calibration_error(probs: Any, labels: Any, bins: int = ECE_BINS) -> float:
    """``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|`` over ``bins`` equal-width bins.

    >>> round(expected_calibration_error([[0.9, 0.1], [0.8, 0.2]], [0, 1], bins=5), 6)  # (0.1 + 0.8) / 2
    0.45
    """
    stats = reliability_bins(probs, labels, bins)
    filled = stats.counts > 0
    weights = stats.counts[filled] / stats.counts.sum()
    return float(np.sum(weights * np.abs(stats.accuracy[filled] - stats.confidence[filled])))


@dataclass(frozen=True)
class Calibration:
    """Accuracy, mean predictive entropy (nats) and ECE of one set of predictions."""

    accuracy: float
    mean_entropy: float
    ece: float

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict."""
        return asdict(self)


def summarize(probs: Any, labels: Any, bins: int = ECE_BINS) -> Calibration:
    """Accuracy, mean predictive entropy and ECE of predictive probabilities ``probs``.

    >>> summarize([[0.9, 0.1], [0.8, 0.2]], [0, 1], bins=5).accuracy
    0.5
    """
    probs, labels = _check_probs(probs, labels)
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    return Calibration(
        accuracy, float(predictive_entropy(probs).mean()), expected_calibration_error(probs, labels, bins)
    )
