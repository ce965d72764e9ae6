"""Hostile arguments to the NumPy face: each is a clear TypeError/ValueError that moves no state.

Every message names the argument and what it accepts, fits on one line and never trips over its own
value (``p=10**5000`` is longer than Python will print); a layer refusing a call keeps its counter and
its replay, and no array handed in is written.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropkit
import oracle
from dropkit import kernels
from dropkit._validation import shown
from dropkit.dropblock import drop_block_keep
from dropkit.mc import mc_dropout_predict, mc_predictive_mean, predictive_entropy, reliability_bins, summarize
from dropkit.nn import SGD, Flatten, Linear, ReLU, Sequential, SoftmaxCrossEntropy, softmax
from dropkit.noise import gaussian_noise
from dropkit.philox import random_range
from dropkit.sharding import Shard, shard_dropout_apply, shard_keep_mask


def ids(value):
    """A test id for any value (pytest's own fails on an int too long for str())."""
    return shown(value)[:40]


def refused(call, error, pattern):
    """``call()`` raises ``error`` matching ``pattern``, with a one-line message of sane length."""
    with pytest.raises(error, match=pattern) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300, message
    return raised.value


X4 = np.linspace(-1.0, 1.0, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)

BAD_P = [
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (-1e-300, ValueError),
    (1.5, ValueError),
    (10**5000, ValueError),
    (-(10**5000), ValueError),
    (np.float64(math.nan), ValueError),
    (0.5j, TypeError),
    ("0.5", TypeError),
    (None, TypeError),
    (True, TypeError),
    (np.bool_(False), TypeError),
    (np.array(0.5), TypeError),
]
P_MESSAGES = {
    ValueError: r"^dropout probability has to be between 0 and 1, but got \S",
    TypeError: r"^p must be a real number in \[0, 1\], got \w+$",
}

TAKES_P = {
    "dropout": lambda p: dropkit.dropout(X4, p, seed=0),
    "channel_dropout": lambda p: dropkit.channel_dropout(X4, p, seed=0),
    "locked_dropout": lambda p: dropkit.locked_dropout(X4, p, seed=0),
    "drop_path": lambda p: dropkit.drop_path(X4, p, seed=0),
    "gaussian_dropout": lambda p: dropkit.gaussian_dropout(X4, p, seed=0),
    "gaussian_noise": lambda p: gaussian_noise((2, 3), p, seed=0, stream=0),
    "alpha_dropout": lambda p: dropkit.alpha_dropout(X4, p, seed=0),
    "drop_block2d": lambda p: dropkit.drop_block2d(X4, p, block_size=3, seed=0),
    "drop_block_keep": lambda p: drop_block_keep(X4.shape, p, seed=0),
    "keep_mask": lambda p: dropkit.keep_mask((2, 3), p, seed=0),
    "shard_keep_mask": lambda p: shard_keep_mask((4, 3), (2, 0), (2, 3), p, seed=0),
    "Shard.keep_mask": lambda p: Shard((4, 6), (1, 2), (2, 3)).keep_mask(p, seed=0),
    "kernels.dropout_apply": lambda p: kernels.dropout_apply(X4, p, seed=0, stream=0, scale=1.0),
    "shard_dropout_apply": lambda p: shard_dropout_apply(
        X4, p, seed=0, stream=0, scale=1.0, global_shape=(4, 3, 4, 4), offsets=(1, 0, 0, 0)
    ),
    "Dropout": lambda p: dropkit.Dropout(p),
    "ChannelDropout": lambda p: dropkit.ChannelDropout(p),
    "LockedDropout": lambda p: dropkit.LockedDropout(p),
    "DropPath": lambda p: dropkit.DropPath(p),
    "GaussianDropout": lambda p: dropkit.GaussianDropout(p),
    "AlphaDropout": lambda p: dropkit.AlphaDropout(p),
    "DropBlock2d": lambda p: dropkit.DropBlock2d(p),
    "DropConnectLinear": lambda p: dropkit.DropConnectLinear(4, 3, p, rng=np.random.default_rng(0)),
}


@pytest.mark.parametrize("name", sorted(TAKES_P))
@pytest.mark.parametrize(
    ("p", "error"), BAD_P, ids=[f"{type(p).__name__}-{i}" for i, (p, _) in enumerate(BAD_P)]
)
def test_every_bad_p_is_a_clear_error_everywhere(name, p, error):
    before = X4.copy()
    refused(lambda: TAKES_P[name](p), error, P_MESSAGES[error])
    assert np.array_equal(X4, before)


@pytest.mark.parametrize("name", ["gaussian_dropout", "gaussian_noise", "GaussianDropout"])
def test_gaussian_refuses_p_one_for_its_infinite_variance(name):
    refused(lambda: TAKES_P[name](1.0), ValueError, r"Gaussian dropout needs p in \[0, 1\)")


BAD_KEYS = [
    (-1, ValueError),
    (2**64, ValueError),
    (10**5000, ValueError),
    (-(10**5000), ValueError),
    (1.0, TypeError),
    ("1", TypeError),
    (None, TypeError),
    (True, TypeError),
    (np.float64(1), TypeError),
    (1 + 0j, TypeError),
]
KEY_IDS = [f"{type(v).__name__}-{i}" for i, (v, _) in enumerate(BAD_KEYS)]


def key_calls(p, training, key):
    """Every functional entry point that takes ``(seed, stream)``, with ``key`` passing them."""
    return {
        "dropout": lambda: dropkit.dropout(X4, p, training=training, **key),
        "dropout-classic": lambda: dropkit.dropout(X4, p, training=training, mode="classic", **key),
        "noise_shape": lambda: dropkit.dropout(X4, p, training=training, noise_shape=(None, 1, 1, 1), **key),
        "channel_dropout": lambda: dropkit.channel_dropout(X4, p, spatial_dims=2, training=training, **key),
        "locked_dropout": lambda: dropkit.locked_dropout(X4, p, training=training, **key),
        "drop_path": lambda: dropkit.drop_path(X4, p, training=training, **key),
        "gaussian_dropout": lambda: dropkit.gaussian_dropout(X4, min(p, 0.5), training=training, **key),
        "alpha_dropout": lambda: dropkit.alpha_dropout(X4, p, feature=True, training=training, **key),
        "drop_block2d": lambda: dropkit.drop_block2d(X4, p, block_size=3, training=training, **key),
        "keep_mask": lambda: dropkit.keep_mask((2, 3), p, **key),
        "keep_mask-empty": lambda: dropkit.keep_mask((0,), p, **key),
        "shard_keep_mask": lambda: shard_keep_mask((4, 6), (1, 2), (2, 3), p, **key),
        "kernels.dropout_apply": lambda: kernels.dropout_apply(X4, p, scale=1.0, **{"stream": 0, **key}),
        "gaussian_noise": lambda: gaussian_noise((3,), min(p, 0.5), **{"stream": 0, **key}),
    }


@pytest.mark.parametrize("which", ["seed", "stream"])
@pytest.mark.parametrize(("p", "training"), [(0.0, True), (0.5, True), (1.0, True), (0.5, False)])
@pytest.mark.parametrize(("value", "error"), BAD_KEYS, ids=KEY_IDS)
def test_a_bad_seed_or_stream_is_an_error_whatever_p_and_the_mode(which, p, training, value, error):
    key = {"seed": value} if which == "seed" else {"seed": 0, "stream": value}
    for call in key_calls(p, training, key).values():
        refused(call, error, rf"^{which} must be an integer in \[0, 2\*\*64\), got \S")


@pytest.mark.parametrize(("value", "error"), BAD_KEYS[:-1], ids=KEY_IDS[:-1])
def test_random_bits_and_random_range_refuse_bad_seeds_and_streams(value, error):
    if value is None:
        return
    for which in ("seed", "stream"):
        key = {"seed": 0, "stream": 0, which: value}
        seed, stream = key["seed"], key["stream"]
        refused(lambda s=seed, t=stream: dropkit.random_bits(s, t, [0, 1]), error, rf"^{which} must be")
        refused(lambda s=seed, t=stream: random_range(s, t, 0, 2), error, rf"^{which} must be")


def layers():
    """One of each NumPy layer, with an input it accepts."""
    return [
        (dropkit.Dropout(0.5, seed=1), X4),
        (dropkit.Dropout(0.5, seed=1, noise_shape=(None, 1, None, 1)), X4),
        (dropkit.ChannelDropout(0.5, seed=1), X4),
        (dropkit.LockedDropout(0.5, seed=1), X4),
        (dropkit.DropPath(0.5, seed=1), X4),
        (dropkit.GaussianDropout(0.5, seed=1), X4),
        (dropkit.AlphaDropout(0.5, feature=True, seed=1), X4),
        (dropkit.DropBlock2d(0.5, block_size=3, seed=1), X4),
    ]


LAYER_IDS = [type(layer).__name__ for layer, _ in layers()]


def state(layer):
    return layer.calls, layer._replay


BAD_X = [
    np.ones((2, 3), np.int64),
    np.ones((2, 3), bool),
    np.ones((2, 3), np.complex128),
    np.array([[1.0, "a"]], object),
    np.ones((2, 3), np.uint8),
    "abc",
    None,
    [[1.0, 2.0], [3.0]],
]


@pytest.mark.parametrize("index", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_a_refused_layer_call_moves_no_counter_and_keeps_the_last_replay(index):
    layer, x = layers()[index]
    layer(x)
    before = state(layer)
    for bad in BAD_X:
        refused(lambda bad=bad: layer(bad), TypeError, r"^x must be a floating-point array")
    for attribute, value, error, pattern in [
        ("p", 1.5, ValueError, "dropout probability"),
        ("p", "0.5", TypeError, "p must be a real number"),
        ("seed", -1, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        ("seed", 2**64, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        ("calls", -1, ValueError, r"stream must be an integer in \[0, 2\*\*64\)"),
        ("calls", 2**64, ValueError, r"stream must be an integer in \[0, 2\*\*64\)"),
    ]:
        saved = getattr(layer, attribute)
        setattr(layer, attribute, value)
        refused(lambda: layer(x), error, pattern)
        setattr(layer, attribute, saved)
        assert state(layer) == before
    if layer.accepts_mask:
        refused(lambda: layer(x, mask=np.ones((5, 5))), ValueError, r"^mask must have the mask shape")
        half = np.full(layer._mask_shape(x.shape), 0.5)
        refused(lambda: layer(x, mask=half), ValueError, r"^mask must contain only 0 and 1")
    else:
        refused(lambda: layer(x, mask=np.ones(x.shape)), TypeError, r"draws no keep mask, so mask= is not")
    assert state(layer) == before
    layer(x)
    assert layer.calls == before[0] + 1


@pytest.mark.parametrize("index", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_backward_refuses_a_gradient_of_the_wrong_shape_or_dtype(index):
    layer, x = layers()[index]
    refused(lambda: layer.backward(x), RuntimeError, r"backward called before any forward; run forward first")
    layer(x)
    refused(lambda: layer.backward(x[..., :-1]), ValueError, r"^grad must have the forward input's shape")
    refused(lambda: layer.backward(x.astype(np.int64)), TypeError, r"^grad must be a floating-point array")
    refused(lambda: layer.backward(None), TypeError, r"^grad must be a floating-point array")


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda v: dropkit.channel_dropout(X4, 0.5, spatial_dims=v, seed=0), "spatial_dims"),
        (lambda v: dropkit.ChannelDropout(0.5, spatial_dims=v), "spatial_dims"),
        (lambda v: dropkit.drop_block2d(X4, 0.5, block_size=v, seed=0), "block_size"),
        (lambda v: dropkit.DropBlock2d(0.5, block_size=v), "block_size"),
    ],
)
@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True, None, 2.0, np.float64(2)], ids=ids)
def test_bad_structure_sizes_name_the_argument(make, pattern, value):
    refused(lambda: make(value), ValueError, rf"^{pattern} must be a positive int, got \S")


