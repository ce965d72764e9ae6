"""The NumPy reference dropout layer: forward and backward as the textbook writes them.

Inverted dropout (Srivastava et al., "Dropout: a simple way to prevent neural networks from
overfitting", JMLR 2014, with the rescale moved to training time as every modern framework does)::

    training:  y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p)     dL/dx = dL/dy * m / (1 - p)
    inference: y = x

Classic dropout, as in the paper::

    training:  y = x * m                                         dL/dx = dL/dy * m
    inference: y = x * (1 - p)

The mask ``m`` is the contract's ``keep_mask(mask_shape, p, seed=seed, stream=stream)``, so the
layer keeps only ``(seed, stream)`` for backward and regenerates ``m`` there.

The structured variants in this module differ only in the *mask shape*: the mask is drawn over
it and broadcast to the input (channel dropout draws over ``(N, C)``, locked dropout over
``(N, H)``, drop-path over ``(N,)``), exactly as the mask contract (docs/contract.md) specifies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dropkit._base import MaskDropout
from dropkit._validation import (
    check_float_array,
    check_key,
    check_mode,
    check_noise_shape,
    check_positive_int,
    check_probability,
    shown,
)
from dropkit.kernels import broadcast_dropout, dropout_apply, scale_kept

__all__ = [
    "ChannelDropout",
    "DropPath",
    "Dropout",
    "LockedDropout",
    "channel_dropout",
    "drop_path",
    "dropout",
    "locked_dropout",
]

Shape = tuple[int, ...]
MAX_DIMS = 64  # NumPy's (and torch's) most dimensions an array can have


def inverted_scale(p: float) -> float:
    """``1 / (1 - p)``, the inverted-dropout scale; 1 at ``p == 1``, where nothing is kept to scale."""
    return 1.0 if p == 1.0 else 1.0 / (1.0 - p)


def _training_scale(p: float, mode: str) -> float:
    """What kept elements are multiplied by in training: 1/(1-p) inverted, 1 classic."""
    return 1.0 if mode == "classic" else inverted_scale(p)


def _inference(x: np.ndarray, p: float, mode: str) -> np.ndarray:
    """Inverted dropout is the identity at inference; classic multiplies by ``1 - p``."""
    return x if mode == "inverted" else scale_kept(x, None, 1.0 - p)


def masked_dropout(
    x: np.ndarray, p: float, mask_shape: Shape, *, seed: int, stream: int, scale: float
) -> np.ndarray:
    """``x * m * scale`` with ``m = keep_mask(mask_shape, p, seed, stream)`` broadcast to ``x``.

    The one place the NumPy layers draw and apply a mask. A full-shape mask goes through the
    fast kernels (no mask is materialized); a smaller mask shape is drawn, then broadcast in one pass.
    """
    if mask_shape == x.shape:
        return dropout_apply(x, p, seed=seed, stream=stream, scale=scale)
    if p == 1.0:
        return np.zeros_like(x)
    return broadcast_dropout(x, p, mask_shape, seed=seed, stream=stream, scale=scale)


# --- mask shapes: the only thing that differs between the Bernoulli variants -----------------


def noise_mask_shape(shape: Shape, noise_shape: Any) -> Shape:
    """Keras' ``noise_shape``: x's rank, each entry 1 (shared), ``None`` or x's size (drawn)."""
    noise = check_noise_shape(noise_shape)
    if noise is None:
        return shape
    if len(noise) != len(shape) or any(n not in (None, 1, d) for n, d in zip(noise, shape, strict=False)):
        raise ValueError(
            f"noise_shape must have x's rank {len(shape)}, each entry 1, None or x's size; "
            f"got {shown(noise)} for x of shape {shape}"
        )
    return tuple(d if n is None else n for n, d in zip(noise, shape, strict=False))


def channel_mask_shape(shape: Shape, spatial_dims: int) -> Shape:
    """``(N, C, *spatial)`` -> ``(N, C, 1, ...)``; unbatched ``(C, *spatial)`` -> ``(C, 1, ...)``."""
    spatial_dims = check_positive_int("spatial_dims", spatial_dims, limit=MAX_DIMS)
    if len(shape) not in (spatial_dims + 1, spatial_dims + 2):
        raise ValueError(
            f"dropout{spatial_dims}d: Expected {spatial_dims + 1}D or {spatial_dims + 2}D input, "
            f"but received a {len(shape)}D input (channel dropout takes (N, C, *spatial) or "
            f"(C, *spatial) with {spatial_dims} spatial dimension(s))"
        )
    return shape[: len(shape) - spatial_dims] + (1,) * spatial_dims


