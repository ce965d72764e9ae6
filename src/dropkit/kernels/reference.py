"""The reference dropout kernel in NumPy: draw the keep mask, then scale the kept elements.

Rounding rule, shared by every backend: ``x * scale`` is formed in float32 (float64 for
float64 data), with ``scale`` rounded once to that type, and the product rounded once to the
data type. Dropped elements are exactly zero.
"""

from __future__ import annotations

import numpy as np

from dropkit.philox import KEEP_NONE, keep_range, keep_threshold, random_bits


def compute_dtype(dtype: np.dtype) -> type[np.floating]:
    """The type products are formed in: float64 for float64 data, float32 otherwise."""
    return np.float64 if dtype == np.float64 else np.float32


def scale_kept(x: np.ndarray, keep: np.ndarray | None, scale: float) -> np.ndarray:
    """``x * keep * scale`` in ``x``'s dtype (``keep=None`` keeps everything).

    Args:
        x: floating-point array, any shape.
        keep: bool array broadcastable to ``x`` (a mask shape with 1s where it broadcasts).
        scale: the factor applied to kept elements.

    >>> scale_kept(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0], bool), 2.0).tolist()
    [2.0, 0.0, 6.0, 0.0]
    """
    wide = compute_dtype(x.dtype)
    scaled = np.multiply(x, wide(scale), dtype=wide)
    if keep is not None:
        scaled = np.where(keep, scaled, wide(0))
    return scaled.astype(x.dtype, copy=False)


def apply_keep(
    x: np.ndarray, keep: np.ndarray, scale: float, *, offset: float | None = None, dropped: float = 0.0
) -> np.ndarray:
    """``keep ? x * scale (+ offset) : dropped`` in ``x``'s dtype, ``keep`` a bool array broadcastable
    to ``x``: :func:`scale_kept` with alpha dropout's affine form (the sum is a second rounding).

    >>> apply_keep(np.array([1.0, 2.0]), np.array([True, False]), 2.0, offset=1.0, dropped=-1.0).tolist()
    [3.0, -1.0]
    """
    wide = compute_dtype(x.dtype)
    scaled = np.multiply(x, wide(scale), dtype=wide)
    if offset is not None:
        scaled = scaled + wide(offset)
    return np.where(keep, scaled, wide(dropped)).astype(x.dtype, copy=False)


def dropout_apply(
    x: np.ndarray,
    p: float,
    *,
    seed: int,
    stream: int,
    scale: float,
    start: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Dropout of ``x`` with the contract's mask for flat indexes ``start, start + 1, ...``.

    ``out[i] = keep(start + i) ? x[i] * scale : 0`` over ``x``'s row-major flat index ``i``.
    ``p == 1`` gives zeros without touching ``scale`` (which would be infinite).

    Args:
        x: floating-point array, any shape and strides.
        out: optional array of ``x``'s shape and dtype to write into (``out=x`` is in place).

    Returns:
        ``out`` if given, else a new array.
    """
    if p == 1.0:
        result = np.zeros_like(x)
    else:
        keep = keep_range(p, seed, stream, start, x.size).reshape(x.shape)
        result = scale_kept(x, keep, scale)
    if out is None:
        return result
    out[...] = result
    return out


def dropout_apply_runs(
    x: np.ndarray, p: float, *, seed: int, stream: int, scale: float, starts: np.ndarray
) -> np.ndarray:
    """:func:`dropout_apply` of ``x`` as ``len(starts)`` rows, row ``r`` from global index ``starts[r]``.

    Returns a new array of ``x``'s shape and dtype.
    """
    threshold = keep_threshold(p)
    if threshold == KEEP_NONE:  # p == 1
        return np.zeros_like(x)
    length = x.size // len(starts) if len(starts) else 0
    indexes = starts[:, None] + np.arange(length, dtype=np.uint64)
    keep = random_bits(seed, stream, indexes) >= np.uint32(threshold)
    return scale_kept(x, keep.reshape(x.shape), scale)