def test_spatial_dims_stop_at_64_dims_and_a_huge_block_is_clipped_to_the_map():
    for huge in (64, 10**5000):
        refused(
            lambda h=huge: dropkit.ChannelDropout(0.5, spatial_dims=h),
            ValueError,
            r"^spatial_dims must be a positive int below 64",
        )
    assert np.array_equal(
        dropkit.drop_block2d(X4, 0.5, block_size=10**5000, seed=0),
        dropkit.drop_block2d(X4, 0.5, block_size=4, seed=0),
    )


def test_structure_sizes_take_any_integer_type():
    assert dropkit.ChannelDropout(0.5, spatial_dims=np.int64(2), seed=0)(X4).shape == X4.shape
    assert dropkit.DropBlock2d(0.5, block_size=np.int32(3), seed=0)(X4).shape == X4.shape


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, 10**5000, "1", True, None, 1j], ids=ids)
def test_bad_gamma_scale_names_the_argument(value):
    refused(
        lambda: dropkit.drop_block2d(X4, 0.5, gamma_scale=value, seed=0), ValueError, r"^gamma_scale must be"
    )
    refused(
        lambda: dropkit.DropBlock2d(0.5, gamma_scale=value), ValueError, r"^gamma_scale must be a positive"
    )


@pytest.mark.parametrize(
    ("noise_shape", "error", "pattern"),
    [
        (5, TypeError, r"^noise_shape must be a sequence of ints and None \(or None\), got int"),
        ("ab", TypeError, r"^noise_shape must be a sequence"),
        ((1.5, None, 1, 1), ValueError, r"^noise_shape entries must be 1, None or x's size, got \(1.5,"),
        ((-1, None, 1, 1), ValueError, r"^noise_shape entries must be"),
        ((None, 1), ValueError, r"^noise_shape must have x's rank 4"),
        ((3, 3, 4, 4), ValueError, r"^noise_shape must have x's rank 4, each entry 1, None or x's size"),
    ],
)
def test_bad_noise_shapes_name_the_argument(noise_shape, error, pattern):
    refused(lambda: dropkit.dropout(X4, 0.5, seed=0, noise_shape=noise_shape), error, pattern)
    if error is TypeError or pattern.startswith("^noise_shape entries"):
        refused(lambda: dropkit.Dropout(0.5, noise_shape=noise_shape), error, pattern)


