"""The NumPy structured and noise variants: mask structure, reference masks, gradients, statistics."""

import numpy as np
import pytest

import dropkit
from dropkit import (
    AlphaDropout,
    ChannelDropout,
    DropBlock2d,
    Dropout,
    DropPath,
    GaussianDropout,
    LockedDropout,
    keep_mask,
)
from dropkit.dropblock import drop_block_keep, seed_rate
from dropkit.noise import SELU_ALPHA_PRIME, gaussian_noise
from dropkit.philox import random_bits


def numeric_grad(layer, x, upstream, eps=1e-6):
    """Central differences of sum(forward(x) * upstream), replaying the layer's last stream."""
    stream = layer.calls - 1

    def loss(x_):
        saved = layer.calls
        layer.calls = stream
        out = layer.forward(x_)
        layer.calls = saved
        return float((out * upstream).sum())

    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        grad[i] = (loss(x + step) - loss(x - step)) / (2 * eps)
    return grad


LAYERS = [
    (lambda: Dropout(0.4, seed=1, noise_shape=(None, 1, 3)), (4, 2, 3)),
    (lambda: ChannelDropout(0.5, spatial_dims=1, seed=2), (3, 4, 2)),
    (lambda: ChannelDropout(0.5, spatial_dims=2, mode="classic", seed=2), (2, 3, 2, 2)),
    (lambda: LockedDropout(0.3, seed=3), (3, 2, 4)),
    (lambda: LockedDropout(0.3, batch_first=True, seed=3), (2, 3, 4)),
    (lambda: DropPath(0.5, seed=4), (6, 3)),
    (lambda: DropPath(0.5, mode="batch", scale_by_keep=False, seed=5), (6, 3)),
    (lambda: GaussianDropout(0.3, seed=6), (3, 5)),
    (lambda: AlphaDropout(0.3, seed=7), (3, 5)),
    (lambda: AlphaDropout(0.3, feature=True, seed=7), (2, 3, 2)),
    (lambda: DropBlock2d(0.3, block_size=3, seed=8), (2, 2, 5, 5)),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_backward_matches_finite_differences(make, shape, rng):
    layer = make()
    x, upstream = rng.normal(size=shape), rng.normal(size=shape)
    layer(x)
    np.testing.assert_allclose(layer.backward(upstream), numeric_grad(layer, x, upstream), atol=1e-7)


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_inference_is_identity_or_classic_scale(make, shape, rng):
    layer, x = make().eval(), rng.normal(size=shape)
    expected = x * 0.5 if getattr(layer, "mode", None) == "classic" else x
    np.testing.assert_array_equal(layer(x), expected)


def test_noise_shape_draws_over_the_mask_shape_and_broadcasts():
    x = np.ones((4, 5, 3))
    y = dropkit.dropout(x, 0.5, seed=9, stream=2, noise_shape=(None, 1, None))
    keep = keep_mask((4, 1, 3), 0.5, seed=9, stream=2)
    np.testing.assert_array_equal(y, np.broadcast_to(keep * 2.0, x.shape))


def test_channel_dropout_drops_whole_maps_with_the_reference_mask():
    x = np.ones((3, 4, 5, 6))
    y = dropkit.channel_dropout(x, 0.5, spatial_dims=2, seed=1, stream=3)
    keep = keep_mask((3, 4), 0.5, seed=1, stream=3)
    np.testing.assert_array_equal(y, keep[:, :, None, None] * 2.0 * x)


def test_channel_dropout_unbatched_equals_batched_then_squeezed(rng):
    # torch's own check: the (C, *spatial) mask is the (1, C, *spatial) one.
    x = rng.normal(size=(4, 3, 3))
    unbatched = dropkit.channel_dropout(x, 0.5, spatial_dims=2, seed=5)
    batched = dropkit.channel_dropout(x[None], 0.5, spatial_dims=2, seed=5)
    np.testing.assert_array_equal(unbatched, batched[0])


@pytest.mark.parametrize(("spatial_dims", "ndim"), [(1, 4), (2, 2), (2, 5), (3, 3)])
def test_channel_dropout_rank_errors(spatial_dims, ndim):
    with pytest.raises(
        ValueError, match=rf"dropout{spatial_dims}d: Expected .* but received a {ndim}D input"
    ):
        ChannelDropout(0.5, spatial_dims=spatial_dims, seed=0)(np.ones((2,) * ndim))


def test_locked_dropout_shares_one_mask_over_time():
    x = np.ones((7, 3, 4))
    y = dropkit.locked_dropout(x, 0.5, seed=2)
    np.testing.assert_array_equal(y, np.broadcast_to(keep_mask((3, 4), 0.5, seed=2) * 2.0, x.shape))
    y_bf = dropkit.locked_dropout(x.transpose(1, 0, 2), 0.5, batch_first=True, seed=2)
    np.testing.assert_array_equal(y_bf, y.transpose(1, 0, 2))  # same (N, H) mask either layout


def test_drop_path_drops_whole_samples():
    x = np.ones((6, 2, 3))
    y = dropkit.drop_path(x, 0.5, seed=4, stream=1)
    keep = keep_mask((6,), 0.5, seed=4, stream=1)
    np.testing.assert_array_equal(y, keep[:, None, None] * 2.0 * x)
    batch = dropkit.drop_path(x, 0.5, mode="batch", seed=4, stream=1)
    assert np.unique(batch).size == 1  # all kept or all dropped
    assert (dropkit.drop_path(x, 0.5, seed=4, scale_by_keep=False) <= 1).all()


def test_gaussian_noise_is_box_muller_of_the_contract_words():
    w = random_bits(3, 1, np.arange(4)).astype(np.float64)
    u = (w + 0.5) / 2**32
    r0, r1 = np.sqrt(-2 * np.log(u[0])), np.sqrt(-2 * np.log(u[2]))
    z = [r0 * np.cos(2 * np.pi * u[1]), r0 * np.sin(2 * np.pi * u[1]), r1 * np.cos(2 * np.pi * u[3])]
    sigma = np.sqrt(0.2 / 0.8)
    np.testing.assert_allclose(
        gaussian_noise((3,), 0.2, seed=3, stream=1), 1 + sigma * np.array(z), rtol=1e-15
    )


def test_gaussian_dropout_mean_and_variance():
    # eps has mean 1 and variance p/(1-p) = 1 for p = 0.5. Over n = 10^6 draws the mean's error
    # is below 6 sigma / sqrt(n) = 0.006, and the sample variance's (std error sqrt(2/n) for a
    # normal, ~0.0014) below 0.01, except with negligible probability.
    n = 1_000_000
    y = dropkit.gaussian_dropout(np.ones(n), 0.5, seed=11)
    assert abs(y.mean() - 1) < 6 / np.sqrt(n)
    assert abs(y.var() - 1) < 0.01


def test_gaussian_dropout_rejects_p_one_and_masks():
    with pytest.raises(ValueError, match=r"p in \[0, 1\)"):
        GaussianDropout(1.0)
    with pytest.raises(TypeError, match="mask= is not accepted"):
        GaussianDropout(0.5, seed=0).forward(np.ones(3), mask=np.ones(3))


def test_alpha_dropout_matches_torch_formula_and_keeps_mean_and_std(rng):
    # torch: a = 1/sqrt((alpha^2 p + 1)(1 - p)); y = x*m*a + (m - 1)*alpha*a + alpha*a*p.
    x, p = rng.standard_normal(1_000_000), 0.2
    y = dropkit.alpha_dropout(x, p, seed=12)
    m = keep_mask(x.shape, p, seed=12)
    a = 1 / np.sqrt((SELU_ALPHA_PRIME**2 * p + 1) * (1 - p))
    expected = x * m * a + (m - 1.0) * SELU_ALPHA_PRIME * a + SELU_ALPHA_PRIME * a * p
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    # torch's own check: mean and std within 0.1 of the input's (0 and 1) for unit normal input.
    assert abs(y.mean()) < 0.1 and abs(y.std() - 1) < 0.1


def test_alpha_dropout_p_one_gives_zeros_and_zero_gradient():
    layer = AlphaDropout(1.0, seed=0)
    assert layer(np.ones(4)).tolist() == [0.0] * 4
    assert layer.backward(np.ones(4)).tolist() == [0.0] * 4


def test_feature_alpha_dropout_is_channelwise():
    y = dropkit.alpha_dropout(np.ones((3, 4, 5)), 0.5, feature=True, seed=1)
    assert all(np.unique(y[n, c]).size == 1 for n in range(3) for c in range(4))


def test_drop_block_keep_structure_and_reference_centres():
    shape, p, k = (2, 3, 9, 9), 0.2, 3
    keep = drop_block_keep(shape, p, block_size=k, seed=5, stream=2)
    gamma = seed_rate(p, k, 9, 9)
    centres = ~keep_mask(shape, gamma, seed=5, stream=2)
    centres[..., :1, :] = centres[..., -1:, :] = False  # a 3x3 block must fit
    centres[..., :, :1] = centres[..., :, -1:] = False
    expected = np.ones(shape, bool)
    for n, c, i, j in zip(*np.nonzero(centres), strict=True):
        expected[n, c, i - 1 : i + 2, j - 1 : j + 2] = False
    np.testing.assert_array_equal(keep, expected)


def test_drop_block_keeps_the_expected_fraction_and_rescales_by_numel_over_kept():
    # Element (i, j) survives when none of the n_ij valid block centres covering it is drawn:
    # E[kept fraction] = mean over the map of (1 - gamma)**n_ij, computed exactly below. The kept
    # count S is a function of the independent centre draws, each of which moves S by at most
    # k*k, so by Efron-Stein Var(S) <= centres * gamma * (1 - gamma) * (k*k)**2; the test allows
    # 6 such standard deviations.
    maps, size, k, p = 64, 32, 5, 0.1
    x = np.ones((8, 8, size, size))
    y = dropkit.drop_block2d(x, p, block_size=k, seed=3)
    gamma = seed_rate(p, k, size, size)
    fits = np.zeros((size, size), int)
    fits[k // 2 : size - (k - 1) // 2, k // 2 : size - (k - 1) // 2] = 1
    covering = np.lib.stride_tricks.sliding_window_view(np.pad(fits, k // 2), (k, k)).sum(axis=(-2, -1))
    expected = ((1 - gamma) ** covering).mean()
    centres = maps * fits.sum()
    sigma = np.sqrt(centres * gamma * (1 - gamma) * (k * k) ** 2) / x.size
    kept = (y != 0).mean()
    assert abs(kept - expected) < 6 * sigma
    np.testing.assert_allclose(y[y != 0], 1 / kept)
    batchwise = dropkit.drop_block2d(x, p, block_size=k, batchwise=True, seed=3)
    assert (batchwise == batchwise[:1]).all()


@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (2, 3, 4, 0), (0, 3, 4, 4)])
def test_drop_block_on_an_empty_map_returns_it_and_advances_like_any_call(shape):
    layer, x = DropBlock2d(0.3, block_size=3, seed=1), np.ones(shape)
    assert dropkit.drop_block2d(x, 0.3, block_size=3, seed=1).shape == shape
    assert layer(x).shape == shape and layer.backward(x).shape == shape
    assert layer.calls == 1
    with pytest.raises(ValueError, match="seed must be an integer"):
        drop_block_keep(shape, 0.3, seed=-1)


@pytest.mark.parametrize("block_size", [0, -1, 2.5, True])
def test_drop_block_bad_block_size(block_size):
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        DropBlock2d(0.1, block_size=block_size)


def test_drop_block_needs_4d_input():
    with pytest.raises(ValueError, match=r"expects x of shape \(N, C, H, W\), got a 3D input"):
        DropBlock2d(0.1, seed=0)(np.ones((2, 5, 5)))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: ChannelDropout(p),
        lambda p: LockedDropout(p),
        lambda p: DropPath(p),
        lambda p: AlphaDropout(p),
        lambda p: GaussianDropout(p),
        lambda p: DropBlock2d(p),
    ],
)
@pytest.mark.parametrize("p", [-0.5, 1.5, float("nan")])
def test_bad_p_everywhere(make, p):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        make(p)


