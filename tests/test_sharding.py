"""A shard draws exactly its slice of the global mask: checked element for element against slicing
``dropkit.keep_mask`` / ``kernels.dropout_apply`` of the whole tensor."""

from __future__ import annotations

import numpy as np
import pytest

from dropkit import kernels
from dropkit.philox import keep_mask, random_bits
from dropkit.sharding import Shard, shard_dropout_apply, shard_keep_mask

KEYS = [(0, 0), (7, 3), (2**64 - 1, 2**63 + 5)]


def random_shards(global_shape, count, rng_seed=0):
    """``count`` shards of ``global_shape`` with random offsets and extents (some of them empty)."""
    rng = np.random.default_rng(rng_seed)
    for _ in range(count):
        offsets = tuple(int(rng.integers(0, size + 1)) for size in global_shape)
        local = tuple(
            int(rng.integers(0, size - o + 1)) for size, o in zip(global_shape, offsets, strict=True)
        )
        yield offsets, local


def slices(offsets, local_shape):
    return tuple(slice(o, o + n) for o, n in zip(offsets, local_shape, strict=True))


# (global_shape, offsets, local_shape, start): start is None where the shard is several runs.
LAYOUTS = [
    ((), (), (), 0),
    ((10,), (3,), (4,), 3),
    ((6, 5), (2, 0), (3, 5), 10),  # a row block: one range
    ((6, 5), (4, 2), (1, 3), 22),  # part of one row: one range
    ((6, 5), (0, 1), (6, 3), None),  # a column block: six runs
    ((4, 6, 8), (0, 2, 0), (4, 3, 8), None),  # (B, T, H) split along T: B runs of 3 * 8
    ((4, 6, 8), (0, 0, 4), (4, 6, 4), None),  # split along H: B * T runs of 4
    ((4, 6, 8), (2, 0, 0), (2, 6, 8), 96),  # split along B
    ((1, 6, 8), (0, 3, 0), (1, 3, 8), 24),  # a size-1 leading dim does not break the range
    ((4, 1, 8), (1, 0, 2), (2, 1, 3), None),
    ((4, 6, 8), (4, 6, 8), (0, 0, 0), 0),  # empty, at the very end: the empty range at 0
]


@pytest.mark.parametrize(("global_shape", "offsets", "local_shape", "start"), LAYOUTS)
def test_global_indexes_are_the_slice_of_the_global_index(global_shape, offsets, local_shape, start):
    shard = Shard(global_shape, offsets, local_shape)
    everything = np.arange(int(np.prod(global_shape)), dtype=np.uint64).reshape(global_shape)
    assert shard.global_indexes().dtype == np.uint64
    assert np.array_equal(shard.global_indexes(), everything[slices(offsets, local_shape)])
    assert shard.start == start


@pytest.mark.parametrize(("global_shape", "offsets", "local_shape", "start"), LAYOUTS)
def test_runs_are_the_rows_of_consecutive_indexes(global_shape, offsets, local_shape, start):
    shard = Shard(global_shape, offsets, local_shape)
    starts, length = shard.runs
    assert starts.size * length == shard.size
    if shard.size:
        rows = shard.global_indexes().reshape(starts.size, length)
        assert np.array_equal(rows, starts[:, None] + np.arange(length, dtype=np.uint64))
        # Maximal runs: no two rows join up into one range, so one row exactly when start is set.
        assert np.all(starts[1:] > starts[:-1] + np.uint64(length))
        assert (starts.size == 1) == (start is not None)


@pytest.mark.parametrize(("seed", "stream"), KEYS)
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_keep_mask_is_the_slice_of_the_global_mask(p, seed, stream):
    global_shape = (3, 5, 2, 7)
    full = keep_mask(global_shape, p, seed=seed, stream=stream)
    for offsets, local in random_shards(global_shape, 40):
        part = shard_keep_mask(global_shape, offsets, local, p, seed=seed, stream=stream)
        assert part.dtype == np.bool_ and part.shape == local
        assert np.array_equal(part, full[slices(offsets, local)]), (offsets, local)


@pytest.mark.parametrize(("global_shape", "offsets", "local_shape", "_start"), LAYOUTS)
def test_keep_mask_on_the_named_layouts(global_shape, offsets, local_shape, _start):
    full = keep_mask(global_shape, 0.4, seed=11, stream=2)
    part = Shard(global_shape, offsets, local_shape).keep_mask(0.4, seed=11, stream=2)
    assert np.array_equal(part, full[slices(offsets, local_shape)])


def test_indexes_past_2_to_the_32_and_up_to_2_to_the_64():
    # 2**64 elements: the last index is 2**64 - 1; a column split there is several runs.
    shard = Shard((2**32, 2**32), (2**32 - 2, 2**32 - 3), (2, 3))
    expected = [[(2**32 - 2 + i) * 2**32 + 2**32 - 3 + j for j in range(3)] for i in range(2)]
    assert shard.start is None
    assert shard.global_indexes().tolist() == expected
    bits = random_bits(5, 6, np.array(expected, dtype=np.uint64))
    assert np.array_equal(shard.keep_mask(0.5, seed=5, stream=6), bits >= 2**31)


def data(shape, dtype, rng_seed=0):
    """Values bounded away from 0 so that the output is 0 exactly where the mask drops."""
    rng = np.random.default_rng(rng_seed)
    return ((rng.random(shape) + 0.5) * rng.choice([-1, 1], shape)).astype(dtype)