@pytest.mark.parametrize("mode", ["Inverted", "", None, 1, np.array(["inverted", "classic"])])
def test_bad_modes_name_the_accepted_ones(mode):
    refused(
        lambda: dropkit.dropout(X4, 0.5, seed=0, mode=mode),
        ValueError,
        r"^mode must be 'inverted' or 'classic'",
    )
    refused(lambda: dropkit.Dropout(0.5, mode=mode), ValueError, r"^mode must be 'inverted' or 'classic'")
    refused(
        lambda: dropkit.drop_path(X4, 0.5, seed=0, mode=mode), ValueError, r"^mode must be 'row' or 'batch'"
    )


@pytest.mark.parametrize(
    ("shape", "error", "pattern"),
    [
        (-1, ValueError, r"^shape must be a sequence of non-negative ints, got \(-1,\)"),
        ((2, -1), ValueError, r"^shape must be a sequence of non-negative ints, got \(2, -1\)"),
        ((1.5,), ValueError, r"^shape must be a sequence of non-negative ints"),
        ((True,), ValueError, r"^shape must be a sequence of non-negative ints"),
        ("ab", TypeError, r"^shape must be a sequence of non-negative ints, got str"),
        (None, TypeError, r"^shape must be a sequence of non-negative ints, got NoneType"),
        (np.array([2, 3]), TypeError, r"^shape must be a sequence of non-negative ints, got ndarray"),
        ((10**5000,), ValueError, r"^shape \(an integer of 16610 bits,\) has more than 2\*\*64 elements"),
        (
            (2**40, 2**40),
            ValueError,
            r"^shape \(1099511627776, 1099511627776\) has more than 2\*\*64 elements",
        ),
    ],
)
def test_bad_shapes_name_the_argument(shape, error, pattern):
    refused(lambda: dropkit.keep_mask(shape, 0.5, seed=0), error, pattern)
    if not isinstance(shape, int) and error is TypeError:
        refused(lambda: gaussian_noise(shape, 0.5, seed=0, stream=0), error, pattern)