def feature_mask_shape(shape: Shape) -> Shape:
    """torch's feature-noise shape (ATen's ``feature_dropout``, ``feature_alpha_dropout``):
    ``(N, C, *rest)`` -> ``(N, C, 1, ...)`` whatever the rank; a shape below 2-D is its own (callers check).

    >>> feature_mask_shape((8, 3, 5, 5)), feature_mask_shape((8, 3)), feature_mask_shape((4,))
    ((8, 3, 1, 1), (8, 3), (4,))
    """
    return shape[:2] + (1,) * (len(shape) - 2)


def locked_mask_shape(shape: Shape, batch_first: bool) -> Shape:
    """``(T, N, H)`` -> ``(1, N, H)``; with ``batch_first`` ``(N, T, H)`` -> ``(N, 1, H)``."""
    time_dim = 1 if batch_first else 0
    if len(shape) < time_dim + 2:
        layout = "(N, T, *features)" if batch_first else "(T, N, *features) or (T, *features)"
        raise ValueError(f"locked dropout expects x of shape {layout}, got a {len(shape)}D input")
    return (*shape[:time_dim], 1, *shape[time_dim + 1 :])


DROP_PATH_MODES = ("row", "batch")


def drop_path_mask_shape(shape: Shape, mode: str) -> Shape:
    """``"row"``: one decision per sample, ``(N, 1, ...)``; ``"batch"``: one for all, ``(1, ...)``."""
    if not isinstance(mode, str) or mode not in DROP_PATH_MODES:
        raise ValueError(f"mode must be 'row' or 'batch', got {shown(mode)}")
    if not shape:
        raise ValueError("drop path expects x with a batch dimension, got a 0D input")
    return (shape[0] if mode == "row" else 1,) + (1,) * (len(shape) - 1)


# --- functional forms ------------------------------------------------------------------------


def _bernoulli(
    x: Any,
    p: float,
    mode: str,
    training: bool,
    seed: int,
    stream: int,
    mask_shape_of: Callable[[Shape], Shape],
) -> np.ndarray:
    """The body every inverted/classic Bernoulli variant shares; only the mask shape differs."""
    x = check_float_array("x", x)
    p, mode = check_probability(p), check_mode(mode)
    mask_shape = mask_shape_of(x.shape)  # validates the input's rank before anything else
    seed, stream = check_key(seed, stream)
    if not training:
        return _inference(x, p, mode)
    return masked_dropout(x, p, mask_shape, seed=seed, stream=stream, scale=_training_scale(p, mode))


def dropout(
    x: Any,
    p: float = 0.5,
    *,
    training: bool = True,
    seed: int,
    stream: int = 0,
    mode: str = "inverted",
    noise_shape: Any = None,
) -> np.ndarray:
    """Dropout of ``x`` with the mask drawn from ``(seed, stream)``.

    ``y = x * m * scale``, ``m = keep_mask(noise_shape or x.shape, p, seed, stream)`` broadcast
    to ``x``; ``scale = 1/(1-p)`` (``mode="inverted"``) or ``1`` (``mode="classic"``). Not
    training: ``x`` itself (inverted) or ``x * (1 - p)`` (classic).

    Args:
        x: floating-point array (float16, float32 or float64), any shape.
        p: probability of *dropping* an element, in [0, 1].
        training: apply the mask (True) or the inference rule (False).
        seed, stream: unsigned 64-bit integers naming the mask.
        mode: ``"inverted"`` or ``"classic"``.
        noise_shape: Keras' mask shape: x's rank, 1 where the mask is shared (broadcast), ``None``
            or x's size where it is drawn. ``(N, 1, 1, C)`` on NHWC drops whole channels.

    Shape: output has ``x``'s shape and dtype.

    >>> dropout(np.ones((2, 4)), 0.5, seed=0).tolist()
    [[0.0, 2.0, 2.0, 2.0], [2.0, 0.0, 2.0, 0.0]]
    >>> dropout(np.ones((2, 4)), 0.5, seed=0, noise_shape=(None, 1)).tolist()
    [[0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]]
    """
    return _bernoulli(x, p, mode, training, seed, stream, lambda shape: noise_mask_shape(shape, noise_shape))


