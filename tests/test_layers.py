"""The NumPy reference Dropout layer and the functional form."""

import warnings

import numpy as np
import pytest

import dropkit
from dropkit import Dropout, dropout, keep_mask


def test_worked_trace_inverted_2d():
    layer = Dropout(0.5, seed=0)
    y = layer.forward(np.array([[1.0, 2.0, 3.0, 4.0]]), mask=[[1, 0, 1, 1]])
    assert y.tolist() == [[2.0, 0.0, 6.0, 8.0]]
    assert layer.backward(np.ones((1, 4))).tolist() == [[2.0, 0.0, 2.0, 2.0]]


def test_worked_trace_inverted_1d():
    layer = Dropout(0.5, seed=0)
    y = layer.forward(np.array([1.0, 2.0, 3.0, 4.0]), mask=np.array([1, 0, 1, 0]))
    assert y.tolist() == [2.0, 0.0, 6.0, 0.0]
    assert layer.backward(np.array([0.1, 0.2, 0.3, 0.4])).tolist() == [0.2, 0.0, 0.6, 0.0]


def test_supplied_mask_does_not_advance_the_stream():
    layer = Dropout(0.5, seed=3)
    layer.forward(np.ones(8), mask=np.ones(8))
    assert layer.calls == 0
    assert (layer(np.ones(8)) != 0).tolist() == keep_mask(8, 0.5, seed=3, stream=0).tolist()


def test_kth_training_call_uses_stream_k():
    layer, x = Dropout(0.3, seed=42), np.ones((16, 16))
    for k in range(3):
        y = layer(x)
        assert ((y != 0) == keep_mask(x.shape, 0.3, seed=42, stream=k)).all()
        np.testing.assert_array_equal(y, dropout(x, 0.3, seed=42, stream=k))
    layer.forward(x, training=False)
    assert layer.calls == 3  # inference draws nothing


def test_output_is_x_times_mask_times_scale():
    x = np.random.default_rng(0).normal(size=(7, 9))
    for mode, scale in (("inverted", 1 / 0.75), ("classic", 1.0)):
        keep = keep_mask(x.shape, 0.25, seed=5, stream=2)
        y = dropout(x, 0.25, seed=5, stream=2, mode=mode)
        np.testing.assert_array_equal(y, np.where(keep, x * scale, 0.0))


def test_backward_replays_the_latest_training_mask():
    layer, x = Dropout(0.5, seed=9), np.ones(64)
    layer(x)
    second = layer(x)
    np.testing.assert_array_equal(layer.backward(np.ones(64)), second)
    assert layer._replay.packed_mask is None  # (seed, stream) kept, no mask


@pytest.mark.parametrize(("mode", "factor"), [("inverted", 1.0), ("classic", 0.75)])
def test_backward_after_an_inference_forward_is_inferences_derivative(mode, factor):
    # Inference is x (inverted) or x * (1 - p) (classic): linear, so its gradient is the same map.
    layer, x, grad = Dropout(0.25, seed=9, mode=mode), np.ones(64), np.arange(64.0)
    layer(x)  # a training call first: backward must not replay its mask
    layer.forward(x, training=False)
    np.testing.assert_array_equal(layer.backward(grad), grad * factor)


def test_backward_keeps_at_most_one_bit_per_element_for_a_supplied_mask():
    layer = Dropout(0.5, seed=0)
    layer.forward(np.ones(1000), mask=np.ones(1000, bool))
    assert layer._replay.packed_mask.nbytes == 125


def test_inference_inverted_returns_input_itself():
    x = np.arange(4.0)
    assert Dropout(0.5, seed=0).forward(x, training=False) is x
    assert Dropout(0.5, seed=0).eval()(x) is x
    assert dropout(x, 0.5, training=False, seed=0) is x


def test_classic_inference_scales_by_keep_probability():
    x = np.arange(4.0)
    np.testing.assert_array_equal(Dropout(0.25, mode="classic", seed=0).eval()(x), x * 0.75)


def test_p0_is_identity_with_all_ones_mask():
    layer, x = Dropout(0.0, seed=1), np.random.default_rng(1).normal(size=100)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(np.ones(100)), np.ones(100))