GEOMETRY = [
    ((5, (0,), (1,)), TypeError, r"^global_shape must be a sequence of non-negative ints, got int$"),
    (((4,), 5, (1,)), TypeError, r"^offsets must be a sequence of non-negative ints, got int$"),
    (((4,), (0,), 1), TypeError, r"^local_shape must be a sequence of non-negative ints, got int$"),
    ((None, (0,), (1,)), TypeError, r"^global_shape must be a sequence"),
    (
        (("a",), (0,), (1,)),
        ValueError,
        r"^global_shape must be a sequence of non-negative ints, got \('a',\)",
    ),
    (((4,), (0, 0), (1,)), ValueError, r"^offsets must have one entry per dim of global_shape \(4,\)"),
    (((4,), (0,), (1, 1)), ValueError, r"^the local shape \(1, 1\) must have as many dims as global_shape"),
    (((4,), (5,), (0,)), ValueError, r"^offsets\[0\] = 5 is out of range \[0, 4\]"),
    (((4,), (3,), (2,)), ValueError, r"^the shard runs past global_shape\[0\] = 4"),
    (((4,), (-1,), (1,)), ValueError, r"^offsets must be a sequence of non-negative ints, got \(-1,\)"),
    (((4.0,), (0,), (1,)), ValueError, r"^global_shape must be a sequence of non-negative ints"),
    (((True,), (0,), (1,)), ValueError, r"^global_shape must be a sequence of non-negative ints"),
    (((2**40, 2**40), (0, 0), (1, 1)), ValueError, r"has more than 2\*\*64 elements, the range of the mask"),
    (
        ((10**5000,), (0,), (1,)),
        ValueError,
        r"^global_shape \(an integer of 16610 bits,\) has more than 2\*\*64",
    ),
    (
        ((10**5000,), (10**5001,), (1,)),
        ValueError,
        r"^offsets\[0\] = an integer of \d+ bits is out of range",
    ),
]


