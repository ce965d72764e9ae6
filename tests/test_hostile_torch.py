"""Hostile input to the torch face: equal to the scalar oracle everywhere, and every refusal clean.

Random shapes, dtypes (bfloat16 included), strides (transposed, channels_last, expanded), p at its
edges, seeds and streams up to 2^64 - 1 and shards past 2^63, compared with ``tests/oracle.py``; then
bad arguments, each a clear error that moves no state (call counter, torch's generator, the input).
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import oracle

torch = pytest.importorskip("torch")

import dropkit.torch as dt  # noqa: E402
import dropkit.torch.functional as F  # noqa: E402
from torch_common import DTYPES  # noqa: E402

u64 = st.one_of(st.sampled_from([0, 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
probability = st.one_of(st.sampled_from([0.0, 2**-32, 0.5, 1 - 2**-32, 1.0]), st.floats(0.0, 1.0))
LAYOUTS = ["contiguous", "transposed", "channels_last", "expanded"]


def make_tensor(shape, dtype, layout, seed):
    """A float tensor of ``shape`` laid out in memory as ``layout``; values depend on ``seed`` only."""
    generator = torch.Generator().manual_seed(seed)
    if layout == "expanded" and shape:
        return (4 * torch.randn((1, *shape[1:]), generator=generator)).to(dtype).expand(shape)
    if layout == "transposed" and len(shape) >= 2:
        return (
            (4 * torch.randn(shape[::-1], generator=generator))
            .to(dtype)
            .permute(*reversed(range(len(shape))))
        )
    x = (4 * torch.randn(shape, generator=generator)).to(dtype)
    if layout == "channels_last" and len(shape) == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def product(value, scale, dtype):
    """The contract's rounding: float32 product (float64 for float64 data), rounded once to ``dtype``."""
    if dtype == torch.float64:
        return value * scale
    wide = float(np.float32(value)) * float(np.float32(scale))  # exact in float64
    return torch.tensor(float(np.float32(wide)), dtype=torch.float32).to(dtype).item()


def oracle_masked(x, p, seed, stream, scale, mask_shape=None):
    """``x * keep * scale`` element by element, the mask over ``mask_shape`` broadcast (see oracle.masked)."""
    shape = tuple(x.shape)
    mask_shape = shape if mask_shape is None else mask_shape
    out = torch.empty(shape, dtype=x.dtype)
    for position in np.ndindex(*shape):
        at = tuple(0 if m == 1 else i for i, m in zip(position, mask_shape, strict=True))
        kept = p != 1.0 and oracle.keep(seed, stream, oracle.flat_index(at, mask_shape), p)
        out[position] = product(x[position].item(), scale, x.dtype) if kept else 0.0
    return out