def test_p1_gives_zeros_and_zero_gradient_without_warnings():
    layer, x = Dropout(1.0, seed=1), np.array([0.0, 1.0, np.inf, -2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, g = layer(x), layer.backward(np.ones(4))
    assert y.tolist() == [0.0] * 4 and g.tolist() == [0.0] * 4


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_is_kept_and_product_rounded_once(dtype):
    x = np.random.default_rng(2).normal(size=1000).astype(dtype)
    layer = Dropout(0.3, seed=4)
    y = layer(x)
    g = layer.backward(np.ones_like(x))
    assert y.dtype == dtype and g.dtype == dtype
    wide = np.float64 if dtype == np.float64 else np.float32
    keep = keep_mask(1000, 0.3, seed=4, stream=0)
    expected = np.where(keep, x.astype(wide) * wide(1 / 0.7), 0).astype(dtype)
    np.testing.assert_array_equal(y, expected)


def test_empty_array():
    layer = Dropout(0.5, seed=0)
    assert layer(np.zeros((0, 3))).shape == (0, 3)
    assert layer.backward(np.zeros((0, 3))).shape == (0, 3)


def test_unbiased_in_expectation():
    # Each output element is x * B / (1 - p) with B ~ Bernoulli(1 - p): mean x, standard
    # deviation |x| sqrt(p / (1 - p)). Over n = 200,000 draws the sample mean's error is below
    # 6 standard errors, 6 |x| sqrt(p / ((1 - p) n)), except with probability ~2e-9.
    n, p = 200_000, 0.5
    x = np.array([1.0, -3.0, 0.25])
    out = dropout(np.broadcast_to(x, (n, 3)).copy(), p, seed=77)
    bound = 6 * np.abs(x) * np.sqrt(p / ((1 - p) * n))
    assert (np.abs(out.mean(axis=0) - x) < bound).all()


def test_classic_training_mean_equals_inference_output():
    # Classic training output is x * B; its mean x (1 - p) is the inference output. Standard
    # deviation |x| sqrt(p (1 - p)); bound: 6 standard errors over n draws.
    n, p = 200_000, 0.3
    x = np.array([2.0, -1.0])
    out = dropout(np.broadcast_to(x, (n, 2)).copy(), p, seed=8, mode="classic")
    inference = dropout(x, p, training=False, seed=0, mode="classic")
    bound = 6 * np.abs(x) * np.sqrt(p * (1 - p) / n)
    assert (np.abs(out.mean(axis=0) - inference) < bound).all()


def test_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    x, upstream = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    for mode in ("inverted", "classic"):
        layer = Dropout(0.4, mode=mode, seed=12)
        layer(x)
        analytic = layer.backward(upstream)

        def loss(x_, mode=mode):
            return float((dropout(x_, 0.4, seed=12, stream=0, mode=mode) * upstream).sum())

        eps, numeric = 1e-6, np.zeros_like(x)
        for i in np.ndindex(x.shape):
            step = np.zeros_like(x)
            step[i] = eps
            numeric[i] = (loss(x + step) - loss(x - step)) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, atol=1e-8)


def test_same_seed_same_masks_and_unseeded_layers_differ():
    x = np.ones(4096)
    np.testing.assert_array_equal(Dropout(0.5, seed=5)(x), Dropout(0.5, seed=5)(x))
    a, b = Dropout(0.5), Dropout(0.5)
    assert a.seed != b.seed and 0 <= a.seed < 2**64


def test_repr():
    assert repr(Dropout(0.25, seed=7)) == "Dropout(p=0.25, mode='inverted', seed=7)"


@pytest.mark.parametrize("p", [-0.1, 1.1, float("nan")])
def test_p_out_of_range_is_rejected(p):
    with pytest.raises(ValueError, match=r"dropout probability has to be between 0 and 1"):
        Dropout(p)
    with pytest.raises(ValueError, match=r"dropout probability has to be between 0 and 1"):
        dropout(np.ones(3), p, seed=0)


@pytest.mark.parametrize("p", ["0.5", None, True])
def test_p_not_a_real_number_is_rejected(p):
    with pytest.raises(TypeError, match="p must be a real number"):
        Dropout(p)


@pytest.mark.parametrize(
    "x", [np.arange(4), np.array([True, False]), np.array(["a", "b"]), [1, 2], np.ones(2, complex)]
)
def test_non_float_input_is_rejected_without_advancing_the_stream(x):
    layer = Dropout(0.5, seed=0)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        layer(x)
    assert layer.calls == 0 and layer._replay is None


def test_bad_mode_and_seed():
    with pytest.raises(ValueError, match="mode must be 'inverted' or 'classic'"):
        Dropout(0.5, mode="scaled")
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        Dropout(0.5, seed=-1)


def test_bad_mask_is_rejected_and_changes_nothing():
    layer = Dropout(0.5, seed=0)
    layer(np.ones(4))
    replay = layer._replay
    with pytest.raises(ValueError, match=r"mask must have the mask shape \(4,\)"):
        layer.forward(np.ones(4), mask=[1, 0])
    with pytest.raises(ValueError, match="mask must contain only 0 and 1"):
        layer.forward(np.ones(4), mask=[1, 0, 2, 1])
    assert layer._replay is replay and layer.calls == 1


def test_backward_errors():
    layer = Dropout(0.5, seed=0)
    with pytest.raises(RuntimeError, match="forward first"):
        layer.backward(np.ones(3))
    layer(np.ones(3))
    with pytest.raises(ValueError, match=r"grad must have the forward input's shape \(3,\)"):
        layer.backward(np.ones(4))
    with pytest.raises(TypeError, match="grad must be a floating-point array"):
        layer.backward(np.ones(3, int))


def test_public_api():
    assert set(dropkit.__all__) >= {"Dropout", "dropout", "keep_mask", "philox4x32", "random_bits"}


def test_p_reassigned_out_of_range_is_rejected_before_any_state_changes():
    layer = Dropout(0.5, seed=0)
    layer(np.ones(4))
    replay, layer.p = layer._replay, 1.5  # e.g. a schedule that went wrong
    with pytest.raises(ValueError, match=r"dropout probability has to be between 0 and 1, but got 1\.5"):
        layer(np.ones(4))
    assert layer.calls == 1 and layer._replay is replay


def test_p1_with_a_supplied_mask_still_drops_everything():
    layer = Dropout(1.0, seed=0)
    assert layer.forward(np.ones(3), mask=[1, 0, 1]).tolist() == [0.0, 0.0, 0.0]
    assert layer.backward(np.ones(3)).tolist() == [0.0, 0.0, 0.0]
