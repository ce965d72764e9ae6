"""Property-based: every face of the NumPy library equals the scalar oracle of the contract.

Random shapes (0-d, empty, odd, up to 5-D), dtypes, memory layouts (negative strides, transposed,
broadcast), drop probabilities at their edges (0, 2^-32, 1 - 2^-32, 1), seeds and streams up to
2^64 - 1 and shards past 2^63, each compared element for element with ``tests/oracle.py``, which
computes Philox4x32-10 on Python ints. Hypothesis runs derandomized with a bounded number of examples
(``oracle.FAST``), so every run checks the same cases.
"""

import contextlib
import io
import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import dropkit
import oracle
from dropkit import kernels
from dropkit.cli import main
from dropkit.dropblock import drop_block_keep
from dropkit.mc import mc_dropout_predict
from dropkit.nn import Sequential, softmax
from dropkit.noise import gaussian_noise
from dropkit.philox import random_range
from dropkit.sharding import Shard, shard_dropout_apply, shard_keep_mask

EDGE_U64 = [0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
u64 = st.one_of(st.sampled_from(EDGE_U64), st.integers(0, 2**64 - 1))
u32 = st.integers(0, 2**32 - 1)
EDGE_P = [0.0, 2**-32, 0.5, 1 - 2**-32, 1.0]
probability = st.one_of(st.sampled_from(EDGE_P), st.floats(0.0, 1.0))
below_one = st.one_of(st.sampled_from([0.0, 2**-32, 0.5, 1 - 2**-32]), st.floats(0.0, 0.999))
shapes = st.lists(st.integers(0, 3), max_size=5).map(tuple)
dtypes = st.sampled_from([np.float16, np.float32, np.float64])
LAYOUTS = ["contiguous", "negative", "transposed", "broadcast"]


def make_array(shape, dtype, layout, seed):
    """A float array of ``shape`` whose memory layout is ``layout``; values depend on ``seed`` only."""
    rng = np.random.default_rng(seed)
    if layout == "broadcast" and shape:  # stride 0 along dim 0: one row seen N times (read-only)
        return np.broadcast_to((4 * rng.standard_normal((1, *shape[1:]))).astype(dtype), shape)
    if layout == "transposed":
        return np.asarray(4 * rng.standard_normal(shape[::-1])).astype(dtype).T
    x = np.asarray(4 * rng.standard_normal(shape)).astype(dtype)  # 0-d stays an array, not a scalar
    return x[(slice(None, None, -1),) * x.ndim] if layout == "negative" and x.ndim else x


arrays = st.builds(make_array, shapes, dtypes, st.sampled_from(LAYOUTS), st.integers(0, 2**32))


def assert_same(actual, expected):
    """Bit-for-bit equal values (inf where both overflow; +0 and -0 both count as a dropped zero)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert np.array_equal(actual, expected), np.argwhere(actual != expected)[:5]


@pytest.mark.parametrize(("counter", "key", "expected"), oracle.KNOWN_ANSWERS)
def test_the_oracle_and_philox4x32_give_random123s_known_answers(counter, key, expected):
    assert oracle.philox(counter, key) == expected
    assert tuple(dropkit.philox4x32(list(counter), list(key)).tolist()) == expected


@oracle.FAST
@given(
    st.lists(st.tuples(u32, u32, u32, u32), min_size=1, max_size=6), st.tuples(u32, u32), st.integers(0, 12)
)
def test_philox4x32_equals_the_oracle_for_any_counter_key_and_rounds(counters, key, rounds):
    out = dropkit.philox4x32(np.array(counters, dtype=np.uint64), list(key), rounds=rounds)
    assert [tuple(row) for row in out.tolist()] == [oracle.philox(c, key, rounds) for c in counters]


@oracle.FAST
@given(u64, u64, st.lists(u64, max_size=12))
def test_random_bits_equals_the_oracle_at_any_64_bit_index(seed, stream, index):
    words = dropkit.random_bits(seed, stream, np.array(index, dtype=np.uint64))
    assert words.tolist() == [oracle.bits(seed, stream, i) for i in index]


@oracle.FAST
@given(u64, u64, st.integers(0, 2**64 - 1), st.integers(0, 9))
def test_random_range_equals_the_oracle_up_to_the_last_index(seed, stream, start, count):
    start = min(start, 2**64 - count)  # the range ends at 2**64 at most
    assert random_range(seed, stream, start, count).tolist() == [
        oracle.bits(seed, stream, i) for i in range(start, start + count)
    ]


@oracle.FAST
@given(shapes, probability, u64, u64)
def test_keep_mask_equals_the_oracle(shape, p, seed, stream):
    assert np.array_equal(
        dropkit.keep_mask(shape, p, seed=seed, stream=stream), oracle.keep_array(shape, p, seed, stream)
    )


@oracle.FAST
@given(arrays, probability, u64, u64, st.sampled_from(["inverted", "classic"]), st.booleans())
def test_dropout_equals_the_oracle_for_any_layout_and_leaves_x_alone(x, p, seed, stream, mode, training):
    before = x.copy()
    y = dropkit.dropout(x, p, seed=seed, stream=stream, mode=mode, training=training)
    assert np.array_equal(x, before)
    if not training:
        if mode == "inverted":
            assert y is x
        else:
            expected = np.vectorize(lambda v: oracle.product(float(v), 1.0 - p, x.dtype), otypes=[x.dtype])
            assert_same(y, expected(x).reshape(x.shape))
        return
    scale = oracle.inverted_scale(p) if mode == "inverted" else 1.0
    assert_same(y, oracle.masked(x, p, seed, stream, scale))


def channel_mask_shape(shape, spatial_dims):
    """The oracle's mask shape of channel dropout: (N, C) or (C,), then ones over the spatial dims."""
    return shape[: len(shape) - spatial_dims] + (1,) * spatial_dims


@oracle.FAST
@given(st.data(), dtypes, probability, u64, u64)
def test_every_bernoulli_variant_equals_the_oracle_on_its_mask_shape(data, dtype, p, seed, stream):
    variant = data.draw(
        st.sampled_from(["channel", "locked", "locked-batch-first", "path", "path-batch", "noise"])
    )
    smallest = {"locked": 2, "locked-batch-first": 3}.get(variant, 1)  # (T, N, ...) or (N, T, H, ...)
    ndim = data.draw(st.integers(smallest, 5))
    shape = tuple(data.draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
    x = make_array(shape, dtype, data.draw(st.sampled_from(LAYOUTS)), seed & 0xFFFF)
    scale = oracle.inverted_scale(p)
    if variant == "channel":
        spatial_dims = data.draw(st.integers(max(1, ndim - 2), ndim - 1)) if ndim > 1 else None
        assume(spatial_dims is not None)
        y = dropkit.channel_dropout(x, p, spatial_dims=spatial_dims, seed=seed, stream=stream)
        mask_shape = channel_mask_shape(shape, spatial_dims)
    elif variant.startswith("locked"):
        batch_first = variant.endswith("first")
        y = dropkit.locked_dropout(x, p, batch_first=batch_first, seed=seed, stream=stream)
        time_dim = 1 if batch_first else 0
        mask_shape = (*shape[:time_dim], 1, *shape[time_dim + 1 :])
    elif variant.startswith("path"):
        mode = "batch" if variant.endswith("batch") else "row"
        scale_by_keep = data.draw(st.booleans())
        y = dropkit.drop_path(x, p, mode=mode, scale_by_keep=scale_by_keep, seed=seed, stream=stream)
        mask_shape = ((shape[0] if mode == "row" else 1),) + (1,) * (ndim - 1)
        scale = scale if scale_by_keep else 1.0
    else:
        noise_shape = tuple(data.draw(st.sampled_from([1, None])) for _ in shape)
        y = dropkit.dropout(x, p, seed=seed, stream=stream, noise_shape=noise_shape)
        mask_shape = tuple(d if n is None else 1 for n, d in zip(noise_shape, shape, strict=True))
    assert_same(y, oracle.masked(x, p, seed, stream, scale, mask_shape))


LAYERS = {
    "Dropout": (lambda p, s: dropkit.Dropout(p, seed=s), 1),
    "Dropout-classic": (lambda p, s: dropkit.Dropout(p, mode="classic", seed=s), 1),
    "ChannelDropout": (lambda p, s: dropkit.ChannelDropout(p, spatial_dims=1, seed=s), 3),
    "LockedDropout": (lambda p, s: dropkit.LockedDropout(p, seed=s), 3),
    "DropPath": (lambda p, s: dropkit.DropPath(p, seed=s), 2),
}


def layer_mask_shape(name, shape):
    if name == "ChannelDropout":
        return channel_mask_shape(shape, 1)
    if name == "LockedDropout":
        return (1, *shape[1:])
    if name == "DropPath":
        return (shape[0],) + (1,) * (len(shape) - 1)
    return shape


@oracle.FAST
@given(st.sampled_from(sorted(LAYERS)), probability, u64, st.data())
def test_layers_take_stream_k_on_call_k_and_backward_replays_it(name, p, seed, data):
    make, ndim = LAYERS[name]
    layer = make(p, seed)
    scale = 1.0 if name.endswith("classic") else oracle.inverted_scale(p)
    for k in range(3):
        shape = tuple(data.draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
        x, grad = (make_array(shape, np.float32, "contiguous", seed % 1000 + k + i) for i in (0, 7))
        mask_shape = layer_mask_shape(name, shape)
        assert_same(layer(x), oracle.masked(x, p, seed, k, scale, mask_shape))
        assert_same(layer.backward(grad), oracle.masked(grad, p, seed, k, scale, mask_shape))
    assert layer.calls == 3


def alpha_oracle(x, p, seed, stream, mask_shape):
    """Alpha dropout by the contract's rule: kept ``a x + a alpha' p``, dropped ``-a alpha' (1 - p)``,
    each operation rounded to float32 (float64 for float64 data), then to the data type."""
    if p == 1.0:
        return np.zeros_like(x)
    a = 1.0 / math.sqrt((oracle.SELU_ALPHA_PRIME**2 * p + 1.0) * (1.0 - p))
    wide = np.float64 if x.dtype == np.float64 else np.float32
    a_w, kept_w = wide(a), wide(oracle.SELU_ALPHA_PRIME * a * p)
    dropped_w = wide(-oracle.SELU_ALPHA_PRIME * a * (1.0 - p))
    out = np.empty(x.shape, x.dtype)
    for position in itertools.product(*(range(n) for n in x.shape)):
        at = tuple(0 if m == 1 else i for i, m in zip(position, mask_shape, strict=True))
        if oracle.keep(seed, stream, oracle.flat_index(at, mask_shape), p):
            value = wide(float(wide(float(x[position]) * float(a_w))) + float(kept_w))
        else:
            value = dropped_w
        out[position] = value
    return out


@oracle.FAST
@given(arrays, probability, u64, u64, st.booleans())
def test_alpha_dropout_equals_the_oracle(x, p, seed, stream, feature):
    assume(not feature or x.ndim >= 2)
    y = dropkit.alpha_dropout(x, p, feature=feature, seed=seed, stream=stream)
    if p == 0.0:
        assert y is x
        return
    mask_shape = x.shape[:2] + (1,) * (x.ndim - 2) if feature else x.shape
    assert_same(y, alpha_oracle(x, p, seed, stream, mask_shape))


@oracle.FAST
@given(shapes, below_one, u64, u64)
def test_gaussian_noise_is_box_muller_of_the_oracles_words(shape, p, seed, stream):
    # The oracle uses Python's math.log/cos/sin, NumPy its own: they may differ in the last bit of a
    # float64, so the bound is 4 ulps relative, far below float32's and float16's resolution.
    noise = gaussian_noise(shape, p, seed=seed, stream=stream)
    expected = np.array(oracle.box_muller_noise(math.prod(shape), p, seed, stream)).reshape(shape)
    np.testing.assert_allclose(noise, expected, rtol=4 * 2**-52, atol=4 * 2**-52)


@oracle.FAST
@given(arrays, below_one, u64, u64)
def test_gaussian_dropout_is_x_times_the_oracles_noise(x, p, seed, stream):
    y = dropkit.gaussian_dropout(x, p, seed=seed, stream=stream)
    if p == 0.0:
        assert y is x
        return
    noise = oracle.box_muller_noise(x.size, p, seed, stream)
    expected = np.array(
        [oracle.product(float(v), n, x.dtype) for v, n in zip(x.ravel(), noise, strict=True)], x.dtype
    )
    # One rounding of x * noise to the data type, from a noise equal to within 4 float64 ulps.
    np.testing.assert_allclose(y, expected.reshape(x.shape), rtol=np.finfo(x.dtype).eps, atol=0)


def drop_block_oracle(shape, p, block_size, gamma_scale, batchwise, seed, stream):
    """DropBlock's keep mask by its definition: centres where the contract does not keep at rate gamma
    (only where the whole block fits), every element within a centre's block dropped."""
    mask_shape = (1, *shape[1:]) if batchwise else shape
    if 0 in mask_shape:
        return np.ones(mask_shape, bool)
    n, c, h, w = mask_shape
    k = min(block_size, h, w)
    gamma = min(1.0, gamma_scale * p * h * w / k**2 / ((h - k + 1) * (w - k + 1)))
    keep = np.ones(mask_shape, bool)
    for position in itertools.product(range(n), range(c), range(h), range(w)):
        i, j = position[2:]
        fits = k // 2 <= i < h - (k - 1) // 2 and k // 2 <= j < w - (k - 1) // 2
        if fits and not oracle.keep(seed, stream, oracle.flat_index(position, mask_shape), gamma):
            top, left = i - k // 2, j - k // 2
            keep[position[0], position[1], top : top + k, left : left + k] = False
    return keep


@oracle.FAST
@given(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 6), st.integers(0, 6)),
    probability,
    st.integers(1, 5),
    st.sampled_from([0.5, 1.0, 2.0]),
    st.booleans(),
    u64,
    u64,
)
def test_drop_block_equals_the_oracle(shape, p, block_size, gamma_scale, batchwise, seed, stream):
    expected = drop_block_oracle(shape, p, block_size, gamma_scale, batchwise, seed, stream)
    keep = drop_block_keep(
        shape,
        p,
        block_size=block_size,
        gamma_scale=gamma_scale,
        batchwise=batchwise,
        seed=seed,
        stream=stream,
    )
    assert np.array_equal(keep, expected)
    x = make_array(shape, np.float32, "contiguous", seed & 0xFFFF)
    y = dropkit.drop_block2d(
        x, p, block_size=block_size, gamma_scale=gamma_scale, batchwise=batchwise, seed=seed, stream=stream
    )
    if p == 0.0:
        assert y is x
        return
    kept = int(expected.sum())
    scale = expected.size / kept if kept else 0.0
    want = np.where(np.broadcast_to(expected, shape), x.astype(np.float32) * np.float32(scale), 0)
    assert_same(y, want.astype(np.float32))


@oracle.FAST
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), probability, u64)
def test_drop_connect_linear_drops_the_oracles_weight_mask(in_features, out_features, batch, p, seed):
    layer = dropkit.DropConnectLinear(in_features, out_features, p=p, rng=np.random.default_rng(0), seed=seed)
    scale = oracle.inverted_scale(p)
    for k in range(2):
        x = make_array((batch, in_features), np.float32, "contiguous", k)
        # The mask is drawn over torch's (out, in) layout; NumPy's W is (in, out).
        mask = oracle.keep_array((out_features, in_features), p, seed, k).T if p < 1 else None
        w = layer.weight.value
        dropped = (
            np.zeros_like(w) if mask is None else np.where(mask, w * np.float32(scale), 0).astype(w.dtype)
        )
        dropped = np.ascontiguousarray(dropped.T).T  # the layer's memory order, so BLAS sums alike
        assert_same(layer(x), x @ dropped + layer.bias.value)
    assert layer.calls == 2


