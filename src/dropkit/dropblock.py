"""DropBlock (Ghiasi, Lin, Le, "DropBlock: a regularization method for convolutional networks",
NeurIPS 2018), NumPy reference, with timm's block size and gamma.

Dropping single activations of a feature map barely regularizes a CNN: neighbours carry the
same information. DropBlock drops contiguous ``block_size x block_size`` squares instead. Block
centres are drawn with the seed rate ``gamma`` (the contract's keep decision with ``p = gamma``:
a centre where the element is *not* kept), only where the whole block fits in the map, each
centre's block is zeroed, and the survivors are rescaled by ``numel / kept`` as timm does.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from dropkit._base import MaskDropout
from dropkit._validation import (
    FLOAT_MAX,
    check_dims,
    check_float_array,
    check_key,
    check_positive_int,
    check_probability,
    shown,
)
from dropkit.kernels import keep_mask, random_range, scale_kept
from dropkit.layers import Shape
from dropkit.noise import normals_of_pairs

__all__ = [
    "DropBlock2d",
    "drop_block2d",
    "drop_block_keep",
    "dropped_blocks",
    "fitted_blocks",
    "normal_words",
]


def check_block(shape: Shape, block_size: Any, gamma_scale: Any, batchwise: bool) -> Shape:
    check_positive_int("block_size", block_size)
    if (
        isinstance(gamma_scale, bool)
        or not isinstance(gamma_scale, numbers.Real)
        or not 0 < gamma_scale <= FLOAT_MAX
    ):
        raise ValueError(f"gamma_scale must be a positive number, got {shown(gamma_scale)}")
    if len(shape) != 4:
        raise ValueError(f"DropBlock2d expects x of shape (N, C, H, W), got a {len(shape)}D input")
    return (1, *shape[1:]) if batchwise else shape


def seed_rate(p: float, block_size: int, height: int, width: int, gamma_scale: float = 1.0) -> float:
    """timm's gamma: the rate of block centres that makes the dropped fraction about ``p``.

    ``gamma = gamma_scale * p * H * W / k**2 / ((H - k + 1) * (W - k + 1))`` with
    ``k = min(block_size, H, W)`` (timm clips ``k`` for the pooling but not in this formula;
    dropkit uses the clipped ``k`` in both), capped at 1.
    """
    k = min(block_size, height, width)
    return min(1.0, gamma_scale * p * height * width / k**2 / ((height - k + 1) * (width - k + 1)))


def drop_block_keep(
    shape: Shape,
    p: float,
    *,
    block_size: int = 7,
    gamma_scale: float = 1.0,
    batchwise: bool = False,
    seed: int,
    stream: int = 0,
) -> np.ndarray:
    """DropBlock's keep mask (bool) for an ``(N, C, H, W)`` input: ``(N, C, H, W)``, or
    ``(1, C, H, W)`` with ``batchwise`` (one mask for the whole batch).

    >>> drop_block_keep((1, 1, 5, 5), 0.3, block_size=3, seed=1).astype(int)[0, 0]
    array([[1, 1, 1, 1, 1],
           [1, 1, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [1, 1, 0, 0, 0],
           [1, 1, 1, 1, 1]])
    """
    mask_shape = check_block(check_dims("shape", shape), block_size, gamma_scale, batchwise)
    p = check_probability(p)
    seed, stream = check_key(seed, stream)
    block_size, gamma_scale = int(block_size), float(gamma_scale)
    if 0 in mask_shape:  # nothing to drop, and the seed rate would divide by the empty map's area
        return keep_mask(mask_shape, 0.0, seed=seed, stream=stream)
    height, width = mask_shape[-2:]
    k = min(block_size, height, width)
    gamma = seed_rate(p, block_size, height, width, gamma_scale)
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    fits = (
        (rows >= k // 2) & (rows < height - (k - 1) // 2) & (cols >= k // 2) & (cols < width - (k - 1) // 2)
    )
    centres = ~keep_mask(mask_shape, gamma, seed=seed, stream=stream) & fits
    return ~_spread(_spread(centres, k, axis=2), k, axis=3)


def _spread(
    centres: np.ndarray, k: int, axis: int, front: int | None = None, back: int | None = None
) -> np.ndarray:
    """Mark the ``k`` positions a centre's block covers along ``axis``: output ``j`` is marked when any
    of ``padded[j : j + k]`` is a centre, ``padded`` the centres with ``front`` zeros before and ``back``
    after (by default ``(k - 1) // 2`` and ``k // 2``: a centre at ``i`` covers ``i - k//2`` to
    ``i - k//2 + k - 1``, clipped, and the axis keeps its length). Spreading rows, then columns, gives the
    ``k x k`` square in O(k) per element: the OR of ``k`` shifted slices.
    """
    front = (k - 1) // 2 if front is None else front
    back = k // 2 if back is None else back
    axis %= centres.ndim
    lead = (slice(None),) * axis
    size = centres.shape[axis]
    shape = list(centres.shape)
    shape[axis] = size + front + back
    padded = np.zeros(shape, dtype=bool)
    padded[(*lead, slice(front, front + size))] = centres
    length = shape[axis] - k + 1
    spread = padded[(*lead, slice(0, length))].copy()
    for i in range(1, k):
        spread |= padded[(*lead, slice(i, i + length))]
    return spread


def dropped_blocks(
    shape: Shape, p: float, block_size: int, gamma_scale: float, *, seed: int, stream: int = 0
) -> np.ndarray:
    """timm >= 1.0.23's DropBlock layout: the *dropped* elements (bool) of a mask of ``shape``
    ``(N, C or 1, H, W)``.

    Every position may be a block centre (``~keep_mask(shape, gamma)``), at timm's rate
    ``gamma = gamma_scale * p * H W / (kh kw) / ((H - kh + 1)(W - kw + 1))`` with ``kh = min(k, H)``,
    ``kw = min(k, W)`` (capped at 1); a centre at ``i`` drops ``i - k//2 .. i - k//2 + k - 1`` along each
    axis, clipped at the edges -- timm's ``max_pool2d`` with padding ``k//2`` and its even-kernel crop.

    >>> dropped_blocks((1, 1, 4, 4), 0.3, 3, 1.0, seed=1).astype(int)[0, 0]
    array([[0, 0, 0, 0],
           [0, 0, 0, 0],
           [1, 1, 1, 1],
           [1, 1, 1, 1]])
    """
    height, width = shape[-2:]
    if 0 in shape:
        return np.zeros(shape, dtype=bool)
    kh, kw = min(block_size, height), min(block_size, width)
    gamma = min(1.0, gamma_scale * p * height * width / (kh * kw) / ((height - kh + 1) * (width - kw + 1)))
    centres = ~keep_mask(shape, gamma, seed=seed, stream=stream)
    return _spread(_spread(centres, kh, axis=-2), kw, axis=-1)


def fitted_blocks(shape: Shape, p: float, block_size: int, *, seed: int, stream: int = 0) -> np.ndarray:
    """torchvision's DropBlock layout: the *dropped* elements (bool) of ``(N, C, *spatial)`` (2 or 3
    spatial axes), every block inside the map.

    Centres are drawn over ``(N, C, *(s - k + 1))`` as ``~keep_mask(..., gamma)`` with torchvision's
    ``gamma = p * prod(s) / (k**d * prod(s - k + 1))``; the centre at ``r`` drops ``r .. r + k - 1``.

    >>> fitted_blocks((1, 1, 4, 4), 0.5, 3, seed=3).astype(int)[0, 0]
    array([[0, 1, 1, 1],
           [0, 1, 1, 1],
           [0, 1, 1, 1],
           [0, 0, 0, 0]])
    """
    spatial = shape[2:]
    if block_size > min(spatial, default=0):
        raise ValueError(
            f"block_size must be at most the smallest spatial size {min(spatial)}, got {block_size}"
        )
    reduced = tuple(s - block_size + 1 for s in spatial)
    gamma = p * math.prod(spatial) / (block_size ** len(spatial) * math.prod(reduced))
    dropped = ~keep_mask((*shape[:2], *reduced), gamma, seed=seed, stream=stream)
    for axis in range(2, len(shape)):
        dropped = _spread(dropped, block_size, axis, block_size - 1, block_size - 1)
    return dropped


def normal_words(shape: Shape, *, seed: int, stream: int = 0) -> np.ndarray:
    """Standard normals (float64) of ``shape`` for DropBlock's ``with_noise``, from the words *after* the
    mask's: element ``i`` of ``n`` takes Box-Muller pair ``n + 2 (i // 2)``, so it never reuses a word
    that decided a block (:func:`dropkit.noise.gaussian_noise` explains the pairing).
    """
    n = math.prod(shape)
    return normals_of_pairs(random_range(seed, stream, n, n + (n & 1)), n).reshape(shape)


def _apply_block_keep(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    kept = int(keep.sum())
    if kept == 0:
        return np.zeros_like(x)
    return scale_kept(x, keep, keep.size / kept)


def drop_block2d(
    x: Any,
    p: float = 0.1,
    *,
    block_size: int = 7,
    gamma_scale: float = 1.0,
    batchwise: bool = False,
    training: bool = True,
    seed: int,
    stream: int = 0,
) -> np.ndarray:
    """DropBlock: zero ``block_size x block_size`` squares, rescale the rest by ``numel / kept``.

    Use it on convolutional feature maps (Ghiasi et al. 2018 put it after ResNet's groups 3 and
    4, with ``block_size=7`` and ``p`` ramped up to 0.1 during training).

    Args:
        p: the target fraction of dropped activations, in [0, 1].
        block_size: side of the dropped squares (clipped to the feature map).
        gamma_scale: multiplies the seed rate ``gamma``.
        batchwise: one mask shared by the whole batch.

    Shape: ``(N, C, H, W)``; output the same.

    >>> y = drop_block2d(np.ones((1, 1, 5, 5)), 0.3, block_size=3, seed=1)
    >>> float(y.max()) == 25 / 16
    True
    """
    x = check_float_array("x", x)
    p = check_probability(p)
    check_block(x.shape, block_size, gamma_scale, batchwise)
    seed, stream = check_key(seed, stream)
    if not training or p == 0.0:
        return x
    keep = drop_block_keep(
        x.shape,
        p,
        block_size=block_size,
        gamma_scale=gamma_scale,
        batchwise=batchwise,
        seed=seed,
        stream=stream,
    )
    return _apply_block_keep(x, keep)


class DropBlock2d(MaskDropout):
    """DropBlock layer; see :func:`drop_block2d`. Backward: ``dL/dx = dL/dy * m * numel / kept``.

    >>> layer = DropBlock2d(0.3, block_size=3, seed=1)
    >>> y = layer(np.ones((1, 1, 5, 5)))
    >>> bool((layer.backward(np.ones((1, 1, 5, 5))) == y).all())
    True
    """

    def __init__(
        self,
        p: float = 0.1,
        *,
        block_size: int = 7,
        gamma_scale: float = 1.0,
        batchwise: bool = False,
        seed: int | None = None,
    ) -> None:
        check_block((1, 1, 1, 1), block_size, gamma_scale, batchwise)
        super().__init__(p, seed=seed)
        self.block_size, self.gamma_scale, self.batchwise = block_size, gamma_scale, bool(batchwise)

    def _mask_shape(self, shape: Shape) -> Shape:
        return check_block(shape, self.block_size, self.gamma_scale, self.batchwise)

    def _apply(self, x: np.ndarray, p: float, stream: int) -> np.ndarray:
        return drop_block2d(
            x,
            p,
            block_size=self.block_size,
            gamma_scale=self.gamma_scale,
            batchwise=self.batchwise,
            seed=self.seed,
            stream=stream,
        )

    def _inference(self, x: np.ndarray, p: float) -> np.ndarray:
        return x

    def _apply_keep(self, x: np.ndarray, keep: np.ndarray, p: float) -> np.ndarray:
        return _apply_block_keep(x, keep)

    _grad_keep = _apply_keep

    def __repr__(self) -> str:
        return (
            f"DropBlock2d(p={self.p}, block_size={self.block_size}, gamma_scale={self.gamma_scale}, "
            f"batchwise={self.batchwise}, seed={self.seed})"
        )
