"""Hostile arguments to the NumPy face's core: shapes, shard geometry, the kernels, the generator,
``dropkit.nn`` and ``dropkit.mc``. Each is a one-line TypeError/ValueError that writes nothing."""

import math

import numpy as np
import pytest

import dropkit
from dropkit import kernels
from dropkit.mc import mc_dropout_predict, mc_predictive_mean, predictive_entropy, reliability_bins, summarize
from dropkit.nn import SGD, Flatten, Linear, ReLU, Sequential, SoftmaxCrossEntropy, softmax
from dropkit.noise import gaussian_noise
from dropkit.philox import random_range
from dropkit.sharding import Shard, shard_dropout_apply, shard_keep_mask
from test_hostile_args import BAD_X, X4, ids, refused


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
    layer = dropkit.DropConnectLinear(4, 3, p=0.5, rng=np.random.default_rng(0), seed=0)
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


def test_at_p_one_any_real_scale_goes_but_a_non_number_does_not():
    for scale in (math.inf, -math.inf, math.nan, 10**5000):
        assert not kernels.dropout_apply(X4, 1.0, seed=0, stream=0, scale=scale).any()
        shard = Shard((4, 3, 4, 4), (1, 0, 0, 1), (2, 3, 4, 3))
        assert not shard.dropout_apply(X4[..., :3].copy(), 1.0, seed=0, stream=0, scale=scale).any()
    refused(lambda: kernels.dropout_apply(X4, 1.0, seed=0, stream=0, scale="2"), TypeError, r"^scale must be")