def shard_geometry():
    """A local block inside a global tensor of up to 2**64 elements, offsets reaching past 2**63."""
    big = st.sampled_from([1, 2, 3, 5, 2**31 + 1, 2**32, 2**62, 2**63 + 3, 2**64])

    @st.composite
    def build(draw):
        ndim = draw(st.integers(1, 3))
        local = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
        global_shape = tuple(max(draw(big), n) for n in local)
        assume(math.prod(global_shape) <= 2**64)
        offsets = tuple(draw(st.integers(0, g - n)) for g, n in zip(global_shape, local, strict=True))
        return global_shape, offsets, local

    return build()


@oracle.FAST
@given(shard_geometry(), probability, u64, u64, dtypes)
def test_shards_draw_the_oracles_global_mask_past_2_63(geometry, p, seed, stream, dtype):
    global_shape, offsets, local = geometry
    shard = Shard(global_shape, offsets, local)
    index = [
        oracle.flat_index(tuple(o + i for o, i in zip(offsets, position, strict=True)), global_shape)
        for position in itertools.product(*(range(n) for n in local))
    ]
    assert shard.global_indexes().ravel().tolist() == index
    expected = np.array([oracle.keep(seed, stream, g, p) for g in index], bool).reshape(local)
    assert np.array_equal(
        shard_keep_mask(global_shape, offsets, local, p, seed=seed, stream=stream), expected
    )
    x = make_array(local, dtype, "contiguous", seed & 0xFFFF)
    scale = oracle.inverted_scale(p)
    y = shard_dropout_apply(
        x, p, seed=seed, stream=stream, scale=scale, global_shape=global_shape, offsets=offsets
    )
    want = [
        oracle.product(float(v), scale, dtype) if k and p < 1 else 0.0
        for v, k in zip(x.ravel(), expected.ravel(), strict=True)
    ]
    assert_same(y, np.array(want, dtype).reshape(local))