def channel_dropout(
    x: Any,
    p: float = 0.5,
    *,
    spatial_dims: int = 2,
    training: bool = True,
    seed: int,
    stream: int = 0,
    mode: str = "inverted",
) -> np.ndarray:
    """Channel (spatial) dropout: zero whole feature maps (torch's Dropout1d/2d/3d, Keras' SpatialDropout).

    Use it after convolutions, where neighbouring activations are correlated and element-wise
    dropout barely regularizes (Tompson et al. 2015). The mask is drawn over ``(N, C)``.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3 for torch's Dropout1d/2d/3d). It is
            explicit, so a 3-D input is never guessed at: with ``spatial_dims=2`` it is an
            unbatched ``(C, H, W)``, with ``spatial_dims=1`` a batched ``(N, C, L)``.

    Shape: ``(N, C, *spatial)`` or ``(C, *spatial)``; output the same.

    >>> channel_dropout(np.ones((1, 3, 2, 2)), 0.5, seed=0)[0, :, 0, 0].tolist()
    [0.0, 2.0, 2.0]
    """
    return _bernoulli(
        x, p, mode, training, seed, stream, lambda shape: channel_mask_shape(shape, spatial_dims)
    )


def locked_dropout(
    x: Any,
    p: float = 0.5,
    *,
    batch_first: bool = False,
    training: bool = True,
    seed: int,
    stream: int = 0,
    mode: str = "inverted",
) -> np.ndarray:
    """Locked (variational) dropout: one mask per sequence, shared by every time step.

    Use it on RNN inputs and outputs (Gal & Ghahramani 2016; AWD-LSTM's LockedDropout): a fresh
    mask per step would inject noise the recurrence amplifies. The mask is drawn over ``(N, H)``.

    Shape: ``(T, N, *features)``, or ``(N, T, *features)`` with ``batch_first``; output the same.

    >>> y = locked_dropout(np.ones((3, 1, 4)), 0.5, seed=0)
    >>> (y[0] == y[1]).all() and (y[1] == y[2]).all()
    np.True_
    """
    return _bernoulli(x, p, mode, training, seed, stream, lambda shape: locked_mask_shape(shape, batch_first))


def drop_path(
    x: Any,
    p: float = 0.0,
    *,
    mode: str = "row",
    scale_by_keep: bool = True,
    training: bool = True,
    seed: int,
    stream: int = 0,
) -> np.ndarray:
    """Drop path (stochastic depth, Huang et al. 2016): drop a residual branch for whole samples.

    Apply it to a residual branch's output before the addition: ``x + drop_path(f(x), p)``.
    ``mode="row"`` drops per sample (mask over ``(N,)``), ``"batch"`` the whole batch at once
    (torchvision's ``StochasticDepth``). Kept samples are scaled by ``1/(1-p)`` unless
    ``scale_by_keep=False`` (timm); inference is always the identity.

    Shape: ``(N, ...)``; output the same.

    >>> drop_path(np.ones((4, 2)), 0.5, seed=0)[:, 0].tolist()
    [0.0, 2.0, 2.0, 2.0]
    """
    x = check_float_array("x", x)
    p = check_probability(p)
    mask_shape = drop_path_mask_shape(x.shape, mode)
    seed, stream = check_key(seed, stream)
    if not training:
        return x
    scale = inverted_scale(p) if scale_by_keep else 1.0
    return masked_dropout(x, p, mask_shape, seed=seed, stream=stream, scale=scale)


# --- layers ----------------------------------------------------------------------------------


