"""DropConnect and weight drop on torch: the weight's mask is the reference's, call for call."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from dropkit.dropconnect import DropConnectLinear as NumpyDropConnectLinear  # noqa: E402
from dropkit.philox import keep_mask  # noqa: E402
from dropkit.torch import (  # noqa: E402
    DropConnectLinear,
    WeightDrop,
)
from torch_common import data  # noqa: E402

# --- DropConnect and weight drop -------------------------------------------------------------


def test_drop_connect_linear_drops_the_weight_with_the_reference_mask_and_is_linear_in_eval():
    layer = DropConnectLinear(5, 3, p=0.4, seed=12, dtype=torch.float64)
    x = data((4, 5), torch.float64).requires_grad_()
    for call in range(2):
        keep = torch.from_numpy(keep_mask((3, 5), 0.4, seed=12, stream=call))
        weight = torch.where(keep, layer.weight.detach() * (1 / 0.6), 0.0)
        assert torch.equal(layer(x), nn.functional.linear(x, weight, layer.bias))
    layer.weight.grad = None
    layer(x).sum().backward()  # call 2
    keep = torch.from_numpy(keep_mask((3, 5), 0.4, seed=12, stream=2))
    assert bool((layer.weight.grad[~keep] == 0).all()) and bool((layer.weight.grad[keep] != 0).all())
    layer.eval()
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    assert layer.weight_dropout.calls == 3


def test_drop_connect_linear_equals_the_numpy_layer():
    reference = NumpyDropConnectLinear(5, 3, p=0.5, rng=np.random.default_rng(0), seed=9, dtype=np.float64)
    reference.bias.value[:] = [0.1, -0.2, 0.3]
    layer = DropConnectLinear(5, 3, p=0.5, seed=9, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(reference.weight.value.T))  # NumPy stores W as (in, out)
        layer.bias.copy_(torch.from_numpy(reference.bias.value))
    for call in range(3):
        x = data((4, 5), torch.float64, generator_seed=call)
        upstream = data((4, 3), torch.float64, generator_seed=20 + call)
        layer.weight.grad = None
        y = layer(x)
        y.backward(upstream)
        torch.testing.assert_close(y, torch.from_numpy(reference(x.numpy())), rtol=1e-12, atol=1e-12)
        reference.backward(upstream.numpy())
        torch.testing.assert_close(layer.weight.grad, torch.from_numpy(reference.weight.grad.T))


def test_weight_drop_on_linear_gives_each_name_its_own_stream():
    linear = nn.Linear(4, 3).double()
    wrapped = WeightDrop(linear, ("weight", "bias"), p=0.5, seed=2**63)
    x = data((6, 4), torch.float64)
    for call in range(2):
        weight_keep = torch.from_numpy(keep_mask((3, 4), 0.5, seed=2**63, stream=2 * call))
        bias_keep = torch.from_numpy(keep_mask((3,), 0.5, seed=2**63, stream=2 * call + 1))
        weight = torch.where(weight_keep, linear.weight * 2, 0.0)
        bias = torch.where(bias_keep, linear.bias * 2, 0.0)
        assert torch.equal(wrapped(x), nn.functional.linear(x, weight, bias))
    wrapped.eval()
    assert torch.equal(wrapped(x), linear(x))
    # The parameters stay where they were: state_dict is the plain module's, prefixed.
    assert list(wrapped.state_dict()) == ["module.weight", "module.bias"]


def test_weight_drop_on_an_lstm_hidden_weight_forward_and_gradients():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 5)
    wrapped = WeightDrop(lstm, "weight_hh_l0", p=0.5, seed=3)
    x = torch.randn(7, 2, 4)
    output, (h, c) = wrapped(x)
    assert output.shape == (7, 2, 5) and h.shape == c.shape == (1, 2, 5)
    assert not torch.allclose(output, lstm(x)[0])  # half the recurrent weights are gone
    output.square().sum().backward()
    keep = torch.from_numpy(keep_mask((20, 5), 0.5, seed=3, stream=0))
    grad = lstm.weight_hh_l0.grad
    assert bool((grad[~keep] == 0).all()) and bool((grad[keep] != 0).all())
    assert lstm.weight_ih_l0.grad is not None and bool(lstm.weight_ih_l0.grad.ne(0).any())
    # The dropped weight is weight_hh_l0 * keep * 2: the LSTM run with it by hand agrees.
    with torch.no_grad():
        dropped = {"weight_hh_l0": torch.where(keep, lstm.weight_hh_l0 * 2, 0.0)}
        manual = torch.func.functional_call(lstm, dropped, (x,))[0]
        assert torch.equal(WeightDrop(lstm, "weight_hh_l0", p=0.5, seed=3)(x)[0], manual)
    wrapped.eval()
    assert torch.equal(wrapped(x)[0], lstm(x)[0])