@oracle.FAST
@given(st.integers(0, 9), st.integers(0, 2**64), probability, u64, u64, dtypes)
def test_kernels_draw_the_oracles_mask_from_any_start_to_2_64(n, start, p, seed, stream, dtype):
    start = min(start, 2**64 - n)
    x = make_array((n,), dtype, "contiguous", n)
    scale = oracle.inverted_scale(p)
    y = kernels.dropout_apply(x, p, seed=seed, stream=stream, scale=scale, start=start)
    want = [
        oracle.product(float(v), scale, dtype) if p < 1 and oracle.keep(seed, stream, start + i, p) else 0.0
        for i, v in enumerate(x)
    ]
    assert_same(y, np.array(want, dtype))


@oracle.FAST
@given(probability, u64, st.integers(1, 4))
def test_mc_dropout_predict_averages_the_oracles_masks(p, seed, samples):
    x = make_array((2, 3), np.float64, "contiguous", 5)
    model = Sequential(dropkit.Dropout(p, seed=seed))
    expected = (
        sum(softmax(oracle.masked(x, p, seed, k, oracle.inverted_scale(p))) for k in range(samples)) / samples
    )
    np.testing.assert_allclose(mc_dropout_predict(model, x, samples), expected, rtol=1e-12)
    assert model.training and model[0].calls == samples


@oracle.FAST
@given(u64)
def test_dropkit_trace_prints_the_oracles_words_for_any_seed(seed):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["trace", "--seed", str(seed)]) == 0
    line = next(line for line in out.getvalue().splitlines() if "Philox words" in line)
    assert line.split("= ", 1)[1] == "[" + ", ".join(f"{oracle.bits(seed, 0, i):08x}" for i in range(8)) + "]"