@pytest.mark.parametrize(("geometry", "error", "pattern"), GEOMETRY, ids=ids)
def test_bad_shard_geometry_names_the_argument(geometry, error, pattern):
    global_shape, offsets, local_shape = geometry
    refused(lambda: Shard(global_shape, offsets, local_shape), error, pattern)
    refused(lambda: shard_keep_mask(global_shape, offsets, local_shape, 0.5, seed=0), error, pattern)
    if isinstance(local_shape, tuple):
        x = np.ones(local_shape)
        before = x.copy()
        call = lambda: shard_dropout_apply(  # noqa: E731
            x, 0.5, seed=0, stream=0, scale=2.0, global_shape=global_shape, offsets=offsets, out=x
        )
        refused(call, error, pattern)
        assert np.array_equal(x, before)


def test_gaussian_noise_needs_both_shard_arguments_and_checks_them():
    refused(lambda: gaussian_noise((2,), 0.5, seed=0, stream=0, global_shape=(4,)), ValueError, "go together")
    refused(
        lambda: gaussian_noise((2,), 0.5, seed=0, stream=0, global_shape=5, offsets=(0,)),
        TypeError,
        r"^global_shape must be a sequence",
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"scale": math.nan}, ValueError, r"^scale must be a finite real number, got nan"),
        ({"scale": math.inf}, ValueError, r"^scale must be a finite real number, got inf"),
        ({"scale": 10**5000}, ValueError, r"^scale must be a finite real number, got an integer of"),
        ({"scale": "2"}, TypeError, r"^scale must be a finite real number, got str"),
        ({"scale": 2j}, TypeError, r"^scale must be a finite real number, got complex"),
        ({"start": -1}, ValueError, r"^start must be an integer in \[0, 2\*\*64\)"),
        ({"start": 2**64 - 5}, ValueError, r"^start \+ count must be at most 2\*\*64"),
        ({"start": 1.0}, TypeError, r"^start must be an integer"),
        ({"out": np.empty((2, 3, 4, 4), np.float32)}, ValueError, r"^out must be an ndarray of x's shape"),
        ({"out": np.empty((2, 3, 4))}, ValueError, r"^out must be an ndarray of x's shape \(2, 3, 4, 4\)"),
        ({"out": [0.0]}, ValueError, r"^out must be an ndarray of x's shape .* got list"),
        ({"out": np.broadcast_to(np.empty(1), X4.shape)}, ValueError, r"^out must be a writeable array"),
    ],
)
def test_kernel_arguments_are_checked_before_anything_is_written(kwargs, error, pattern):
    x = X4.copy()
    out = kwargs.get("out")
    before = None if not isinstance(out, np.ndarray) or not out.flags.writeable else out.copy()
    refused(
        lambda: kernels.dropout_apply(x, 0.5, **{"seed": 0, "stream": 0, "scale": 2.0, **kwargs}),
        error,
        pattern,
    )
    assert np.array_equal(x, X4)
    if before is not None:
        assert np.array_equal(out, before, equal_nan=True)