def test_bad_noise_shape_and_modes():
    with pytest.raises(ValueError, match="noise_shape must have x's rank 2"):
        Dropout(0.5, seed=0, noise_shape=(1, 3, 1))(np.ones((2, 3)))
    with pytest.raises(ValueError, match="noise_shape must have x's rank 2, each entry 1, None or x's size"):
        dropkit.dropout(np.ones((2, 3)), 0.5, seed=0, noise_shape=(2, 2))
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch'"):
        DropPath(0.5, mode="sample")
    with pytest.raises(ValueError, match="locked dropout expects x of shape"):
        LockedDropout(0.5, batch_first=True, seed=0)(np.ones((2, 3)))


def test_rejected_call_does_not_advance_the_stream():
    layer = ChannelDropout(0.5, seed=0)
    with pytest.raises(ValueError):
        layer(np.ones((2, 2)))
    assert layer.calls == 0


def test_supplied_mask_uses_the_mask_shape():
    layer = ChannelDropout(0.5, spatial_dims=1, seed=0)
    y = layer.forward(np.ones((1, 2, 3)), mask=[[1, 0]])
    assert y.tolist() == [[[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]]
    assert layer.backward(np.ones((1, 2, 3))).tolist() == y.tolist()


def test_drop_connect_drops_weights_with_the_torch_layout_mask(rng):
    from dropkit.dropconnect import DropConnectLinear

    layer = DropConnectLinear(5, 3, p=0.5, rng=np.random.default_rng(0), seed=7, dtype=np.float64)
    x = rng.normal(size=(4, 5))
    y = layer(x)
    keep = keep_mask((3, 5), 0.5, seed=7, stream=0)  # (out_features, in_features)
    np.testing.assert_allclose(y, x @ (layer.weight.value * keep.T * 2.0) + layer.bias.value, rtol=1e-12)
    np.testing.assert_array_equal(layer.eval()(x), x @ layer.weight.value + layer.bias.value)


def test_drop_connect_checks_p_before_any_state_moves_and_backward_uses_the_forwards_p():
    from dropkit.dropconnect import DropConnectLinear

    layer = DropConnectLinear(4, 3, p=0.5, rng=np.random.default_rng(1), seed=3, dtype=np.float64)
    x, upstream = np.ones((2, 4)), np.ones((2, 3))
    layer.p = 1.5
    with pytest.raises(ValueError, match="between 0 and 1"):
        layer(x)
    assert layer.calls == 0
    layer.p = 0.5
    layer(x)
    layer.p = 0.0  # a schedule moving p between forward and backward: backward replays the forward's
    layer.backward(upstream)
    keep = dropkit.keep_mask((3, 4), 0.5, seed=3, stream=0).T
    np.testing.assert_array_equal(layer.weight.grad, np.where(keep, 2.0 * 2.0, 0.0))


def test_drop_connect_refused_inference_call_keeps_the_training_forwards_mask_for_backward():
    from dropkit.dropconnect import DropConnectLinear

    layer = DropConnectLinear(4, 3, p=0.5, rng=np.random.default_rng(1), seed=3, dtype=np.float64)
    x, upstream = np.ones((2, 4)), np.ones((2, 3))
    layer(x)
    layer.eval()
    with pytest.raises(ValueError):
        layer(np.ones((2, 5)))  # refused: it must not replace what backward replays
    layer.backward(upstream)
    keep = dropkit.keep_mask((3, 4), 0.5, seed=3, stream=0).T
    np.testing.assert_array_equal(layer.weight.grad, np.where(keep, 2.0 * 2.0, 0.0))


def test_drop_connect_gradients_match_finite_differences(rng):
    from dropkit.dropconnect import DropConnectLinear

    layer = DropConnectLinear(4, 3, p=0.4, rng=np.random.default_rng(1), seed=3, dtype=np.float64)
    x, upstream = rng.normal(size=(2, 4)), rng.normal(size=(2, 3))
    layer(x)
    dx = layer.backward(upstream)
    np.testing.assert_allclose(dx, numeric_grad(layer, x, upstream), atol=1e-7)
    weight, eps = layer.weight.value, 1e-6
    numeric_dw = np.zeros_like(weight)
    for i in np.ndindex(weight.shape):
        for sign in (1, -1):
            weight[i] += sign * eps
            layer.calls = 0
            numeric_dw[i] += sign * float((layer(x) * upstream).sum()) / (2 * eps)
            weight[i] -= sign * eps
    np.testing.assert_allclose(layer.weight.grad, numeric_dw, atol=1e-7)


# (offsets, local shape) of shards of (5, 6, 7): odd offsets and sizes put elements of one Box-Muller
# pair (2k, 2k + 1) on both sides of a shard's edge; the second is a last-dim split (20 runs).
GAUSSIAN_SHARDS = [
    ((1, 0, 0), (3, 6, 7)),
    ((0, 1, 3), (5, 4, 3)),
    ((2, 3, 1), (1, 1, 5)),
    ((0, 0, 0), (5, 6, 7)),
]


@pytest.mark.parametrize(("offsets", "local_shape"), GAUSSIAN_SHARDS)
def test_gaussian_noise_of_a_shard_is_its_slice_of_the_global_noise(offsets, local_shape):
    whole = gaussian_noise((5, 6, 7), 0.3, seed=2**64 - 1, stream=3)
    part = gaussian_noise(local_shape, 0.3, seed=2**64 - 1, stream=3, global_shape=(5, 6, 7), offsets=offsets)
    index = tuple(slice(o, o + n) for o, n in zip(offsets, local_shape, strict=True))
    assert np.array_equal(part, whole[index])  # bit for bit


def test_gaussian_noise_needs_global_shape_and_offsets_together():
    with pytest.raises(ValueError, match="global_shape and offsets go together"):
        gaussian_noise((2,), 0.3, seed=0, stream=0, global_shape=(4,))
