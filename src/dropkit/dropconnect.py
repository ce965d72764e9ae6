"""DropConnect (Wan, Zeiler, Zhang, LeCun, Fergus, "Regularization of neural networks using
DropConnect", ICML 2013), NumPy reference: drop *weights* instead of activations.

Each training call draws a fresh mask over the weight matrix, so every example in the batch sees
the same thinned layer. The mask is drawn over ``(out_features, in_features)`` — PyTorch's weight
layout — so this layer and ``dropkit.torch.DropConnectLinear`` drop the very same connections
for the same ``(seed, stream)``, although NumPy's ``Linear`` stores ``W`` as ``(in, out)``.
"""

from __future__ import annotations

import numpy as np

from dropkit._base import Stochastic
from dropkit._validation import check_probability
from dropkit.layers import dropout
from dropkit.nn import Linear, check_grad

__all__ = ["DropConnectLinear"]


class DropConnectLinear(Stochastic, Linear):
    """``y = x @ (W * M / (1 - p)) + b`` in training, ``x @ W + b`` at inference; the bias is not dropped.

    Use it where dropping activations is too coarse, e.g. on a classifier's last layers; it is
    the weight-level analogue of inverted dropout (same expectation, scale ``1/(1-p)``).

    Backward: ``dL/dW = (x.T @ dL/dy) * M / (1 - p)``, ``dL/dx = dL/dy @ (W * M / (1 - p)).T``,
    with ``M`` regenerated from ``(seed, stream)``.

    Shape: ``(N, in_features) -> (N, out_features)``.

    >>> layer = DropConnectLinear(4, 3, p=0.5, rng=np.random.default_rng(0), seed=0)
    >>> layer(np.ones((2, 4), np.float32)).shape
    (2, 3)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        p: float = 0.5,
        rng: np.random.Generator,
        seed: int | None = None,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        self.p = check_probability(p)
        Stochastic.__init__(self, seed=seed)  # the seed is checked before any weight is drawn
        Linear.__init__(self, in_features, out_features, rng=rng, dtype=dtype)
        self._drawn: tuple[int, float] | None = None  # (stream, p) of the latest forward, None at inference

    def _drop(self, weight_like: np.ndarray, stream: int, p: float) -> np.ndarray:
        """``weight_like * M * scale`` with ``M`` drawn over the transposed, torch-layout shape."""
        return dropout(weight_like.T, p, seed=self.seed, stream=stream).T

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x @ (W * M / (1 - p)) + b`` with a fresh stream in training, ``x @ W + b`` at inference."""
        p = check_probability(self.p)  # p may have been reassigned (a schedule): before any state moves
        if not self.training:
            y = super().forward(x)
            self._drawn = None  # only once the inference call has succeeded
            return y
        x = self._check_input(x)
        stream = self.calls
        y = x @ self._drop(self.weight.value, stream, p) + self.bias.value
        # Counted once the output exists: a seed reassigned out of range or a failed matmul moves nothing.
        self.calls, self._x, self._drawn = stream + 1, x, (stream, p)
        return y

    __call__ = forward

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """``dL/dx``; stores ``dL/dW`` (masked by the latest forward's ``M``) and ``dL/db``."""
        if self._drawn is None:  # before any forward (Linear raises), or after an inference one
            return super().backward(grad)
        stream, p = self._drawn
        grad = check_grad(grad, (self._x.shape[0], self.out_features))
        self.weight.grad = self._drop(self._x.T @ grad, stream, p)
        self.bias.grad = grad.sum(axis=0)
        return grad @ self._drop(self.weight.value, stream, p).T

    def __repr__(self) -> str:
        return f"DropConnectLinear({self.in_features}, {self.out_features}, p={self.p}, seed={self.seed})"