def test_a_refused_in_place_call_leaves_its_array_alone():
    x = X4.copy()
    for bad in ({"p": 1.5}, {"seed": -1}, {"scale": math.nan}, {"stream": 2**64}):
        refused(
            lambda bad=bad: kernels.dropout_apply(
                x, **{"p": 0.5, "seed": 0, "stream": 0, "scale": 2.0, "out": x, **bad}
            ),
            (TypeError, ValueError),
            r"^(dropout probability|seed|scale|stream)",
        )
        assert np.array_equal(x, X4)


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda: dropkit.philox4x32([0.0, 0, 0, 0], [0, 0]),
            TypeError,
            r"^counter must be an integer array of shape \(\.\.\., 4\), got float64",
        ),
        (
            lambda: dropkit.philox4x32([0, 0, 0], [0, 0]),
            TypeError,
            r"^counter must be an integer array of shape \(\.\.\., 4\)",
        ),
        (
            lambda: dropkit.philox4x32([[0, 0, 0, 0], [0]], [0, 0]),
            TypeError,
            r"^counter must be an integer array",
        ),
        (
            lambda: dropkit.philox4x32([0, 0, 0, 0], [True, False]),
            TypeError,
            r"^key must be an integer array of shape \(\.\.\., 2\)",
        ),
        (
            lambda: dropkit.philox4x32([0, 0, 0, 0], [-1, 0]),
            ValueError,
            r"^key words must be in \[0, 2\*\*32\)",
        ),
        (
            lambda: dropkit.philox4x32([2**32, 0, 0, 0], [0, 0]),
            ValueError,
            r"^counter words must be in \[0, 2\*\*32\)",
        ),
        (
            lambda: dropkit.philox4x32([2**70, 0, 0, 0], [0, 0]),
            TypeError,
            r"^counter must be an integer array",
        ),
        (
            lambda: dropkit.philox4x32(np.zeros((2, 4), int), np.zeros((3, 2), int)),
            ValueError,
            r"^counter's leading dims \(2,\) and key's \(3,\) must broadcast",
        ),
        (
            lambda: dropkit.philox4x32([0] * 4, [0] * 2, rounds=-1),
            ValueError,
            r"^rounds must be an integer >= 0, got -1",
        ),
        (
            lambda: dropkit.philox4x32([0] * 4, [0] * 2, rounds=1.5),
            ValueError,
            r"^rounds must be an integer >= 0, got 1.5",
        ),
        (
            lambda: dropkit.random_bits(0, 0, [0.5]),
            TypeError,
            r"^index must be an integer array, got dtype float64",
        ),
        (lambda: dropkit.random_bits(0, 0, [-1]), ValueError, r"^index must be non-negative"),
        (
            lambda: dropkit.random_bits(0, 0, [[0], [0, 1]]),
            TypeError,
            r"^index must be an integer array, got list",
        ),
        (
            lambda: dropkit.random_bits(0, 0, [2**64]),
            TypeError,
            r"^index must be an integer array, got dtype object",
        ),
        (lambda: random_range(0, 0, 2**64 - 1, 2), ValueError, r"^start \+ count must be at most 2\*\*64"),
    ],
)
def test_the_generator_refuses_bad_words_indexes_and_rounds(call, error, pattern):
    refused(call, error, pattern)


