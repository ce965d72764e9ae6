"""The NumPy reference dropout layer: forward and backward as the textbook writes them.

Inverted dropout (Srivastava et al., "Dropout: a simple way to prevent neural networks from
overfitting", JMLR 2014, with the rescale moved to training time as every modern framework does)::

    training:  y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p)     dL/dx = dL/dy * m / (1 - p)
    inference: y = x

Classic dropout, as in the paper::

    training:  y = x * m                                         dL/dx = dL/dy * m
    inference: y = x * (1 - p)

The mask ``m`` is the contract's ``keep_mask(shape, p, seed=seed, stream=stream)``, so the
layer keeps only ``(seed, stream)`` for backward and regenerates ``m`` there.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from dropkit._validation import (
    check_float_array,
    check_keep_mask,
    check_mode,
    check_probability,
    check_uint64,
)
from dropkit.kernels import dropout_apply, scale_kept

__all__ = ["Dropout", "dropout"]


def _training_scale(p: float, mode: str) -> float:
    """What kept elements are multiplied by in training: 1/(1-p) inverted, 1 classic."""
    if mode == "classic" or p == 1.0:  # p == 1 keeps nothing, so the scale is never used
        return 1.0
    return 1.0 / (1.0 - p)


def _inference(x: np.ndarray, p: float, mode: str) -> np.ndarray:
    """Inverted dropout is the identity at inference; classic multiplies by ``1 - p``."""
    return x if mode == "inverted" else scale_kept(x, None, 1.0 - p)


def dropout(
    x: Any,
    p: float = 0.5,
    *,
    training: bool = True,
    seed: int,
    stream: int = 0,
    mode: str = "inverted",
) -> np.ndarray:
    """Dropout of ``x`` with the mask drawn from ``(seed, stream)``.

    ``y = x * keep_mask(x.shape, p, seed=seed, stream=stream) * scale`` with ``scale = 1/(1-p)``
    (``mode="inverted"``) or ``1`` (``mode="classic"``). Not training: ``x`` itself (inverted)
    or ``x * (1 - p)`` (classic).

    Args:
        x: floating-point array (float16, float32 or float64), any shape.
        p: probability of *dropping* an element, in [0, 1].
        training: apply the mask (True) or the inference rule (False).
        seed, stream: unsigned 64-bit integers naming the mask.
        mode: ``"inverted"`` or ``"classic"``.

    Shape: output has ``x``'s shape and dtype.

    >>> dropout(np.ones((2, 4)), 0.5, seed=0).tolist()
    [[0.0, 2.0, 2.0, 2.0], [2.0, 0.0, 2.0, 0.0]]
    """
    x = check_float_array("x", x)
    p, mode = check_probability(p), check_mode(mode)
    if not training:
        return _inference(x, p, mode)
    return dropout_apply(x, p, seed=seed, stream=stream, scale=_training_scale(p, mode))


@dataclass(frozen=True)
class _Replay:
    """All backward needs to rebuild a forward's mask: O(1) state, or a 1-bit packed mask."""

    shape: tuple[int, ...]
    p: float
    scale: float
    stream: int | None = None  # the mask is keep_mask(shape, p, seed, stream) ...
    packed_mask: np.ndarray | None = None  # ... or a caller-supplied mask, 1 bit per element


class Dropout:
    """Dropout layer with explicit ``forward`` and ``backward`` (NumPy reference).

    Each training call takes the next stream (0, 1, 2, ...), so ``Dropout(p, seed=s)`` draws
    the same masks call by call in every run. Backward replays the latest training forward's
    mask from ``(seed, stream)``; no float mask is stored.

    Args:
        p: probability of *dropping* an element, in [0, 1] (not the keep rate).
        mode: ``"inverted"`` (scale by 1/(1-p) in training) or ``"classic"`` (scale by 1-p at
            inference).
        seed: unsigned 64-bit seed; ``None`` draws a fresh one from OS entropy.

    Shape: any; output has the input's shape and dtype.

    >>> layer = Dropout(0.5, seed=0)
    >>> layer(np.ones((2, 4), np.float32))
    array([[0., 2., 2., 2.],
           [2., 0., 2., 0.]], dtype=float32)
    >>> layer.backward(np.ones((2, 4), np.float32)).tolist()
    [[0.0, 2.0, 2.0, 2.0], [2.0, 0.0, 2.0, 0.0]]
    """

    def __init__(self, p: float = 0.5, *, mode: str = "inverted", seed: int | None = None):
        self.p = check_probability(p)
        self.mode = check_mode(mode)
        self.seed = secrets.randbits(64) if seed is None else check_uint64("seed", seed)
        self.training = True
        self.calls = 0  # training calls so far; the next one uses stream `calls`
        self._replay: _Replay | None = None

    def train(self, mode: bool = True) -> Dropout:
        """Set training mode (``forward``'s default); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> Dropout:
        """Set inference mode; returns ``self``."""
        return self.train(False)

    def forward(self, x: Any, training: bool | None = None, *, mask: Any = None) -> np.ndarray:
        """Apply dropout to ``x``.

        Args:
            x: floating-point array, any shape.
            training: ``None`` follows ``train()``/``eval()`` (training by default).
            mask: optional 0/1 keep mask of ``x``'s shape to use instead of drawing one (for
                teaching and tests); it does not advance the stream.
        """
        x = check_float_array("x", x)
        keep = None if mask is None else check_keep_mask(mask, x.shape)
        if not (self.training if training is None else training):
            return _inference(x, self.p, self.mode)
        scale = _training_scale(self.p, self.mode)
        if keep is not None:
            self._replay = _Replay(x.shape, self.p, scale, packed_mask=np.packbits(keep))
            return scale_kept(x, keep, scale)
        stream, self.calls = self.calls, self.calls + 1
        self._replay = _Replay(x.shape, self.p, scale, stream=stream)
        return dropout(x, self.p, seed=self.seed, stream=stream, mode=self.mode)

    __call__ = forward

    def backward(self, grad: Any) -> np.ndarray:
        """``dL/dx = dL/dy * m * scale``, with the latest training forward's mask ``m``."""
        replay = self._replay
        if replay is None:
            raise RuntimeError("Dropout.backward called before any training forward; run forward first")
        grad = check_float_array("grad", grad)
        if grad.shape != replay.shape:
            raise ValueError(f"grad must have the forward input's shape {replay.shape}, got {grad.shape}")
        if replay.packed_mask is not None:
            keep = np.unpackbits(replay.packed_mask, count=grad.size).astype(bool)
            return scale_kept(grad, keep.reshape(grad.shape), replay.scale)
        # The derivative of x -> x * m * scale is m * scale: the same op applied to grad.
        return dropout_apply(grad, replay.p, seed=self.seed, stream=replay.stream, scale=replay.scale)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p}, mode={self.mode!r}, seed={self.seed})"
