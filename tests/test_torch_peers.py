"""dropkit's timm/torchvision layers draw the contract's masks: compared element for element with the
NumPy reference (:func:`dropkit.dropblock.dropped_blocks`, :func:`~dropkit.dropblock.fitted_blocks`,
:func:`dropkit.keep_mask`); backward replays them; in place is in place; bad input changes nothing."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dropkit import keep_mask  # noqa: E402
from dropkit.dropblock import dropped_blocks, fitted_blocks, normal_words  # noqa: E402
from dropkit.torch import timm, torchvision  # noqa: E402


@pytest.mark.parametrize("couple", [True, False])
@pytest.mark.parametrize("block_size", [2, 3, 5])
def test_timm_block_is_the_reference_mask(couple, block_size):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    y = timm.drop_block_2d(x, 0.3, block_size, couple_channels=couple, seed=5, stream=2)
    keep = ~dropped_blocks((2, 1 if couple else 3, 6, 7), 0.3, block_size, 1.0, seed=5, stream=2)
    keep = np.broadcast_to(keep, x.shape)
    np.testing.assert_array_equal(y.numpy() != 0, keep)  # x has no zeros: the mask, element for element
    # the rescale is timm's float32 numel / (kept + 1e-7): within float32 rounding of the exact ratio
    np.testing.assert_allclose(y.numpy()[keep] / x.numpy()[keep], keep.size / keep.sum(), rtol=2e-7)


def test_timm_with_noise_fills_dropped_blocks_with_the_reference_normals():
    x = torch.ones(1, 2, 5, 5)
    y = timm.drop_block_2d(x, 0.4, 3, with_noise=True, seed=1)
    dropped = dropped_blocks((1, 1, 5, 5), 0.4, 3, 1.0, seed=1)
    expected = np.where(dropped, normal_words((1, 1, 5, 5), seed=1).astype(np.float32), 1.0)
    np.testing.assert_array_equal(y.numpy(), np.broadcast_to(expected, x.shape))


@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 2, 5, 6, 4)])
def test_torchvision_block_is_the_reference_mask(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    fn = torchvision.drop_block2d if len(shape) == 4 else torchvision.drop_block3d
    y = fn(x, 0.3, 3, seed=9, stream=4)
    keep = ~fitted_blocks(shape, 0.3, 3, seed=9, stream=4)
    np.testing.assert_allclose(y.numpy(), x.numpy() * keep * (keep.size / (1e-6 + keep.sum())), rtol=1e-15)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_is_keep_mask(mode):
    x = torch.ones(8, 3)
    y = torchvision.stochastic_depth(x, 0.5, mode, seed=3)
    keep = keep_mask((8,) if mode == "row" else (1,), 0.5, seed=3)
    np.testing.assert_array_equal(y[:, 0].numpy(), np.broadcast_to(keep * 2.0, (8,)))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: timm.drop_block_2d(x, 0.3, 3, couple_channels=False, seed=1),
        lambda x: torchvision.drop_block2d(x, 0.3, 3, seed=1),
    ],
)
def test_block_backward_replays_the_forward_factor_and_saves_no_mask(call):
    x = torch.ones(2, 3, 8, 8, requires_grad=True)  # so y is the factor itself
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = call(x)
    y.backward(torch.ones_like(y))
    assert saved == []
    assert torch.equal(x.grad, y.detach())


def test_inplace_writes_into_the_input():
    x = torch.ones(2, 3, 8, 8)
    before = x.data_ptr()
    y = torchvision.drop_block2d(x, 0.5, 3, inplace=True, seed=0)
    z = torchvision.drop_block2d(torch.ones(2, 3, 8, 8), 0.5, 3, seed=0)
    assert y is x and x.data_ptr() == before
    assert torch.equal(x, z)


def test_seed_none_follows_torch_manual_seed():
    x = torch.ones(2, 3, 8, 8)
    torch.manual_seed(7)
    a = timm.DropBlock2d(0.3, 3)(x)
    torch.manual_seed(7)
    b = timm.DropBlock2d(0.3, 3)(x)
    assert torch.equal(a, b)


def test_seeded_module_takes_a_stream_per_call():
    layer, x = torchvision.DropBlock2d(0.3, 3, seed=4), torch.ones(1, 2, 8, 8)
    first, second = layer(x), layer(x)
    assert torch.equal(first, torchvision.drop_block2d(x, 0.3, 3, seed=4, stream=0))
    assert torch.equal(second, torchvision.drop_block2d(x, 0.3, 3, seed=4, stream=1))


def test_peers_errors_and_messages():
    with pytest.raises(ValueError, match=r"drop probability has to be between 0 and 1, but got 1.5"):
        torchvision.stochastic_depth(torch.ones(2), 1.5, "row")
    with pytest.raises(ValueError, match=r"mode has to be either 'batch' or 'row', but got col"):
        torchvision.StochasticDepth(0.1, "col")
    with pytest.raises(ValueError, match=r"drop_block2d expects input of shape \(N, C, H, W\)"):
        torchvision.drop_block2d(torch.ones(2, 3, 4), 0.1, 3)
    with pytest.raises(ValueError, match="block_size must be at most"):
        torchvision.drop_block2d(torch.ones(1, 1, 4, 4), 0.1, 5)


def test_rejected_call_draws_nothing():
    layer = torchvision.DropBlock2d(0.3, 3)
    state = torch.get_rng_state()
    with pytest.raises(ValueError):
        layer(torch.ones(2, 3, 4))
    assert torch.equal(torch.get_rng_state(), state) and layer.calls == 0


def test_reprs_are_the_peers():
    assert repr(torchvision.StochasticDepth(0.2, "row")) == "StochasticDepth(p=0.2, mode=row)"
    assert repr(torchvision.DropBlock3d(0.1, 3)) == "DropBlock3d(p=0.1, block_size=3, inplace=False)"
    assert timm.DropPath(0.25).extra_repr() == "drop_prob=0.250"
    layer = timm.DropPath(0.1)
    layer.drop_prob = 0.3  # timm's schedules assign drop_prob
    assert layer.p == 0.3