def test_nn_layers_refuse_bad_inputs_gradients_and_construction():
    rng = np.random.default_rng(0)
    refused(lambda: Linear(0, 3, rng=rng), ValueError, r"^in_features must be a positive integer, got 0")
    refused(lambda: Linear(10**5000, 3, rng=rng), ValueError, r"^in_features \* out_features = an integer of")
    refused(lambda: Linear(3, 3, rng=None), TypeError, r"^rng must be a numpy.random.Generator, got NoneType")
    refused(
        lambda: Linear(3, 3, rng=rng, dtype=np.int32),
        TypeError,
        r"^dtype must be float16, float32 or float64, got int32",
    )
    refused(
        lambda: Linear(3, 3, rng=rng, dtype="nope"),
        TypeError,
        r"^dtype must be float16, float32 or float64, got 'nope'",
    )
    layer = Linear(3, 2, rng=rng)
    for bad in BAD_X:
        refused(lambda bad=bad: layer(bad), TypeError, r"^x must be a floating-point array")
    refused(lambda: layer(np.ones((2, 4))), ValueError, r"^x must have shape \(N, 3\), got \(2, 4\)")
    refused(lambda: layer.backward(np.ones((2, 2))), RuntimeError, "before forward")
    layer(np.ones((2, 3)))
    refused(
        lambda: layer.backward(np.ones((2, 3))),
        ValueError,
        r"^grad must have the forward output's shape \(2, 2\)",
    )
    refused(lambda: layer.backward(np.ones((2, 2), int)), TypeError, r"^grad must be a floating-point array")
    relu, flatten = ReLU(), Flatten()
    refused(lambda: relu([1, 2]), TypeError, r"^x must be a floating-point array")
    relu(np.ones((2, 3)))
    refused(
        lambda: relu.backward(np.ones(6)), ValueError, r"^grad must have the forward output's shape \(2, 3\)"
    )
    refused(
        lambda: flatten(np.float64(1.0)),
        ValueError,
        r"^x must have a batch dimension \(N, \.\.\.\), got a 0-d array",
    )
    flatten(np.ones((2, 3, 4)))
    refused(
        lambda: flatten.backward(np.ones((2, 11))),
        ValueError,
        r"^grad must have the forward output's shape \(2, 12\)",
    )
    refused(
        lambda: Sequential(relu, 5),
        TypeError,
        r"^layers must have forward and backward methods; layer 1 is 5",
    )
    refused(lambda: SGD([5], lr=0.1), TypeError, r"^params must be Parameters")
    for lr in (0, -1.0, math.nan, math.inf, True, "0.1", 10**5000):
        refused(lambda lr=lr: SGD([], lr=lr), ValueError, r"^lr must be a positive finite number, got \S")
    loss = SoftmaxCrossEntropy()
    refused(lambda: loss(np.ones((2, 3), int), [0, 1]), TypeError, r"^logits must be a floating-point array")
    refused(
        lambda: loss(np.ones((2, 3)), [0.0, 1.0]),
        ValueError,
        r"^labels must be an integer array of shape \(2,\)",
    )
    refused(lambda: loss(np.ones((2, 3)), [0, 3]), ValueError, r"^labels must be in \[0, 3\)")
    refused(lambda: loss(np.ones((2, 3)), [[0], [1, 2]]), ValueError, r"^labels must be an integer array")
    refused(
        lambda: softmax(np.ones((2, 0))),
        ValueError,
        r"^logits must have at least one class along the last axis",
    )


