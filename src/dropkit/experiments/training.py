"""The training loop of ``dropkit train``, independent of the array backend.

The loop owns the data, the batch order and the metrics; a *backend* owns the model. A backend
is anything with two methods (see :class:`Backend`): one SGD step on a batch, and a forward pass
that returns logits as a NumPy array, with dropout on or off. :class:`NumpyBackend` wraps the
from-scratch MLP of :mod:`dropkit.nn`; a PyTorch backend only has to provide the same two methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from dropkit._validation import check_uint64
from dropkit.layers import Dropout
from dropkit.nn import SGD, Flatten, Linear, ReLU, Sequential, SoftmaxCrossEntropy, cross_entropy

__all__ = [
    "EVAL_CHUNK",
    "Backend",
    "EpochMetrics",
    "NumpyBackend",
    "RunSummary",
    "Seeds",
    "build_mlp",
    "evaluate",
    "fit",
    "predict_logits",
    "summarize_run",
]

EVAL_CHUNK = 2048  # rows per forward pass when evaluating, to bound memory on 60,000 images


@dataclass(frozen=True)
class Seeds:
    """Every random choice of an experiment, derived from one user seed by NumPy's ``SeedSequence``.

    >>> Seeds.from_seed(0) == Seeds.from_seed(0)
    True
    """

    split: int  # the digits train/validation split
    init: int  # the initial weights
    order: int  # the batch order, epoch after epoch
    dropout: tuple[int, int]  # the two Dropout layers' Philox seeds

    @classmethod
    def from_seed(cls, seed: int) -> Seeds:
        """Five independent 64-bit words from ``SeedSequence(seed)``; ``seed`` in ``[0, 2**64)``."""
        seed = check_uint64("seed", seed)
        words = [int(w) for w in np.random.SeedSequence(seed).generate_state(5, dtype=np.uint64)]
        return cls(words[0], words[1], words[2], (words[3], words[4]))


def build_mlp(
    in_features: int,
    classes: int,
    *,
    hidden: int,
    p1: float,
    p2: float,
    seeds: Seeds,
    dtype: type[np.floating] = np.float32,
) -> Sequential:
    """The classic dropout MLP as a :class:`~dropkit.nn.Sequential`::

        Flatten -> Linear(hidden) -> ReLU -> Dropout(p1)
                -> Linear(hidden) -> ReLU -> Dropout(p2) -> Linear(classes)

    The weights depend only on ``seeds.init`` and the sizes, not on ``p1``/``p2``: the model with
    dropout and the one with ``p = 0`` start from the same weights.
    """
    rng = np.random.default_rng(seeds.init)
    return Sequential(
        Flatten(),
        Linear(in_features, hidden, rng=rng, dtype=dtype),
        ReLU(),
        Dropout(p1, seed=seeds.dropout[0]),
        Linear(hidden, hidden, rng=rng, dtype=dtype),
        ReLU(),
        Dropout(p2, seed=seeds.dropout[1]),
        Linear(hidden, classes, rng=rng, dtype=dtype),
    )


class Backend(Protocol):
    """What the training loop needs of a model, whatever arrays it computes with."""

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step on the batch ``(x, y)`` with dropout on; returns the batch's mean loss."""
        ...

    def logits(self, x: np.ndarray, *, dropout: bool = False) -> np.ndarray:
        """A forward pass without any update; ``dropout=True`` draws fresh masks (MC dropout)."""
        ...


class NumpyBackend:
    """The NumPy MLP of :mod:`dropkit.nn` with softmax cross-entropy and plain SGD."""

    def __init__(self, model: Sequential, lr: float) -> None:
        self.model = model
        self.loss = SoftmaxCrossEntropy()
        self.optimizer = SGD(model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step on ``(x, y)`` in training mode; returns the batch's mean loss."""
        loss = self.loss(self.model.train()(x), y)
        self.model.backward(self.loss.backward())
        self.optimizer.step()
        return loss

    def logits(self, x: np.ndarray, *, dropout: bool = False) -> np.ndarray:
        """The model's ``(N, classes)`` logits; ``dropout=True`` keeps the Dropout layers on (MC dropout)."""
        return self.model.train(dropout)(x)


def predict_logits(backend: Backend, x: np.ndarray, *, dropout: bool = False) -> np.ndarray:
    """``backend.logits`` over ``x`` in chunks of ``EVAL_CHUNK`` rows, concatenated."""
    return np.concatenate(
        [backend.logits(x[i : i + EVAL_CHUNK], dropout=dropout) for i in range(0, len(x), EVAL_CHUNK)]
    )


def evaluate(backend: Backend, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``(x, y)`` in inference mode (dropout off)."""
    logits = predict_logits(backend, x)
    return cross_entropy(logits, y), float(np.mean(logits.argmax(axis=1) == y))


@dataclass(frozen=True)
class EpochMetrics:
    """Loss and accuracy after one epoch; train numbers are measured in inference mode too."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict (one row of ``metrics.json``)."""
        return asdict(self)


def fit(
    backend: Backend,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    order_seed: int,
    on_batch: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> list[EpochMetrics]:
    """Train for ``epochs`` passes over the training set in minibatches, then evaluate each epoch.

    The batch order is a fresh permutation per epoch from ``default_rng(order_seed)``, so two runs
    with the same ``order_seed`` see the same batches. The last batch of an epoch may be smaller.
    After each epoch the train *and* validation sets are evaluated with dropout off: the train
    numbers are what the model does on the data it saw, which is what makes the gap honest.

    Args:
        on_batch: called as ``on_batch(epoch, batch_loss)`` after every step.
        on_epoch: called with each epoch's metrics.
    """
    order_rng = np.random.default_rng(order_seed)
    history = []
    for epoch in range(1, epochs + 1):
        order = order_rng.permutation(len(y_train))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = backend.train_step(x_train[batch], y_train[batch])
            if on_batch is not None:
                on_batch(epoch, loss)
        metrics = EpochMetrics(epoch, *evaluate(backend, x_train, y_train), *evaluate(backend, x_val, y_val))
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
    return history


@dataclass(frozen=True)
class RunSummary:
    """The generalization gap after the last epoch, and the best validation accuracy seen."""

    acc_gap: float  # train acc - val acc
    loss_gap: float  # val loss - train loss
    best_val_acc: float
    best_epoch: int  # the first epoch that reached it

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict."""
        return asdict(self)


def summarize_run(history: list[EpochMetrics]) -> RunSummary:
    """Gaps of the last epoch and the (first) best validation accuracy of ``history``."""
    last = history[-1]
    best = max(history, key=lambda m: (m.val_acc, -m.epoch))
    return RunSummary(
        last.train_acc - last.val_acc, last.val_loss - last.train_loss, best.val_acc, best.epoch
    )
