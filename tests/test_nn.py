"""dropkit.nn: every layer's backward is the derivative of its forward (finite differences), and the
pieces behave as documented (initialisation, modes, SGD, stable loss, errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropkit import Dropout, keep_mask
from dropkit.nn import (
    SGD,
    Flatten,
    Linear,
    Parameter,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    cross_entropy,
    log_softmax,
    softmax,
)

EPS = 1e-6
# Central differences in float64 have error O(EPS**2 * f''') + O(machine eps * |f| / EPS) ~ 1e-10
# for these smooth, O(1) functions; 1e-7 relative leaves room and still catches any wrong term.
RTOL, ATOL = 1e-7, 1e-9


def numerical_gradient(f, array: np.ndarray) -> np.ndarray:
    """d f / d array by central differences, perturbing ``array`` in place one element at a time."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + EPS
        plus = f()
        array[index] = saved - EPS
        minus = f()
        array[index] = saved
        grad[index] = (plus - minus) / (2 * EPS)
    return grad


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values in ±[0.1, 1]: ReLU's kink at 0 is then farther than EPS from every input."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    layer = Linear(5, 3, rng=rng, dtype=np.float64)
    layer.bias.value[:] = rng.normal(size=3)
    x, upstream = rng.normal(size=(4, 5)), rng.normal(size=(4, 3))

    def loss() -> float:
        return float(np.sum(layer.forward(x) * upstream))

    layer.forward(x)
    grad_x = layer.backward(upstream)
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        layer.weight.grad, numerical_gradient(loss, layer.weight.value), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        layer.bias.grad, numerical_gradient(loss, layer.bias.value), rtol=RTOL, atol=ATOL
    )


def test_relu_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    relu, x, upstream = ReLU(), away_from_zero(rng, (3, 7)), rng.normal(size=(3, 7))
    relu.forward(x)
    grad = relu.backward(upstream)
    expected = numerical_gradient(lambda: float(np.sum(relu.forward(x) * upstream)), x)
    np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL)


def test_flatten_backward_matches_finite_differences():
    rng = np.random.default_rng(2)
    flatten, x, upstream = Flatten(), rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 12))
    assert flatten.forward(x).shape == (2, 12)
    grad = flatten.backward(upstream)
    expected = numerical_gradient(lambda: float(np.sum(flatten.forward(x) * upstream)), x)
    np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL)


def test_softmax_cross_entropy_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    loss, logits, labels = SoftmaxCrossEntropy(), rng.normal(size=(6, 4)) * 3, rng.integers(0, 4, size=6)
    loss.forward(logits, labels)
    grad = loss.backward()
    expected = numerical_gradient(lambda: loss.forward(logits, labels), logits)
    np.testing.assert_allclose(grad, expected, rtol=RTOL, atol=ATOL)


