"""The variants' kernels give the reference's bytes: keep decisions, raw words, broadcast masks.

Expected values come from :mod:`dropkit.philox` (``keep_range``, ``random_range``) and
:func:`dropkit.kernels.reference.apply_keep`; every comparison is of bytes, so inf, NaN and the sign of
zero count.
"""

from __future__ import annotations

import numpy as np
import pytest

import dropkit
from dropkit import kernels
from dropkit.kernels import reference
from dropkit.philox import keep_range, random_range

pytest.importorskip("dropkit.kernels.cpu_variants", reason="numba is not installed")

SEED, STREAM = 0x0123456789ABCDEF, 2**40 + 5
# (count, start): unaligned starts, a batch of 32 Philox calls and a parallel task crossed, block 2**32
# (start 2**34) crossed, a range ending at 2**64.
RANGES = [(1, 0), (7, 3), (1001, 2**34 - 130), (4 * 16384 * 2 + 5, 9), (70001, 1), (10, 2**64 - 10)]
# (shape, mask shape): channel, locked (both layouts), drop path (row and batch), a full mask, mixed.
BROADCASTS = [
    ((8, 16, 8, 8), (8, 16, 1, 1)),
    ((16, 8, 64), (1, 8, 64)),
    ((8, 16, 64), (8, 1, 64)),
    ((8, 16, 8, 8), (8, 1, 1, 1)),
    ((4, 3, 5), (1, 1, 1)),
    ((6, 7), (6, 7)),
    ((3, 4, 5, 6), (3, 1, 5, 1)),
    ((2, 1, 5), (2, 1, 1)),
    ((300, 301), (300, 1)),  # threaded
    ((2, 70000), (2, 70000)),  # threaded, one row drawn segment by segment
]


def special(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Random data of ``shape`` with inf, -inf, NaN, -0 and a negative number in front."""
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    head = [np.inf, -np.inf, np.nan, -0.0, -1.5]
    x.reshape(-1)[: min(x.size, len(head))] = head[: x.size]
    return x


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(("count", "start"), RANGES)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_keep_range_is_the_references(count, start, p):
    assert (
        kernels.keep_range(p, SEED, STREAM, start, count) == keep_range(p, SEED, STREAM, start, count)
    ).all()


@pytest.mark.parametrize(("count", "start"), [*RANGES, (0, 5)])
def test_random_range_is_the_references(count, start):
    assert (
        kernels.random_range(SEED, STREAM, start, count) == random_range(SEED, STREAM, start, count)
    ).all()


def test_keep_mask_is_the_references_and_checks_as_it_does():
    assert (
        kernels.keep_mask((5, 7), 0.4, seed=3, stream=2) == dropkit.keep_mask((5, 7), 0.4, seed=3, stream=2)
    ).all()
    with pytest.raises(ValueError, match="p"):
        kernels.keep_mask((2,), 1.5, seed=0)
    with pytest.raises(ValueError, match="seed"):
        kernels.keep_range(0.5, -1, 0, 0, 4)


@pytest.mark.parametrize(("shape", "mask_shape"), BROADCASTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("affine", [False, True])
def test_apply_keep_and_broadcast_dropout_give_the_references_bytes(shape, mask_shape, dtype, affine):
    x = special(shape, dtype)
    keep = keep_range(0.4, SEED, STREAM, 11, int(np.prod(mask_shape))).reshape(mask_shape)
    constants = {"offset": 0.25, "dropped": -0.75} if affine else {}
    expected = reference.apply_keep(x, keep, 1 / 0.6, **constants)
    assert same_bytes(kernels.apply_keep(x, keep, 1 / 0.6, **constants), expected)
    drawn = kernels.broadcast_dropout(
        x, 0.4, mask_shape, seed=SEED, stream=STREAM, start=11, scale=1 / 0.6, **constants
    )
    assert same_bytes(drawn, expected)
    out = np.empty_like(x)
    assert kernels.apply_keep(x, keep, 1 / 0.6, out=out, **constants) is out
    assert same_bytes(out, expected)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_broadcast_dropout_at_p_0_and_1_keeps_all_or_none(p):
    x = special((4, 6, 3), np.float32)
    y = kernels.broadcast_dropout(x, p, (4, 6, 1), seed=1, stream=2, scale=2.0)
    assert same_bytes(y, reference.apply_keep(x, np.full((4, 6, 1), p == 0.0), 2.0))


def test_apply_keep_in_place_and_on_strided_arrays():
    x = special((6, 8), np.float32)
    keep = np.array([[True], [False], [True], [True], [False], [True]])
    expected = reference.apply_keep(x, keep, 3.0)
    strided = np.asfortranarray(x)  # not C-contiguous: the reference path
    assert same_bytes(np.ascontiguousarray(kernels.apply_keep(strided, keep, 3.0)), expected)
    assert kernels.apply_keep(x, keep, 3.0, out=x) is x
    assert same_bytes(x, expected)


def test_a_mask_that_does_not_broadcast_is_a_value_error():
    with pytest.raises(ValueError, match="does not broadcast"):
        kernels.apply_keep(np.ones((2, 3), np.float32), np.ones((3, 1), bool), 1.0)