def test_drop_connect_linear_refuses_bad_input_and_a_failed_forward_moves_nothing(monkeypatch):
    layer = dropkit.DropConnectLinear(4, 3, 0.5, rng=np.random.default_rng(0), seed=0)
    x = np.ones((2, 4), np.float32)
    y = layer(x)
    before = (layer.calls, layer._drawn, layer._x)
    for bad in BAD_X:
        refused(lambda bad=bad: layer(bad), TypeError, r"^x must be a floating-point")
    refused(lambda: layer(np.ones((2, 5))), ValueError, r"^x must have shape \(N, 4\), got \(2, 5\)")
    layer.seed = 2**64
    refused(lambda: layer(x), ValueError, r"^seed must be an integer in \[0, 2\*\*64\)")
    layer.seed = 0
    monkeypatch.setattr(layer, "_drop", lambda *args: (_ for _ in ()).throw(MemoryError("no room")))
    with pytest.raises(MemoryError):
        layer(x)
    monkeypatch.undo()
    assert (layer.calls, layer._drawn, layer._x) == before
    refused(
        lambda: layer.backward(np.ones((2, 4))),
        ValueError,
        r"^grad must have the forward output's shape \(2, 3\)",
    )
    assert np.array_equal(layer.backward(np.ones_like(y)), layer.backward(np.ones_like(y)))


def test_mc_functions_refuse_bad_probabilities_labels_and_models():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    for bad, error, pattern in [
        (np.ones(3), ValueError, r"^probs must have shape \(N, classes\) with N, classes > 0, got \(3,\)"),
        (np.ones((0, 2)), ValueError, r"^probs must have shape"),
        ([[0.5, math.nan]], ValueError, r"^probs must be probabilities in \[0, 1\]"),
        ([[-0.5, 1.5]], ValueError, r"^probs must be probabilities in \[0, 1\]"),
        ([["a", "b"]], TypeError, r"^probs must be a real array of probabilities, got dtype <U1"),
        ([[0.5], [0.5, 0.5]], TypeError, r"^probs must be an array, got list"),
        ([[0.5j, 0.5]], TypeError, r"^probs must be a real array"),
    ]:
        refused(lambda bad=bad: predictive_entropy(bad), error, pattern)
        refused(lambda bad=bad: summarize(bad, [0]), error, pattern)
    refused(lambda: summarize(probs, [0, 2]), ValueError, r"^labels must be class indexes in \[0, 2\)")
    refused(
        lambda: summarize(probs, [0.0, 1.0]), ValueError, r"^labels must be an integer array of shape \(2,\)"
    )
    refused(
        lambda: reliability_bins(probs, [0, 1], bins=0),
        ValueError,
        r"^bins must be a positive integer, got 0",
    )
    refused(
        lambda: reliability_bins(probs, [0, 1], bins=10**5000),
        ValueError,
        r"^bins must be at most 1048576, got an integer of 16610 bits",
    )
    refused(
        lambda: mc_predictive_mean(5, None, 2),
        TypeError,
        r"^sample_logits must be a function of x returning logits, got 5",
    )
    model = Sequential(dropkit.Dropout(0.5, seed=0))
    for samples in (0, -1, 1.5, True, None):
        refused(
            lambda s=samples: mc_dropout_predict(model, np.ones((1, 2)), s),
            ValueError,
            r"^samples must be a positive integer",
        )
        refused(
            lambda s=samples: mc_predictive_mean(lambda x: x, np.ones((1, 2)), s),
            ValueError,
            r"^samples must be",
        )
    refused(
        lambda: mc_dropout_predict(5, np.ones((1, 2)), 2),
        TypeError,
        r"^model must be a dropkit.nn.Sequential, got int",
    )
    assert model[0].calls == 0


@oracle.FAST
@given(
    st.one_of(
        st.floats(allow_nan=True),
        st.integers(),
        st.complex_numbers(),
        st.text(max_size=5),
        st.none(),
        st.booleans(),
    )
)
def test_any_value_for_p_is_accepted_exactly_when_it_is_a_real_in_0_1(p):
    x = X4[:1, :1].copy()
    is_real = isinstance(p, (int, float)) and not isinstance(p, bool)
    if is_real and 0 <= p <= 1:
        y = dropkit.dropout(x, p, seed=0)
        assert np.array_equal(y, oracle.masked(x, float(p), 0, 0, oracle.inverted_scale(float(p))))
        return
    error = refused(
        lambda: dropkit.dropout(x, p, seed=0), (TypeError, ValueError), r"(dropout probability|^p must)"
    )
    assert isinstance(error, ValueError if is_real else TypeError)
    assert np.array_equal(x, X4[:1, :1])
