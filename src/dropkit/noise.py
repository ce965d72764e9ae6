"""Dropout's noise variants: Gaussian dropout and alpha dropout, NumPy reference.

Gaussian dropout (Srivastava et al. 2014, section 10) multiplies by ``N(1, p/(1-p))`` noise
instead of a scaled Bernoulli mask: same mean and variance, no zeros. Alpha dropout
(Klambauer et al., "Self-normalizing neural networks", 2017) sets dropped units to SELU's
negative saturation and applies an affine correction, so a SELU network keeps mean 0 and
variance 1. Both draw from the contract's Philox words (:mod:`dropkit.philox`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from dropkit import kernels
from dropkit._base import MaskDropout
from dropkit._validation import (
    check_dims,
    check_float_array,
    check_key,
    check_probability,
    check_shard_arguments,
)
from dropkit.kernels import apply_keep, keep_mask, random_range
from dropkit.kernels.reference import compute_dtype
from dropkit.layers import Shape, feature_mask_shape, masked_dropout
from dropkit.philox import random_bits
from dropkit.sharding import Shard

__all__ = [
    "SELU_ALPHA_PRIME",
    "AlphaDropout",
    "GaussianDropout",
    "alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
]

TWO_TO_MINUS_32 = 2.0**-32
SELU_ALPHA_PRIME = 1.7580993408473766  # -SELU's negative saturation, lambda * alpha (torch's constant)


def check_gaussian_p(p: Any) -> float:
    p = check_probability(p)
    if p == 1.0:
        raise ValueError(
            "Gaussian dropout needs p in [0, 1): its noise variance p/(1-p) is infinite at p = 1"
        )
    return p


def box_muller(w0: np.ndarray, w1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two standard normals ``(r cos t, r sin t)`` of each pair of 32-bit words (float64)."""
    u0, u1 = (w0.astype(np.float64) + 0.5) * TWO_TO_MINUS_32, (w1.astype(np.float64) + 0.5) * TWO_TO_MINUS_32
    radius, angle = np.sqrt(-2.0 * np.log(u0)), 2.0 * np.pi * u1
    return radius * np.cos(angle), radius * np.sin(angle)


def gaussian_noise(
    shape: Shape,
    p: float,
    *,
    seed: int,
    stream: int,
    global_shape: Shape | None = None,
    offsets: Shape | None = None,
) -> np.ndarray:
    """Multiplicative noise ``1 + sqrt(p/(1-p)) * z`` with ``z ~ N(0, 1)``, float64, of ``shape``.

    ``z`` comes from the contract's words by Box–Muller. Elements ``2k`` and ``2k + 1`` (flat,
    row-major) share the pair of words ``w0 = bits(2k)``, ``w1 = bits(2k + 1)``::

        u0 = (w0 + 0.5) / 2**32,  u1 = (w1 + 0.5) / 2**32         # in (0, 1), never 0 or 1
        z(2k) = sqrt(-2 ln u0) cos(2 pi u1),  z(2k + 1) = sqrt(-2 ln u0) sin(2 pi u1)

    With ``global_shape`` and ``offsets``, ``shape`` is the slice at ``offsets`` of a tensor of
    ``global_shape`` (a :class:`dropkit.sharding.Shard`) and gets that slice of its noise.

    >>> noise = gaussian_noise((100_000,), 0.5, seed=0, stream=0)
    >>> round(float(noise.mean()), 2), round(float(noise.std()), 2)
    (1.0, 1.0)
    >>> bool((gaussian_noise((2, 3), 0.5, seed=0, stream=0, global_shape=(4, 3), offsets=(1, 0))
    ...       == gaussian_noise((4, 3), 0.5, seed=0, stream=0)[1:3]).all())
    True
    """
    p = check_gaussian_p(p)
    one_dim = isinstance(shape, numbers.Integral) and not isinstance(shape, bool)
    shape = check_dims("shape", (shape,) if one_dim else shape)
    seed, stream = check_key(seed, stream)
    if check_shard_arguments(global_shape, offsets):
        index = Shard(global_shape, offsets, shape).global_indexes()
        odd = (index & np.uint64(1)).astype(bool)
        first = index - odd  # the even index that starts the element's pair
        cos, sin = box_muller(random_bits(seed, stream, first), random_bits(seed, stream, first + 1))
        z = np.where(odd, sin, cos)
    else:
        n = math.prod(shape)
        words = random_range(seed, stream, 0, n + (n & 1))
        return normals_of_pairs(words, n, scale=np.sqrt(p / (1.0 - p))).reshape(shape)
    return (1.0 + np.sqrt(p / (1.0 - p)) * z).reshape(shape)


