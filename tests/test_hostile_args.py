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
    "DropConnectLinear": lambda p: dropkit.DropConnectLinear(4, 3, p=p, rng=np.random.default_rng(0)),
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
