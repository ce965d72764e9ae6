"""The mask contract, version 1: Philox4x32-10 and the Bernoulli keep decision, in NumPy.

Philox is a counter-based generator (Salmon, Moraes, Dror, Shaw, "Parallel random numbers:
as easy as 1, 2, 3", SC'11): its output is a pure function of a 128-bit counter and a 64-bit
key, so any element's random word can be computed alone, in any order, on any device.
dropkit gives element ``index`` of a mask drawn with ``(seed, stream)`` the word::

    block   = index >> 2
    counter = (lo32(block), hi32(block), lo32(stream), hi32(stream))
    key     = (lo32(seed), hi32(seed))
    bits    = Philox4x32_10(counter, key)[index & 3]

and keeps it when ``bits >= round_half_even(p * 2**32)``. This module is the reference every
faster path (numba, Triton, PyTorch) must match bit for bit.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import numpy as np

from dropkit._validation import UINT64_LIMIT, check_count, check_dims, check_probability, check_uint64, shown

__all__ = [
    "fast_keep_threshold",
    "keep_mask",
    "keep_range",
    "keep_threshold",
    "philox4x32",
    "random_bits",
    "random_range",
]

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
KEEP_NONE = 2**32  # keep_threshold(1.0): no 32-bit word reaches it, so nothing is kept
_32 = np.uint64(32)


def _mulhilo(a: np.ndarray, multiplier: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """The 32x32 -> 64-bit product of uint32 ``a`` and ``multiplier``, split into (hi, lo)."""
    product = a.astype(np.uint64) * multiplier
    return (product >> _32).astype(np.uint32), (product & _LOW32).astype(np.uint32)


def _philox_rounds(c0, c1, c2, c3, k0, k1, rounds: int = 10):
    """Philox4x32 on 1-D uint32 arrays (one element per counter); returns the four output words."""
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = k0 + PHILOX_W0, k1 + PHILOX_W1  # uint32 arrays wrap mod 2**32
    return c0, c1, c2, c3


def _as_uint32_words(name: str, value: Any, width: int) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # a ragged list
        array = np.empty(0, object)
    if array.dtype.kind not in "iu" or array.ndim == 0 or array.shape[-1] != width:
        described = (
            f"{array.dtype} array of shape {array.shape}" if array.dtype != object else type(value).__name__
        )
        raise TypeError(f"{name} must be an integer array of shape (..., {width}), got {described}")
    if array.size and (array.min() < 0 or array.max() > 0xFFFFFFFF):
        raise ValueError(f"{name} words must be in [0, 2**32)")
    return array.astype(np.uint32)


def philox4x32(counter: Any, key: Any, rounds: int = 10) -> np.ndarray:
    """Philox4x32 with ``rounds`` rounds (10 is the standard; Random123's known answers use it).

    Args:
        counter: uint32 words, shape ``(..., 4)``.
        key: uint32 words, shape ``(..., 2)``; broadcasts against ``counter``'s leading dims.
        rounds: number of Philox rounds.

    Returns:
        uint32 array of shape ``(..., 4)``.

    >>> out = philox4x32([0, 0, 0, 0], [0, 0])
    >>> [f"{w:08x}" for w in out]
    ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    """
    counter = _as_uint32_words("counter", counter, 4)
    key = _as_uint32_words("key", key, 2)
    rounds = check_count("rounds", rounds, minimum=0)
    try:
        lead = np.broadcast_shapes(counter.shape[:-1], key.shape[:-1])
    except ValueError:
        raise ValueError(
            f"counter's leading dims {counter.shape[:-1]} and key's {key.shape[:-1]} must broadcast"
        ) from None
    counter = np.broadcast_to(counter, (*lead, 4)).reshape(-1, 4)
    key = np.broadcast_to(key, (*lead, 2)).reshape(-1, 2)
    words = _philox_rounds(*counter.T, *key.T, rounds=rounds)
    return np.stack(words, axis=-1).reshape(*lead, 4)


def _key_and_stream(seed: Any, stream: Any) -> tuple[np.ndarray, ...]:
    seed, stream = check_uint64("seed", seed), check_uint64("stream", stream)
    return tuple(np.array([v & 0xFFFFFFFF, v >> 32], dtype=np.uint32) for v in (seed, stream))


def _words_of_blocks(blocks: np.ndarray, seed: Any, stream: Any) -> np.ndarray:
    """The four words of every Philox block in the uint64 array ``blocks``, shape ``(n, 4)``."""
    key, lanes = _key_and_stream(seed, stream)
    n = blocks.size
    words = _philox_rounds(
        (blocks & _LOW32).astype(np.uint32),
        (blocks >> _32).astype(np.uint32),
        np.full(n, lanes[0], np.uint32),
        np.full(n, lanes[1], np.uint32),
        np.full(n, key[0], np.uint32),
        np.full(n, key[1], np.uint32),
    )
    return np.stack(words, axis=-1)


def random_bits(seed: int, stream: int, index: Any) -> np.ndarray:
    """The contract's uint32 word ``bits(index)`` for every flat index in ``index``.

    Args:
        seed, stream: unsigned 64-bit integers.
        index: non-negative integer array of any shape (values may exceed 2**32).

    Returns:
        uint32 array with ``index``'s shape.

    >>> random_bits(0, 0, [0, 1, 2, 3]).tolist() == philox4x32([0, 0, 0, 0], [0, 0]).tolist()
    True
    """
    try:
        index = np.asarray(index)
    except (TypeError, ValueError):  # a ragged list
        raise TypeError(f"index must be an integer array, got {type(index).__name__}") from None
    if index.dtype.kind not in "iu":
        raise TypeError(f"index must be an integer array, got dtype {index.dtype}")
    if index.size and index.min() < 0:
        raise ValueError("index must be non-negative")
    flat = index.astype(np.uint64).ravel()
    words = _words_of_blocks(flat >> np.uint64(2), seed, stream)
    lane = (flat & np.uint64(3)).astype(np.intp)
    return words[np.arange(flat.size), lane].reshape(index.shape)


def _check_range(seed: Any, stream: Any, start: Any, count: Any) -> tuple[int, int, int, int]:
    """Checked ``(seed, stream, start, count)``; the range must stay inside the 64-bit index space."""
    seed, stream = check_uint64("seed", seed), check_uint64("stream", stream)
    start, count = check_uint64("start", start), check_uint64("count", count)
    if start + count > UINT64_LIMIT:
        raise ValueError(
            f"start + count must be at most 2**64 (indexes are unsigned 64-bit), got {start} + {count}"
        )
    return seed, stream, start, count


def random_range(seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """``bits(start), bits(start + 1), ..., bits(start + count - 1)`` as a uint32 array.

    One Philox call serves four consecutive indexes, so a range costs ``count / 4`` calls.

    >>> random_range(7, 1, 5, 3).tolist() == random_bits(7, 1, [5, 6, 7]).tolist()
    True
    """
    seed, stream, start, count = _check_range(seed, stream, start, count)
    if count == 0:
        return np.empty(0, np.uint32)
    first, last = start >> 2, (start + count - 1) >> 2
    blocks = np.arange(first, last + 1, dtype=np.uint64)
    words = _words_of_blocks(blocks, seed, stream).ravel()
    return words[start & 3 : (start & 3) + count]


def keep_threshold(p: float) -> int:
    """``t(p) = round_half_even(p * 2**32)``: an element is kept when its word is ``>= t``.

    >>> keep_threshold(0.5), keep_threshold(0.0), keep_threshold(1.0)
    (2147483648, 0, 4294967296)
    """
    return round(check_probability(p) * 2**32)  # exact in float64; round() is half-to-even


_cached_threshold = functools.lru_cache(maxsize=64)(keep_threshold)  # layers use a few p, each on every call


def fast_keep_threshold(p: float) -> int:
    """:func:`keep_threshold` for the hot paths: cached for a Python float ``p`` (a cache key that
    cannot mix ``True`` with ``1.0``), checked in full for anything else.

    >>> fast_keep_threshold(0.25), fast_keep_threshold(0.25)
    (1073741824, 1073741824)
    """
    return _cached_threshold(p) if type(p) is float else keep_threshold(p)


def keep_range(p: float, seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """Keep decisions for flat indexes ``start ... start + count - 1``, a bool array."""
    threshold = keep_threshold(p)
    if threshold == KEEP_NONE:  # p == 1: nothing to draw, but the arguments are checked
        return np.zeros(_check_range(seed, stream, start, count)[3], dtype=bool)
    return random_range(seed, stream, start, count) >= np.uint32(threshold)


def keep_mask(shape: int | tuple[int, ...], p: float, *, seed: int, stream: int = 0) -> np.ndarray:
    """The keep mask of a tensor of ``shape``: ``keep(i)`` over row-major flat indexes ``i``.

    Each element is kept with probability ``1 - p``; ``p`` is the *drop* probability.

    >>> keep_mask((2, 4), 0.5, seed=0).astype(int).tolist()
    [[0, 1, 1, 1], [1, 0, 1, 0]]
    """
    one_dim = isinstance(shape, numbers.Integral) and not isinstance(shape, bool)
    shape = check_dims("shape", (shape,) if one_dim else shape)
    if math.prod(shape) > UINT64_LIMIT:
        raise ValueError(f"shape {shown(shape)} has more than 2**64 elements, the range of the mask index")
    return keep_range(p, seed, stream, 0, math.prod(shape)).reshape(shape)