def test_whole_mlp_with_dropout_backward_matches_finite_differences():
    """Sequential chains the layers' backwards; each Dropout replays its mask (stream reset to 0)."""
    rng = np.random.default_rng(4)
    drops = [Dropout(0.5, seed=11), Dropout(0.3, seed=12)]
    model = Sequential(
        Flatten(),
        Linear(6, 8, rng=rng, dtype=np.float64),
        ReLU(),
        drops[0],
        Linear(8, 8, rng=rng, dtype=np.float64),
        ReLU(),
        drops[1],
        Linear(8, 3, rng=rng, dtype=np.float64),
    )
    loss, x, labels = SoftmaxCrossEntropy(), rng.normal(size=(5, 2, 3)), np.array([0, 1, 2, 1, 0])

    def value() -> float:
        for drop in drops:
            drop.calls = 0  # the same (seed, stream), hence the same masks, on every evaluation
        return loss.forward(model.forward(x), labels)

    value()
    grad_x = model.backward(loss.backward())
    analytic = [grad_x] + [param.grad.copy() for param in model.parameters()]
    numeric = [numerical_gradient(value, x)] + [
        numerical_gradient(value, p.value) for p in model.parameters()
    ]
    for got, expected in zip(analytic, numeric, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    assert [drop.calls for drop in drops] == [1, 1]  # each evaluation drew (seed, stream 0) again


def test_mlp_gradients_match_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    model = Sequential(
        Linear(4, 6, rng=rng, dtype=np.float64), ReLU(), Linear(6, 3, rng=rng, dtype=np.float64)
    )
    loss, x, labels = SoftmaxCrossEntropy(), rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    value = loss(model(x), labels)
    model.backward(loss.backward())

    w1, b1, w2, b2 = (torch.tensor(p.value, requires_grad=True) for p in model.parameters())
    hidden = torch.relu(torch.tensor(x) @ w1 + b1)
    reference = torch.nn.functional.cross_entropy(hidden @ w2 + b2, torch.tensor(labels))
    reference.backward()
    assert value == pytest.approx(reference.item(), rel=1e-12)
    for param, tensor in zip(model.parameters(), (w1, b1, w2, b2), strict=True):
        np.testing.assert_allclose(param.grad, tensor.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_kaiming_uniform_init_is_bounded_seeded_and_has_he_variance():
    layer = Linear(64, 256, rng=np.random.default_rng(0))
    bound = math.sqrt(6 / 64)
    weights = layer.weight.value.astype(np.float64)
    assert layer.weight.value.dtype == np.float32 and layer.weight.value.shape == (64, 256)
    assert np.abs(weights).max() <= bound
    assert not layer.bias.value.any()
    # U(-b, b) has variance b^2/3 = 2/fan_in (He et al.). The sample variance of n = 16384 draws has
    # standard error b^2 * sqrt((1/5 - 1/9) / n) = 0.0023 b^2; 6 of them is the tolerance.
    assert abs(weights.var() - bound**2 / 3) < 6 * bound**2 * math.sqrt((1 / 5 - 1 / 9) / weights.size)
    again = Linear(64, 256, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.weight.value, layer.weight.value)


def test_sequential_train_and_eval_reach_the_dropout_layers():
    drop = Dropout(0.5, seed=0)
    model = Sequential(Flatten(), drop)
    x = np.ones((2, 2, 2), np.float32)
    assert model.eval() is model and drop.training is False
    np.testing.assert_array_equal(model(x), x.reshape(2, 4))
    assert drop.calls == 0  # inference draws nothing
    assert model.train() is model and drop.training is True
    expected = keep_mask((2, 4), 0.5, seed=0, stream=0) * np.float32(2)  # kept units scaled by 1/(1-p)
    np.testing.assert_array_equal(model(x), expected)
    assert drop.calls == 1


def test_sequential_backward_runs_layers_in_reverse():
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def forward(self, x):
            calls.append(("forward", self.name))
            return x

        def backward(self, grad):
            calls.append(("backward", self.name))
            return grad

    model = Sequential(Recorder("a"), Recorder("b"))
    model.backward(model.forward(np.zeros(1)))
    assert calls == [("forward", "a"), ("forward", "b"), ("backward", "b"), ("backward", "a")]


def test_sgd_step_subtracts_lr_times_grad_in_place():
    weight = Parameter(np.array([1.0, -2.0], np.float32), grad=np.array([0.5, 1.0], np.float32))
    untouched = Parameter(np.array([3.0]))
    value = weight.value
    SGD([weight, untouched], lr=0.5).step()
    assert weight.value is value and weight.value.dtype == np.float32
    np.testing.assert_array_equal(weight.value, [0.75, -2.5])
    np.testing.assert_array_equal(untouched.value, [3.0])  # no gradient yet: left alone


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf, True, "0.1"])
def test_sgd_rejects_a_bad_learning_rate(lr):
    with pytest.raises(ValueError, match=r"lr must be a positive finite number"):
        SGD([], lr=lr)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    assert cross_entropy(logits, [0, 1]) == pytest.approx(math.log(2) / 2)
    assert np.all(np.isfinite(log_softmax(logits * 100)))
    np.testing.assert_allclose(softmax(np.array([[1e4, 1e4]])), [[0.5, 0.5]])


def test_loss_is_log_classes_for_uniform_logits():
    assert SoftmaxCrossEntropy()(np.zeros((3, 10)), np.arange(3)) == pytest.approx(math.log(10))


def test_bad_shapes_and_labels_are_rejected():
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\), got \(4, 2\)"):
        layer(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        cross_entropy(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match=r"labels must be an integer array of shape \(2,\)"):
        cross_entropy(np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"in_features must be a positive integer, got 0"):
        Linear(0, 2, rng=np.random.default_rng(0))


@pytest.mark.parametrize("layer", [Linear(2, 2, rng=np.random.default_rng(0)), ReLU(), Flatten()])
def test_backward_before_forward_is_an_error(layer):
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        SoftmaxCrossEntropy().backward()