def assert_same(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.equal(actual, expected), (actual, expected)


shapes = st.lists(st.integers(0, 3), max_size=5).map(tuple)


@oracle.FAST
@given(shapes, st.sampled_from(DTYPES), st.sampled_from(LAYOUTS), probability, u64, u64)
def test_functional_dropout_equals_the_oracle_for_any_layout(shape, dtype, layout, p, seed, stream):
    x = make_tensor(shape, dtype, layout, seed & 0xFFFF)
    before = x.clone()
    y = F.dropout(x, p, seed=seed, stream=stream)
    assert torch.equal(x, before)
    if p == 0.0 or x.numel() == 0:
        assert y is x
        return
    assert_same(y, oracle_masked(x, p, seed, stream, oracle.inverted_scale(p)))


@oracle.FAST
@given(st.data(), st.sampled_from(DTYPES), probability, u64, u64)
def test_functional_variants_equal_the_oracle_on_their_mask_shapes(data, dtype, p, seed, stream):
    variant = data.draw(st.sampled_from(["dropout1d", "dropout2d", "dropout3d", "locked", "path", "noise"]))
    spatial = {"dropout1d": 1, "dropout2d": 2, "dropout3d": 3}.get(variant)
    ndim = spatial + 2 if spatial else data.draw(st.integers(3 if variant == "locked" else 1, 4))
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    x = make_tensor(shape, dtype, data.draw(st.sampled_from(LAYOUTS)), seed & 0xFFFF)
    if spatial:
        y = getattr(F, variant)(x, p, seed=seed, stream=stream)
        mask_shape = shape[:2] + (1,) * spatial
    elif variant == "locked":
        y = F.locked_dropout(x, p, seed=seed, stream=stream)
        mask_shape = (1, *shape[1:])
    elif variant == "path":
        y = F.drop_path(x, p, seed=seed, stream=stream)
        mask_shape = (shape[0],) + (1,) * (ndim - 1)
    else:
        noise_shape = tuple(data.draw(st.sampled_from([1, None])) for _ in shape)
        y = F.dropout(x, p, seed=seed, stream=stream, noise_shape=noise_shape)
        mask_shape = tuple(d if n is None else 1 for n, d in zip(noise_shape, shape, strict=True))
    if p == 0.0:
        assert torch.equal(y, x)
        return
    assert_same(y, oracle_masked(x, p, seed, stream, oracle.inverted_scale(p), mask_shape))


@oracle.FAST
@given(probability, u64)
def test_the_seeded_module_takes_stream_k_on_call_k_and_backward_replays_it(p, seed):
    layer = dt.Dropout(p, seed=seed)
    for k in range(3):
        x = make_tensor((2, 3), torch.float32, "contiguous", k).requires_grad_()
        y = layer(x)
        y.backward(torch.ones_like(y))
        if p > 0:
            scale = oracle.inverted_scale(p)
            assert_same(y.detach(), oracle_masked(x.detach(), p, seed, k, scale))
            assert_same(x.grad, oracle_masked(torch.ones(2, 3), p, seed, k, scale))
    assert layer.calls == 3


SHARDS_PAST_2_63 = [
    ((2**64,), (2**63,), (4,)),
    ((2**64,), (2**64 - 5,), (5,)),
    ((2**62, 4), (2**62 - 1, 0), (1, 4)),  # the last row: indexes 2**64 - 4 ... 2**64 - 1
    ((2**63 - 2, 2), (2**62, 0), (3, 2)),  # rows 2**62 ...: indexes from 2**63
]


@pytest.mark.parametrize(("global_shape", "offsets", "local"), [((2**64,), (2**63 - 2,), (4,))])
def test_a_shard_crossing_2_63_draws_the_oracles_mask(global_shape, offsets, local):
    x = torch.ones(local)
    y = F.dropout(x, 0.5, seed=3, stream=1, global_shape=global_shape, offsets=offsets)
    expected = [2.0 if oracle.keep(3, 1, offsets[0] + i, 0.5) else 0.0 for i in range(local[0])]
    assert y.tolist() == expected


@pytest.mark.parametrize(("global_shape", "offsets", "local"), SHARDS_PAST_2_63)
def test_a_shard_past_2_63_draws_the_oracles_mask(global_shape, offsets, local):
    x = torch.ones(local, dtype=torch.float64)
    y = F.dropout(x, 0.5, seed=3, stream=1, global_shape=global_shape, offsets=offsets)
    expected = torch.tensor(
        [
            2.0
            if oracle.keep(
                3,
                1,
                oracle.flat_index(tuple(o + i for o, i in zip(offsets, pos, strict=True)), global_shape),
                0.5,
            )
            else 0.0
            for pos in np.ndindex(*local)
        ],
        dtype=torch.float64,
    ).reshape(local)
    assert_same(y, expected)


X = torch.ones(2, 3, 4, 4)
BAD_P = [math.nan, math.inf, -0.5, 1.5, 10**5000, 0.5j, "0.5", None, True, torch.tensor(0.5), np.array(0.5)]

FUNCTIONS = {
    "dropout": lambda **k: F.dropout(X, **k),
    "dropout-noise_shape": lambda **k: F.dropout(X, noise_shape=(None, None, 1, 1), **k),
    "channel_dropout": lambda **k: F.channel_dropout(X, **k),
    "dropout2d": lambda **k: F.dropout2d(X, **k),
    "locked_dropout": lambda **k: F.locked_dropout(X, **k),
    "drop_path": lambda **k: F.drop_path(X, **k),
    "gaussian_dropout": lambda **k: F.gaussian_dropout(X, **k),
    "alpha_dropout": lambda **k: F.alpha_dropout(X, training=True, **k),
    "feature_alpha_dropout": lambda **k: F.feature_alpha_dropout(X, training=True, **k),
    "drop_block2d": lambda **k: F.drop_block2d(X, block_size=3, **k),
}
MODULES = {
    "Dropout": dt.Dropout,
    "Dropout1d": dt.Dropout1d,
    "Dropout2d": dt.Dropout2d,
    "Dropout3d": dt.Dropout3d,
    "LockedDropout": dt.LockedDropout,
    "DropPath": dt.DropPath,
    "GaussianDropout": dt.GaussianDropout,
    "AlphaDropout": dt.AlphaDropout,
    "FeatureAlphaDropout": dt.FeatureAlphaDropout,
    "DropBlock2d": dt.DropBlock2d,
    "DropConnectLinear": lambda p: dt.DropConnectLinear(4, 3, p=p),
}


def refused(call, error, pattern):
    with pytest.raises(error, match=pattern) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize("name", sorted(FUNCTIONS) + sorted(MODULES))
@pytest.mark.parametrize("p", BAD_P, ids=[f"{type(p).__name__}{i}" for i, p in enumerate(BAD_P)])
def test_every_bad_p_is_a_clear_error(name, p):
    call = (lambda: FUNCTIONS[name](p=p, seed=0)) if name in FUNCTIONS else (lambda: MODULES[name](p))
    is_real = isinstance(p, (int, float)) and not isinstance(p, bool)
    error, pattern = (
        (ValueError, "dropout probability has to be between 0 and 1")
        if is_real
        else (TypeError, r"^p must be a real number")
    )
    refused(call, error, pattern)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize(("p", "training"), [(0.0, True), (1.0, True), (0.5, False)])
@pytest.mark.parametrize(
    "seed", [-1, 2**64, 10**5000, 1.0, "1", True], ids=["-1", "2**64", "10**5000", "1.0", "str", "True"]
)
def test_a_bad_seed_is_an_error_whatever_p_and_the_mode(name, p, training, seed):
    if name == "gaussian_dropout" and p == 1.0:
        return
    error = ValueError if isinstance(seed, int) and not isinstance(seed, bool) else TypeError
    call = FUNCTIONS[name]
    kwargs = {"p": p, "seed": seed}
    if "alpha" not in name:
        kwargs["training"] = training
    refused(lambda: call(**kwargs), error, r"^seed must be an integer in \[0, 2\*\*64\)")


BAD_INPUTS = [
    [1.0, 2.0],
    np.ones((2, 3, 4, 4)),
    torch.ones(2, 3, 4, 4, dtype=torch.int64),
    torch.ones(2, 3, 4, 4, dtype=torch.bool),
    torch.ones(2, 3, 4, 4, dtype=torch.complex64),
]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("bad", range(len(BAD_INPUTS)), ids=["list", "ndarray", "int64", "bool", "complex64"])
def test_a_non_float_tensor_input_is_a_type_error(name, bad):
    refused(
        lambda: _call_with(name, BAD_INPUTS[bad]),
        TypeError,
        r"^input must be a (torch.Tensor|floating-point)",
    )


@pytest.mark.parametrize("bad", [0, 1], ids=["list", "ndarray"])
def test_drop_block2d_refuses_a_non_tensor_with_a_type_error(bad):
    refused(lambda: _call_with("drop_block2d", BAD_INPUTS[bad]), TypeError, r"^input must be a torch.Tensor")


def _call_with(name, x):
    kwargs = {"seed": 0, "p": 0.5}
    if name == "dropout":
        return F.dropout(x, **kwargs)
    if name == "dropout-noise_shape":
        return F.dropout(x, noise_shape=(None, None, 1, 1), **kwargs)
    if name == "drop_block2d":
        return F.drop_block2d(x, block_size=3, **kwargs)
    if "alpha" in name:
        return getattr(F, name)(x, training=True, **kwargs)
    return getattr(F, name)(x, **kwargs)


@pytest.mark.parametrize("name", [n for n in sorted(MODULES) if n != "DropConnectLinear"])
@pytest.mark.parametrize("seeded", [True, False])
def test_a_module_refusing_its_input_moves_no_counter_and_no_generator(name, seeded):
    layer = MODULES[name](0.5)
    layer.seed = 7 if seeded else None
    good = X[0] if name == "Dropout1d" else X  # (C, L) unbatched for Dropout1d
    layer(good)
    calls, state = layer.calls, torch.get_rng_state()
    for bad in BAD_INPUTS[2:]:
        bad = bad[0] if name == "Dropout1d" else bad
        refused(lambda bad=bad: layer(bad), TypeError, r"^input must be a floating-point tensor")
    assert layer.calls == calls and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("seeded", [True, False])
def test_drop_connect_linear_refusing_its_input_moves_no_counter_and_no_generator(seeded):
    layer = dt.DropConnectLinear(4, 3, p=0.5, seed=7 if seeded else None)
    calls, state = layer.weight_dropout.calls, torch.get_rng_state()
    with pytest.raises((TypeError, RuntimeError, ValueError)):
        layer(torch.ones(2, 4, dtype=torch.float64))  # a float64 input to a float32 layer
    assert layer.weight_dropout.calls == calls and torch.equal(torch.get_rng_state(), state)


def test_weight_drop_refusing_its_input_moves_no_generator():
    layer = dt.WeightDrop(torch.nn.Linear(4, 3), "weight", p=0.5)
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError):
        layer(torch.ones(2, 5))
    assert torch.equal(torch.get_rng_state(), state)


