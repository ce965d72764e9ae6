"""The PyTorch backend of ``dropkit train --backend torch``: the NumPy MLP's twin, layer for layer.

:func:`to_torch` turns a :class:`dropkit.nn.Sequential` into a ``torch.nn.Sequential`` with the same
weights (``nn.Linear`` stores ``W.T``), the same dropout seeds and call counts
(:class:`dropkit.torch.Dropout`), so the torch run starts where the NumPy run starts and draws the
very same masks batch for batch; :class:`TorchBackend` trains it with ``torch.optim.SGD`` and
softmax cross-entropy, the loss and update of :class:`dropkit.experiments.training.NumpyBackend`.

This module imports torch; :mod:`dropkit.experiments` imports it only when the torch backend is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

import dropkit.layers
import dropkit.nn
from dropkit.torch.modules import Dropout

__all__ = ["TorchBackend", "thread_limit", "to_torch"]


def _convert(layer: object) -> nn.Module:
    if isinstance(layer, dropkit.nn.Linear):
        linear = nn.Linear(
            layer.in_features, layer.out_features, dtype=torch.from_numpy(layer.weight.value).dtype
        )
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight.value.T))
            linear.bias.copy_(torch.from_numpy(layer.bias.value))
        return linear
    if isinstance(layer, dropkit.nn.ReLU):
        return nn.ReLU()
    if isinstance(layer, dropkit.nn.Flatten):
        return nn.Flatten()
    if type(layer) is dropkit.layers.Dropout and layer.mode == "inverted" and layer.noise_shape is None:
        dropout = Dropout(layer.p, seed=layer.seed)
        dropout.calls = layer.calls
        return dropout
    raise TypeError(
        f"to_torch converts Linear, ReLU, Flatten and inverted elementwise Dropout layers, got {layer!r}"
    )


def to_torch(model: dropkit.nn.Sequential) -> nn.Sequential:
    """The torch twin of a NumPy MLP: same weights, same dropout seeds and streams, same mode.

    >>> from dropkit.experiments.training import Seeds, build_mlp
    >>> to_torch(build_mlp(64, 10, hidden=32, p1=0.5, p2=0.2, seeds=Seeds.from_seed(0)))[3]
    Dropout(p=0.5, inplace=False, seed=...)
    """
    twin = nn.Sequential(*(_convert(layer) for layer in model.layers))
    return twin.train(model.training)


class TorchBackend:
    """A ``torch.nn`` model with mean softmax cross-entropy and plain SGD (no momentum), on CPU.

    Implements the ``Backend`` protocol of :mod:`dropkit.experiments.training`: NumPy in, NumPy out.
    """

    def __init__(self, model: nn.Module, lr: float) -> None:
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    @classmethod
    def from_numpy(cls, model: dropkit.nn.Sequential, lr: float) -> TorchBackend:
        """The backend of :func:`to_torch`'s twin of ``model``."""
        return cls(to_torch(model), lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One SGD step on ``(x, y)`` with dropout on; returns the batch's mean loss."""
        self.model.train()
        loss = nn.functional.cross_entropy(self.model(torch.from_numpy(x)), torch.from_numpy(y).long())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def logits(self, x: np.ndarray, *, dropout: bool = False) -> np.ndarray:
        """A forward pass without any update; ``dropout=True`` draws fresh masks (MC dropout)."""
        self.model.train(dropout)
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the model's ``state_dict``."""
        return {key: value.detach().clone() for key, value in self.model.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights copied by :meth:`state`."""
        self.model.load_state_dict(state)


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """Run torch's CPU operators on ``threads`` threads inside the block (``None``: leave them)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