def normals_of_pairs(words: np.ndarray, n: int, *, scale: float | None = None) -> np.ndarray:
    """The first ``n`` of the :func:`box_muller` normals of consecutive word pairs ``(words[2k],
    words[2k + 1])``, interleaved (float64); ``1 + scale * z`` each with ``scale``.

    The arithmetic around NumPy's ``log``, ``cos`` and ``sin`` runs in numba where it is available
    (:mod:`dropkit.kernels.cpu_variants`), rounding as NumPy does, so the values are the same.
    """
    module = kernels.variants_module() if kernels.USE_NUMBA else None
    if module is None:
        z = np.stack(box_muller(words[0::2], words[1::2]), axis=-1).ravel()[:n]
        return z if scale is None else 1.0 + scale * z
    threaded = kernels.threaded(words.size)
    u0, angle = np.empty(words.size // 2), np.empty(words.size // 2)
    (module.box_muller_inputs if threaded else module.box_muller_inputs_serial)(words, u0, angle)
    np.log(u0, out=u0)
    cos = np.cos(angle)
    sin = np.sin(angle, out=angle)
    out = np.empty(n)
    normals = module.box_muller_normals if threaded else module.box_muller_normals_serial
    normals(u0, cos, sin, 0.0 if scale is None else float(scale), scale is not None, out)
    return out


def _times(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``x * factor`` formed in float32 (float64 for float64 data), rounded once to x's dtype."""
    wide = compute_dtype(x.dtype)
    return np.multiply(x, factor.astype(wide), dtype=wide).astype(x.dtype, copy=False)


def gaussian_dropout(
    x: Any, p: float = 0.5, *, training: bool = True, seed: int, stream: int = 0
) -> np.ndarray:
    """Gaussian dropout: ``y = x * eps``, ``eps ~ N(1, p/(1-p))``; inference is the identity.

    Use it where Bernoulli dropout's exact zeros hurt, or to match Keras' ``GaussianDropout``:
    it has the mean and variance of inverted dropout with rate ``p`` (Srivastava et al. 2014).

    Args:
        p: the dropout rate it imitates, in [0, 1).

    Shape: any; output the same.

    >>> gaussian_dropout(np.ones(4), 0.0, seed=0).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    x = check_float_array("x", x)
    p = check_gaussian_p(p)
    seed, stream = check_key(seed, stream)
    if not training or p == 0.0:
        return x
    return _times(x, gaussian_noise(x.shape, p, seed=seed, stream=stream))


def alpha_constants(p: float) -> tuple[float, float, float]:
    """torch's affine correction: ``a = ((1 - p)(1 + p alpha'^2))^(-1/2)``, kept and dropped offsets."""
    a = 1.0 / np.sqrt((SELU_ALPHA_PRIME**2 * p + 1.0) * (1.0 - p))
    return a, SELU_ALPHA_PRIME * a * p, -SELU_ALPHA_PRIME * a * (1.0 - p)


def alpha_mask_shape(shape: Shape, feature: bool) -> Shape:
    if not feature:
        return shape
    if len(shape) < 2:
        raise ValueError(f"feature alpha dropout expects x of shape (N, C, ...), got a {len(shape)}D input")
    return feature_mask_shape(shape)


def _alpha_apply(x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
    a, kept_offset, dropped_value = alpha_constants(p)
    return apply_keep(x, keep, a, offset=kept_offset, dropped=dropped_value)


def alpha_dropout(
    x: Any,
    p: float = 0.5,
    *,
    feature: bool = False,
    training: bool = True,
    seed: int,
    stream: int = 0,
) -> np.ndarray:
    """Alpha dropout for SELU networks (torch's ``alpha_dropout`` / ``feature_alpha_dropout``).

    ``y = a * (x * m + alpha' * (1 - m)) + a * alpha' * p`` with ``alpha' = -1.7580993408473766``
    folded into constants: kept ``a x + a alpha p``, dropped ``-a alpha (1 - p)``. ``p == 1``
    gives zeros, as torch does. With ``feature=True`` whole channels are dropped (mask over
    ``(N, C)``). Use it in place of dropout in self-normalizing (SELU) networks.

    Shape: any (``(N, C, ...)`` with ``feature``); output the same.

    >>> y = alpha_dropout(np.random.default_rng(0).standard_normal(100_000), 0.2, seed=0)
    >>> round(float(y.mean()), 2), round(float(y.std()), 2)
    (0.0, 1.0)
    """
    x = check_float_array("x", x)
    p = check_probability(p)
    mask_shape = alpha_mask_shape(x.shape, feature)
    seed, stream = check_key(seed, stream)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return np.zeros_like(x)
    return _alpha_apply(x, keep_mask(mask_shape, p, seed=seed, stream=stream), p)


class GaussianDropout(MaskDropout):
    """Gaussian dropout layer; see :func:`gaussian_dropout`. Backward: ``dL/dx = dL/dy * eps``.

    >>> layer = GaussianDropout(0.5, seed=0)
    >>> y = layer(np.ones(3))
    >>> bool((layer.backward(np.ones(3)) == y).all())
    True
    """

    accepts_mask = False

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        check_gaussian_p(p)
        super().__init__(p, seed=seed)

    def _check_p(self, p: Any) -> float:
        return check_gaussian_p(p)

    def _mask_shape(self, shape: Shape) -> Shape:
        return shape

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        return gaussian_dropout(x, p, seed=self.seed, stream=stream)

    def _inference(self, x: np.ndarray, p: float) -> np.ndarray:
        return x

    def __repr__(self) -> str:
        return f"GaussianDropout(p={self.p}, seed={self.seed})"


class AlphaDropout(MaskDropout):
    """Alpha dropout layer; see :func:`alpha_dropout`. Backward: ``dL/dx = dL/dy * m * a``.

    >>> AlphaDropout(0.5, seed=0).eval()(np.ones(2)).tolist()
    [1.0, 1.0]
    """

    def __init__(self, p: float = 0.5, *, feature: bool = False, seed: int | None = None) -> None:
        super().__init__(p, seed=seed)
        self.feature = bool(feature)

    def _mask_shape(self, shape: Shape) -> Shape:
        return alpha_mask_shape(shape, self.feature)

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        return alpha_dropout(x, p, feature=self.feature, seed=self.seed, stream=stream)

    def _inference(self, x: np.ndarray, p: float) -> np.ndarray:
        return x

    def _training_scale(self, p: float) -> float:
        return 0.0 if p == 1.0 else float(alpha_constants(p)[0])

    def _grad(self, grad: np.ndarray, p: float, stream: int) -> np.ndarray:
        if p == 0.0:
            return grad
        mask_shape = self._mask_shape(grad.shape)
        return masked_dropout(
            grad, p, mask_shape, seed=self.seed, stream=stream, scale=self._training_scale(p)
        )

    def _apply_keep(self, x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
        return np.zeros_like(x) if p == 1.0 else _alpha_apply(x, keep, p)

    def __repr__(self) -> str:
        return f"AlphaDropout(p={self.p}, feature={self.feature}, seed={self.seed})"