def test_weight_drop_with_a_seed_refusing_its_input_moves_no_counter():
    layer = dt.WeightDrop(torch.nn.Linear(4, 3), "weight", p=0.5, seed=1)
    with pytest.raises(RuntimeError):
        layer(torch.ones(2, 5))
    assert layer.dropouts[0].calls == 0


@pytest.mark.parametrize("call", ["functional", "module"])
def test_a_global_shape_that_is_not_a_sequence_names_the_argument(call):
    x = torch.ones(1)
    if call == "functional":
        refused(
            lambda: F.dropout(x, 0.5, seed=0, global_shape=5, offsets=(0,)),
            TypeError,
            r"^global_shape must be",
        )
    else:
        refused(
            lambda: dt.Dropout(0.5, seed=0)(x, global_shape=5, offsets=(0,)),
            TypeError,
            r"^global_shape must be",
        )


def test_bad_shard_geometry_is_a_value_error_naming_the_argument():
    x = torch.ones(4)
    refused(
        lambda: F.dropout(x, 0.5, seed=0, global_shape=(3,), offsets=(0,)),
        ValueError,
        r"the shard runs past global_shape\[0\] = 3",
    )
    refused(
        lambda: F.dropout(x, 0.5, seed=0, global_shape=(4,)),
        ValueError,
        r"global_shape and offsets go together",
    )
    refused(
        lambda: F.dropout(x, 0.5, seed=0, global_shape=(2**40, 2**40), offsets=(0, 0)),
        ValueError,
        r"dims|more than 2\*\*64|local shape",
    )


