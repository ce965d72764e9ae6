"""The training loop of ``dropkit train``, independent of the array backend.

The loop owns the data, the batch order and the metrics; a *backend* owns the model. A backend
is anything with the four methods of :class:`Backend`: one SGD step on a batch, a forward pass
that returns logits as a NumPy array (dropout on or off), and a copy and restore of its weights
(to come back to the best validation epoch). :class:`NumpyBackend` wraps the from-scratch MLP of
:mod:`dropkit.nn`; :mod:`dropkit.experiments.torch_backend` is the same model in ``torch.nn``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from dropkit._validation import check_uint64
from dropkit.layers import Dropout
from dropkit.nn import SGD, Flatten, Linear, ReLU, Sequential, SoftmaxCrossEntropy, cross_entropy

__all__ = [
    "EVAL_CHUNK",
    "Backend",
    "EpochMetrics",
    "FitResult",
    "NumpyBackend",
    "Seeds",
    "build_mlp",
    "evaluate",
    "fit",
    "predict_logits",
]

EVAL_CHUNK = 2048  # rows per forward pass when evaluating, to bound memory on 60,000 images
Arrays = tuple[np.ndarray, np.ndarray]  # images (N, ...) and labels (N,)


@dataclass(frozen=True)
class Seeds:
    """Every random choice of one seed's runs, derived from the user's seed by NumPy's ``SeedSequence``.

    >>> Seeds.from_seed(0) == Seeds.from_seed(0)
    True
    """

    split: int  # the validation / training split of the pool
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

    def state(self) -> Any:
        """A copy of the weights, for :meth:`load_state`."""
        ...

    def load_state(self, state: Any) -> None:
        """Put back weights copied by :meth:`state`."""
        ...


class NumpyBackend:
    """The NumPy MLP of :mod:`dropkit.nn` with softmax cross-entropy and plain SGD."""

    def __init__(self, model: Sequential, lr: float) -> None:
        self.model = model
        self.loss = SoftmaxCrossEntropy()
        self.optimizer = SGD(model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step on ``(x, y)`` in training mode; returns the batch's mean loss.

        The gradient with respect to the images is never formed: the first layer's ``dL/dx``,
        a (batch x 784) product as large as its weight gradient, has no use.
        """
        loss = self.loss(self.model.train()(x), y)
        self.model.backward(self.loss.backward(), input_grad=False)
        self.optimizer.step()
        return loss

    def logits(self, x: np.ndarray, *, dropout: bool = False) -> np.ndarray:
        """The model's ``(N, classes)`` logits; ``dropout=True`` keeps the Dropout layers on (MC dropout)."""
        return self.model.train(dropout)(x)

    def state(self) -> list[np.ndarray]:
        """Copies of every parameter's value, in ``model.parameters()`` order."""
        return [param.value.copy() for param in self.model.parameters()]

    def load_state(self, state: list[np.ndarray]) -> None:
        """Copy ``state`` back into the parameters, in place."""
        for param, value in zip(self.model.parameters(), state, strict=True):
            param.value[...] = value


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
    """Loss and accuracy after one epoch, all measured in inference mode (dropout off)."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict (one row of ``metrics.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class FitResult:
    """The per-epoch history and the epoch with the best validation accuracy (the first, on a tie)."""

    history: list[EpochMetrics]
    best_epoch: int


def fit(
    backend: Backend,
    train: Arrays,
    val: Arrays,
    *,
    train_eval: Arrays,
    epochs: int,
    batch_size: int,
    order_seed: int,
    on_batch: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> FitResult:
    """Train ``epochs`` passes over ``train`` in minibatches, evaluating each; end at the best epoch.

    The batch order is a fresh permutation per epoch from ``default_rng(order_seed)``, so two runs
    with the same ``order_seed`` see the same batches. The last batch of an epoch may be smaller.
    After each epoch ``train_eval`` (training images, or a fixed sample of them) and ``val`` are
    evaluated with dropout off: what the model does on images it trained on and on others, measured
    the same way, is what makes the gap honest. When training ends the backend holds the weights of
    the epoch with the best validation accuracy, so what is evaluated next (the test set) is the
    model validation chose.

    Args:
        on_batch: called as ``on_batch(epoch, batch_loss)`` after every step.
        on_epoch: called with each epoch's metrics.
    """
    x_train, y_train = train
    order_rng = np.random.default_rng(order_seed)
    history: list[EpochMetrics] = []
    best, best_state = 0, None
    for epoch in range(1, epochs + 1):
        order = order_rng.permutation(len(y_train))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = backend.train_step(x_train[batch], y_train[batch])
            if on_batch is not None:
                on_batch(epoch, loss)
        metrics = EpochMetrics(epoch, *evaluate(backend, *train_eval), *evaluate(backend, *val))
        history.append(metrics)
        if best == 0 or metrics.val_acc > history[best - 1].val_acc:
            best, best_state = epoch, (None if epoch == epochs else backend.state())
        if on_epoch is not None:
            on_epoch(metrics)
    if best_state is not None:
        backend.load_state(best_state)
    return FitResult(history, best)