class Dropout(MaskDropout):
    """Dropout layer with explicit ``forward`` and ``backward`` (NumPy reference).

    Each training call takes the next stream (0, 1, 2, ...), so ``Dropout(p, seed=s)`` draws
    the same masks call by call in every run. Backward replays the latest forward's
    mask from ``(seed, stream)``; no float mask is stored.

    Args:
        p: probability of *dropping* an element, in [0, 1] (not the keep rate).
        mode: ``"inverted"`` (scale by 1/(1-p) in training) or ``"classic"`` (scale by 1-p at
            inference).
        seed: unsigned 64-bit seed; ``None`` draws a fresh one from OS entropy.
        noise_shape: optional mask shape, as in :func:`dropout`.

    Shape: any; output has the input's shape and dtype.

    >>> layer = Dropout(0.5, seed=0)
    >>> layer(np.ones((2, 4), np.float32))
    array([[0., 2., 2., 2.],
           [2., 0., 2., 0.]], dtype=float32)
    >>> layer.backward(np.ones((2, 4), np.float32)).tolist()
    [[0.0, 2.0, 2.0, 2.0], [2.0, 0.0, 2.0, 0.0]]
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        mode: str = "inverted",
        seed: int | None = None,
        noise_shape: Any = None,
    ) -> None:
        super().__init__(p, seed=seed)
        self.mode = check_mode(mode)
        self.noise_shape = check_noise_shape(noise_shape)

    def _mask_shape(self, shape: Shape) -> Shape:
        return noise_mask_shape(shape, self.noise_shape)

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        return dropout(x, p, seed=self.seed, stream=stream, mode=self.mode, noise_shape=self.noise_shape)

    def _inference(self, x: np.ndarray, p: float) -> np.ndarray:
        return _inference(x, p, self.mode)

    def _training_scale(self, p: float) -> float:
        return _training_scale(p, self.mode)

    def __repr__(self) -> str:
        shape = "" if self.noise_shape is None else f", noise_shape={self.noise_shape}"
        return f"Dropout(p={self.p}, mode={self.mode!r}, seed={self.seed}{shape})"


class ChannelDropout(Dropout):
    """Channel dropout layer: whole feature maps kept or dropped; see :func:`channel_dropout`.

    >>> layer = ChannelDropout(0.5, spatial_dims=1, seed=0)
    >>> layer(np.ones((1, 3, 2)))[0].tolist()
    [[0.0, 0.0], [2.0, 2.0], [2.0, 2.0]]
    """

    def __init__(
        self, p: float = 0.5, *, spatial_dims: int = 2, mode: str = "inverted", seed: int | None = None
    ) -> None:
        spatial_dims = check_positive_int("spatial_dims", spatial_dims, limit=MAX_DIMS)
        super().__init__(p, mode=mode, seed=seed)
        self.spatial_dims = spatial_dims

    def _mask_shape(self, shape: Shape) -> Shape:
        return channel_mask_shape(shape, self.spatial_dims)

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        return channel_dropout(
            x, p, spatial_dims=self.spatial_dims, seed=self.seed, stream=stream, mode=self.mode
        )

    def __repr__(self) -> str:
        return (
            f"ChannelDropout(p={self.p}, spatial_dims={self.spatial_dims}, mode={self.mode!r}, "
            f"seed={self.seed})"
        )


class LockedDropout(Dropout):
    """Locked (variational) dropout layer: one mask shared by all time steps; see :func:`locked_dropout`.

    >>> y = LockedDropout(0.5, seed=0)(np.ones((5, 2, 3)))
    >>> bool((y == y[0]).all())
    True
    """

    def __init__(
        self, p: float = 0.5, *, batch_first: bool = False, mode: str = "inverted", seed: int | None = None
    ) -> None:
        super().__init__(p, mode=mode, seed=seed)
        self.batch_first = bool(batch_first)

    def _mask_shape(self, shape: Shape) -> Shape:
        return locked_mask_shape(shape, self.batch_first)

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        return locked_dropout(
            x, p, batch_first=self.batch_first, seed=self.seed, stream=stream, mode=self.mode
        )

    def __repr__(self) -> str:
        return (
            f"LockedDropout(p={self.p}, batch_first={self.batch_first}, mode={self.mode!r}, seed={self.seed})"
        )


class DropPath(MaskDropout):
    """Drop-path (stochastic depth) layer; see :func:`drop_path`.

    >>> DropPath(0.5, seed=0)(np.ones((4, 2)))[:, 0].tolist()
    [0.0, 2.0, 2.0, 2.0]
    """

    def __init__(
        self, p: float = 0.0, *, mode: str = "row", scale_by_keep: bool = True, seed: int | None = None
    ) -> None:
        drop_path_mask_shape((1,), mode)  # validates mode
        super().__init__(p, seed=seed)
        self.mode = mode
        self.scale_by_keep = bool(scale_by_keep)

    def _mask_shape(self, shape: Shape) -> Shape:
        return drop_path_mask_shape(shape, self.mode)

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        return drop_path(
            x, p, mode=self.mode, scale_by_keep=self.scale_by_keep, seed=self.seed, stream=stream
        )

    def _inference(self, x: np.ndarray, p: float) -> np.ndarray:
        return x

    def _training_scale(self, p: float) -> float:
        return inverted_scale(p) if self.scale_by_keep else 1.0

    def __repr__(self) -> str:
        return (
            f"DropPath(p={self.p}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}, seed={self.seed})"
        )