def test_noise_shape_block_size_and_gamma_scale_are_checked_like_numpys():
    refused(
        lambda: F.dropout(X, 0.5, seed=0, noise_shape=5),
        TypeError,
        r"^noise_shape must be a sequence of ints and None",
    )
    refused(
        lambda: F.drop_block2d(X, 0.5, gamma_scale=10**5000, seed=0),
        ValueError,
        r"^gamma_scale must be a positive number, got an integer of",
    )
    assert F.drop_block2d(X, 0.5, block_size=np.int64(3), seed=0).shape == X.shape


@pytest.mark.parametrize(
    "call",
    [
        lambda: dt.mc_predict(5, torch.ones(1, 2), 2),
        lambda: dt.WeightDrop(5),
        lambda: dt.WeightDrop(torch.nn.Linear(2, 2), 5),
    ],
    ids=["mc_predict-model", "WeightDrop-module", "WeightDrop-names"],
)
def test_non_modules_and_non_names_are_type_errors(call):
    refused(call, TypeError, r"must be")


def test_a_gradient_of_the_wrong_shape_is_torchs_clear_runtime_error():
    x = torch.ones(2, 3, requires_grad=True)
    y = dt.Dropout(0.5, seed=0)(x)
    with pytest.raises(RuntimeError, match=r"Mismatch in shape"):
        y.backward(torch.ones(3, 2))
    assert x.grad is None


def test_module_call_counters_refuse_values_outside_their_range():
    layer = dt.Dropout(0.5, seed=0)
    for value, error in [(-1, ValueError), (2**63, ValueError), (10**5000, ValueError), (1.5, TypeError)]:
        refused(
            lambda value=value: setattr(layer, "calls", value),
            error,
            r"^calls must be an integer in \[0, 2\*\*6[34]\)",
        )
    assert layer.calls == 0