@pytest.mark.parametrize("use_numba", [True, False], ids=["numba", "reference"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    ("offsets", "local_shape"),
    [
        ((0, 0, 0), (4, 6, 40)),  # the whole tensor
        ((2, 0, 0), (2, 6, 40)),  # one range
        ((0, 2, 0), (4, 3, 40)),  # 4 runs: each one its own kernel call
        ((0, 0, 8), (4, 6, 20)),  # 24 runs: the compiled loop over runs
        ((1, 1, 3), (2, 4, 1)),  # 8 runs of 1 element
    ],
)
def test_dropout_apply_is_the_slice_of_the_global_dropout(
    monkeypatch, use_numba, dtype, offsets, local_shape
):
    monkeypatch.setattr(kernels, "USE_NUMBA", use_numba and kernels.USE_NUMBA)
    global_shape, p, scale = (4, 6, 40), 0.3, 1 / 0.7
    x = data(global_shape, dtype)
    expected = kernels.dropout_apply(x, p, seed=9, stream=4, scale=scale)[slices(offsets, local_shape)]
    local = np.ascontiguousarray(x[slices(offsets, local_shape)])
    got = shard_dropout_apply(
        local, p, seed=9, stream=4, scale=scale, global_shape=global_shape, offsets=offsets
    )
    assert got.dtype == dtype
    assert np.array_equal(got, expected)
    assert np.array_equal(got != 0, shard_keep_mask(global_shape, offsets, local_shape, p, seed=9, stream=4))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_apply_edge_probabilities(p):
    x = data((3, 16), np.float32)
    got = shard_dropout_apply(
        x[:, :8].copy(), p, seed=1, stream=0, scale=2.0, global_shape=(3, 16), offsets=(0, 0)
    )
    expected = np.zeros((3, 8), np.float32) if p == 1.0 else x[:, :8] * np.float32(2.0)
    assert np.array_equal(got, expected)


def test_dropout_apply_into_out_and_in_place_and_from_a_strided_view():
    global_shape, offsets = (16, 12), (0, 4)
    x = data(global_shape, np.float64)
    expected = kernels.dropout_apply(x, 0.5, seed=3, stream=1, scale=2.0)[:, 4:10]
    shard = Shard(global_shape, offsets, (16, 6))
    view = x[:, 4:10]  # not contiguous: the reference path
    assert np.array_equal(shard.dropout_apply(view, 0.5, seed=3, stream=1, scale=2.0), expected)
    out = np.full((16, 6), np.nan)
    assert shard.dropout_apply(view.copy(), 0.5, seed=3, stream=1, scale=2.0, out=out) is out
    assert np.array_equal(out, expected)
    local = view.copy()
    shard.dropout_apply(local, 0.5, seed=3, stream=1, scale=2.0, out=local)
    assert np.array_equal(local, expected)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (((4, 5), (0,), (4, 5)), ValueError, r"offsets must have one entry per dim of global_shape \(4, 5\)"),
        (((4, 5), (0, 0), (4,)), ValueError, r"local shape \(4,\) must have as many dims as global_shape"),
        (((4, 5), (5, 0), (0, 5)), ValueError, r"offsets\[0\] = 5 is out of range \[0, 4\]"),
        (((4, 5), (1, 3), (2, 3)), ValueError, r"runs past global_shape\[1\] = 5: offsets\[1\] \+ local"),
        (((4, -5), (0, 0), (1, 1)), ValueError, r"global_shape must be a sequence of non-negative ints"),
        (((4, 5), (0, 1.5), (1, 1)), ValueError, r"offsets must be a sequence of non-negative ints"),
        (((4, 5), (0, True), (1, 1)), ValueError, r"offsets must be a sequence of non-negative ints"),
        ((4, (0,), (1,)), TypeError, r"global_shape must be a sequence of non-negative ints, got int"),
        (((2**33, 2**32), (0, 0), (1, 1)), ValueError, r"more than 2\*\*64 elements"),
    ],
)
def test_bad_shards_are_rejected(args, error, match):
    with pytest.raises(error, match=match):
        Shard(*args)


def test_bad_calls_are_rejected_and_write_nothing():
    shard = Shard((4, 8), (0, 4), (4, 4))
    x, out = np.ones((4, 4), np.float32), np.full((4, 4), 7.0, np.float32)
    with pytest.raises(ValueError, match=r"x must have the shard's local shape \(4, 4\), got \(4, 3\)"):
        shard.dropout_apply(np.ones((4, 3), np.float32), 0.5, seed=0, stream=0, scale=2.0)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        shard.dropout_apply(x, 1.5, seed=0, stream=0, scale=2.0, out=out)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        shard.dropout_apply(x, 0.5, seed=-1, stream=0, scale=2.0, out=out)
    with pytest.raises(ValueError, match=r"out must be an ndarray of x's shape"):
        shard.dropout_apply(x, 0.5, seed=0, stream=0, scale=2.0, out=np.empty((4, 5), np.float32))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        shard.dropout_apply(np.ones((4, 4), np.int32), 0.5, seed=0, stream=0, scale=2.0)
    with pytest.raises(ValueError, match=r"stream must be an integer in \[0, 2\*\*64\)"):
        shard.keep_mask(1.0, seed=0, stream=2**64)
    assert (out == 7.0).all()
