"""The NumPy layers' one base: a seed, a training-call counter, train/eval, and backward by replay.

:class:`Stochastic` is what every stochastic NumPy layer keeps -- the seed naming its masks and the
count of its training calls (call k uses stream k) -- and :class:`MaskDropout` adds the forward and
backward protocol of the dropout layers: a training forward draws with a fresh stream and counts
the call only once its output exists, and backward replays the forward's mask from
``(seed, stream)`` (docs/contract.md). The torch face's twin is ``dropkit.torch._base``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from dropkit._validation import check_float_array, check_keep_mask, check_probability, check_uint64
from dropkit.kernels import scale_kept

__all__ = ["MaskDropout", "Stochastic"]

Shape = tuple[int, ...]


class Stochastic:
    """A seed (a random 64-bit one when ``None``), a training flag and a training-call counter.

    With the seed fixed, the k-th training call (``calls == k`` before it) uses stream k, so a run
    replays exactly; ``calls`` is settable to resume mid-way.
    """

    def __init__(self, *, seed: int | None) -> None:
        self.seed = secrets.randbits(64) if seed is None else check_uint64("seed", seed)
        self.training = True
        self.calls = 0  # training calls so far; the next one uses stream `calls`

    def train(self, mode: bool = True) -> Any:
        """Set training mode (``forward``'s default); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> Any:
        """Set inference mode; returns ``self``."""
        return self.train(False)


@dataclass(frozen=True)
class Replay:
    """All backward needs to rebuild a forward's mask: O(1) state, or a 1-bit packed mask."""

    shape: Shape
    p: float
    stream: int | None = None  # the mask is regenerated from (seed, stream) ...
    packed_mask: np.ndarray | None = None  # ... or a caller-supplied mask, 1 bit per element
    mask_shape: Shape = ()
    inference: bool = False  # ... or there was none: an inference forward, a linear map


class MaskDropout(Stochastic):
    """Shared machinery of the stochastic layers: streams, train/eval, backward by replay.

    A subclass says how its mask is shaped (``_mask_shape``), how a training call draws and
    applies it (``_apply``, its functional form), what inference is, and what backward applies
    to the gradient (by default the same op: the derivative of ``x * m * s`` is ``m * s``).
    """

    accepts_mask = True  # False for layers whose randomness is not a Bernoulli keep mask

    def __init__(self, p: float, *, seed: int | None) -> None:
        self.p = check_probability(p)
        super().__init__(seed=seed)
        self._replay: Replay | None = None

    def _mask_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        raise NotImplementedError

    def _inference(self, x: np.ndarray, p: float) -> np.ndarray:
        raise NotImplementedError

    def _training_scale(self, p: float) -> float:
        raise NotImplementedError

    def _grad(self, grad: np.ndarray, p: float, stream: int) -> np.ndarray:
        return self._apply(grad, p, stream)

    def _apply_keep(self, x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
        # p == 1 drops everything, whatever mask the caller hands in (the scale would be infinite).
        return np.zeros_like(x) if p == 1.0 else scale_kept(x, keep, self._training_scale(p))

    _grad_keep = _apply_keep

    def _check_p(self, p: Any) -> float:
        return check_probability(p)

    def forward(self, x: Any, training: bool | None = None, *, mask: Any = None) -> np.ndarray:
        """Apply the layer to ``x``.

        Args:
            x: floating-point array.
            training: ``None`` follows ``train()``/``eval()`` (training by default).
            mask: optional 0/1 keep mask of the layer's mask shape to use instead of drawing one
                (for teaching and tests); it does not advance the stream.
        """
        x = check_float_array("x", x)
        self._check_p(self.p)  # p may have been reassigned since construction (a schedule)
        mask_shape = self._mask_shape(x.shape)
        if mask is not None and not self.accepts_mask:
            raise TypeError(f"{type(self).__name__} draws no keep mask, so mask= is not accepted")
        keep = None if mask is None else check_keep_mask(mask, mask_shape)
        # State moves only once the output exists, so a call that raises (a seed reassigned out of
        # range, memory) leaves the counter and the replay of the previous call as they were.
        if not (self.training if training is None else training):
            y = self._inference(x, self.p)
            self._replay = Replay(x.shape, self.p, inference=True)
            return y
        if keep is not None:
            y = self._apply_keep(x, keep, self.p)
            self._replay = Replay(x.shape, self.p, packed_mask=np.packbits(keep), mask_shape=mask_shape)
            return y
        stream = self.calls
        y = self._apply(x, self.p, stream)
        self.calls, self._replay = stream + 1, Replay(x.shape, self.p, stream=stream)
        return y

    __call__ = forward

    def backward(self, grad: Any) -> np.ndarray:
        """``dL/dx`` from ``dL/dy`` for the latest forward: its randomness replayed, or inference's map."""
        replay = self._replay
        if replay is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before any forward; run forward first")
        grad = check_float_array("grad", grad)
        if grad.shape != replay.shape:
            raise ValueError(f"grad must have the forward input's shape {replay.shape}, got {grad.shape}")
        if replay.inference:  # identity, or classic dropout's 1 - p: linear, its own derivative
            return self._inference(grad, replay.p)
        if replay.packed_mask is not None:
            size = int(np.prod(replay.mask_shape))
            keep = np.unpackbits(replay.packed_mask, count=size).astype(bool)
            return self._grad_keep(grad, keep.reshape(replay.mask_shape), replay.p)
        return self._grad(grad, replay.p, replay.stream)
