"""dropkit.torch's dropout variants: the NumPy reference's outputs element for element, torch's semantics.

Every expected value of a random variant comes from the NumPy reference (``dropkit.channel_dropout``,
``dropkit.alpha_dropout``, ``dropkit.drop_block2d``, ... and their layers), which itself draws from
``dropkit.keep_mask``; bfloat16, which NumPy lacks, is compared with the reference's float32 output
rounded to bfloat16 (the torch path forms products in float32 and rounds once, as the reference does).
Statistical tests state their bound and why it holds; all seeds are fixed.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.autograd.graph import saved_tensors_hooks  # noqa: E402

import dropkit  # noqa: E402
import dropkit.torch as dkt  # noqa: E402
from dropkit.dropblock import drop_block_keep  # noqa: E402
from dropkit.philox import keep_mask  # noqa: E402
from dropkit.torch import (  # noqa: E402
    AlphaDropout,
    DropBlock2d,
    DropConnectLinear,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    FeatureAlphaDropout,
    GaussianDropout,
    LockedDropout,
    WeightDrop,
    _ops,
)
from dropkit.torch import functional as F  # noqa: E402
from torch_common import DTYPES, KEYS, data  # noqa: E402


def numpy_of(x):
    """``x`` as the reference takes it: bfloat16 goes through float32 (exact)."""
    return (x.float() if x.dtype == torch.bfloat16 else x).detach().numpy()


def tensor_of(array, dtype):
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


# (torch form, NumPy reference, input shape); both called with seed= and stream= keywords.
VARIANTS = {
    "noise_shape": (
        lambda x, **k: F.dropout(x, 0.3, noise_shape=(None, 1, 5), **k),
        lambda x, **k: dropkit.dropout(x, 0.3, noise_shape=(None, 1, 5), **k),
        (4, 3, 5),
    ),
    "dropout1d": (
        lambda x, **k: F.dropout1d(x, 0.3, **k),
        lambda x, **k: dropkit.channel_dropout(x, 0.3, spatial_dims=1, **k),
        (4, 6, 5),
    ),
    "dropout1d-unbatched": (
        lambda x, **k: F.dropout1d(x, 0.3, **k),
        lambda x, **k: dropkit.channel_dropout(x, 0.3, spatial_dims=1, **k),
        (6, 5),
    ),
    "dropout2d": (
        lambda x, **k: F.dropout2d(x, 0.3, **k),
        lambda x, **k: dropkit.channel_dropout(x, 0.3, spatial_dims=2, **k),
        (3, 5, 2, 3),
    ),
    "dropout2d-channel_dropout-unbatched": (
        lambda x, **k: F.channel_dropout(x, 0.3, **k),
        lambda x, **k: dropkit.channel_dropout(x, 0.3, spatial_dims=2, **k),
        (5, 2, 3),
    ),
    "dropout3d": (
        lambda x, **k: F.dropout3d(x, 0.3, **k),
        lambda x, **k: dropkit.channel_dropout(x, 0.3, spatial_dims=3, **k),
        (2, 5, 2, 1, 3),
    ),
    "dropout3d-unbatched": (
        lambda x, **k: F.dropout3d(x, 0.3, **k),
        lambda x, **k: dropkit.channel_dropout(x, 0.3, spatial_dims=3, **k),
        (5, 2, 1, 3),
    ),
    "locked": (
        lambda x, **k: F.locked_dropout(x, 0.4, **k),
        lambda x, **k: dropkit.locked_dropout(x, 0.4, **k),
        (5, 4, 3),
    ),
    "locked-batch-first": (
        lambda x, **k: F.locked_dropout(x, 0.4, batch_first=True, **k),
        lambda x, **k: dropkit.locked_dropout(x, 0.4, batch_first=True, **k),
        (4, 5, 3),
    ),
    "drop_path-row": (
        lambda x, **k: F.drop_path(x, 0.5, **k),
        lambda x, **k: dropkit.drop_path(x, 0.5, **k),
        (8, 3, 2),
    ),
    "drop_path-batch-unscaled": (
        lambda x, **k: F.drop_path(x, 0.5, mode="batch", scale_by_keep=False, **k),
        lambda x, **k: dropkit.drop_path(x, 0.5, mode="batch", scale_by_keep=False, **k),
        (8, 3, 2),
    ),
    "gaussian": (
        lambda x, **k: F.gaussian_dropout(x, 0.3, **k),
        lambda x, **k: dropkit.gaussian_dropout(x, 0.3, **k),
        (3, 7),  # an odd count: the last Box-Muller pair is cut in half
    ),
    "alpha": (
        lambda x, **k: F.alpha_dropout(x, 0.3, True, **k),
        lambda x, **k: dropkit.alpha_dropout(x, 0.3, **k),
        (6, 5),
    ),
    "feature_alpha": (
        lambda x, **k: F.feature_alpha_dropout(x, 0.3, True, **k),
        lambda x, **k: dropkit.alpha_dropout(x, 0.3, feature=True, **k),
        (4, 3, 2, 2),
    ),
    "drop_block2d": (
        lambda x, **k: F.drop_block2d(x, 0.3, 3, **k),
        lambda x, **k: dropkit.drop_block2d(x, 0.3, block_size=3, **k),
        (2, 3, 7, 7),
    ),
    "drop_block2d-batchwise": (
        lambda x, **k: F.drop_block2d(x, 0.3, 3, gamma_scale=0.5, batchwise=True, **k),
        lambda x, **k: dropkit.drop_block2d(x, 0.3, block_size=3, gamma_scale=0.5, batchwise=True, **k),
        (2, 3, 7, 6),
    ),
}
BERNOULLI = [name for name in VARIANTS if not name.startswith(("gaussian", "alpha", "feature_alpha"))]


pytestmark = pytest.mark.usefixtures("fixed_torch_seed")


# --- the reference, element for element ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("seed", "stream"), KEYS)
@pytest.mark.parametrize("name", VARIANTS)
def test_output_equals_the_numpy_reference(name, seed, stream, dtype):
    torch_form, reference, shape = VARIANTS[name]
    x = data(shape, dtype)
    y = torch_form(x, seed=seed, stream=stream)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y, tensor_of(reference(numpy_of(x), seed=seed, stream=stream), dtype))


@pytest.mark.parametrize("name", VARIANTS)
def test_inf_and_nan_inputs_behave_as_the_reference(name):
    # Dropped elements are set, never multiplied by 0: a dropped inf or NaN gives exactly 0.
    torch_form, reference, shape = VARIANTS[name]
    x = data(shape, torch.float32)
    flat = x.view(-1)
    flat[0::3], flat[1::7], flat[2::5] = math.inf, -math.inf, math.nan
    y = torch_form(x, seed=3, stream=1)
    expected = tensor_of(reference(numpy_of(x), seed=3, stream=1), torch.float32)
    torch.testing.assert_close(y, expected, rtol=0, atol=0, equal_nan=True)


MODULE_PAIRS = {
    "Dropout1d": (
        lambda s: Dropout1d(0.3, seed=s),
        lambda s: dropkit.ChannelDropout(0.3, spatial_dims=1, seed=s),
        (3, 4, 5),
    ),
    "Dropout2d": (
        lambda s: Dropout2d(0.3, seed=s),
        lambda s: dropkit.ChannelDropout(0.3, spatial_dims=2, seed=s),
        (3, 4, 2, 2),
    ),
    "Dropout3d": (
        lambda s: Dropout3d(0.3, seed=s),
        lambda s: dropkit.ChannelDropout(0.3, spatial_dims=3, seed=s),
        (4, 2, 2, 1, 2),
    ),
    "LockedDropout": (
        lambda s: LockedDropout(0.4, batch_first=True, seed=s),
        lambda s: dropkit.LockedDropout(0.4, batch_first=True, seed=s),
        (3, 5, 4),
    ),
    "DropPath": (lambda s: DropPath(0.5, seed=s), lambda s: dropkit.DropPath(0.5, seed=s), (8, 3)),
    "DropPath-batch": (
        lambda s: DropPath(0.5, mode="batch", scale_by_keep=False, seed=s),
        lambda s: dropkit.DropPath(0.5, mode="batch", scale_by_keep=False, seed=s),
        (8, 3),
    ),
    "GaussianDropout": (
        lambda s: GaussianDropout(0.3, seed=s),
        lambda s: dropkit.GaussianDropout(0.3, seed=s),
        (3, 5),
    ),
    "AlphaDropout": (
        lambda s: AlphaDropout(0.3, seed=s),
        lambda s: dropkit.AlphaDropout(0.3, seed=s),
        (6, 5),
    ),
    "FeatureAlphaDropout": (
        lambda s: FeatureAlphaDropout(0.3, seed=s),
        lambda s: dropkit.AlphaDropout(0.3, feature=True, seed=s),
        (5, 3, 2),
    ),
    "DropBlock2d": (
        lambda s: DropBlock2d(0.3, 3, seed=s),
        lambda s: dropkit.DropBlock2d(0.3, block_size=3, seed=s),
        (2, 2, 6, 6),
    ),
}


@pytest.mark.parametrize("name", MODULE_PAIRS)
def test_seeded_module_matches_the_numpy_layer_call_for_call_forward_and_backward(name):
    make_module, make_layer, shape = MODULE_PAIRS[name]
    module, layer = make_module(2**64 - 3), make_layer(2**64 - 3)
    for call in range(3):
        x = data(shape, torch.float64, generator_seed=call).requires_grad_()
        upstream = data(shape, torch.float64, generator_seed=10 + call)
        y = module(x)
        y.backward(upstream)
        assert torch.equal(y.detach(), torch.from_numpy(layer(x.detach().numpy())))
        assert torch.equal(x.grad, torch.from_numpy(layer.backward(upstream.numpy())))
    assert module.calls == layer.calls == 3


@pytest.mark.parametrize("name", VARIANTS)
def test_gradcheck_and_gradgradcheck_in_float64(name):
    torch_form, _, shape = VARIANTS[name]
    x = data(shape, torch.float64).requires_grad_()
    function = lambda t: torch_form(t, seed=7, stream=3)  # noqa: E731
    # fast_mode checks random projections of the Jacobian: the full one is diagonal and costs a
    # forward per element.
    assert torch.autograd.gradcheck(function, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(function, (x,), fast_mode=True)


@pytest.mark.parametrize("name", VARIANTS)
def test_backward_replays_the_mask_saving_only_the_16_byte_key(name):
    torch_form, _, shape = VARIANTS[name]
    x = data(shape, torch.float64).requires_grad_()
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        y = torch_form(x, seed=1, stream=2)
    y.sum().backward()
    assert sum(sizes) <= 16  # the int64 (seed, stream) pair; no mask, no noise, no input
    assert x.grad is not None


# --- randomness: the core's semantics --------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_unseeded_calls_draw_their_seed_from_torchs_generator(name):
    torch_form, _, shape = VARIANTS[name]
    x = data(shape, torch.float64)
    torch.manual_seed(5)
    drawn = _ops.fresh_seed()
    torch.manual_seed(5)
    assert torch.equal(torch_form(x, seed=None), torch_form(x, seed=drawn, stream=0))


def test_unseeded_modules_follow_manual_seed():
    x = data((4, 3, 5, 5), torch.float64)
    for make in (lambda: Dropout2d(0.5), lambda: GaussianDropout(0.5), lambda: DropBlock2d(0.3, 3)):
        torch.manual_seed(9)
        first = make()(x)
        torch.manual_seed(9)
        assert torch.equal(make()(x), first)


@pytest.mark.parametrize("name", VARIANTS)
def test_stream_needs_a_seed_and_keys_are_checked(name):
    torch_form, _, shape = VARIANTS[name]
    x = data(shape, torch.float64)
    with pytest.raises(ValueError, match="stream needs an explicit seed"):
        torch_form(x, seed=None, stream=1)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        torch_form(x, seed=2**64, stream=0)
    with pytest.raises(TypeError, match=r"stream must be an integer"):
        torch_form(x, seed=1, stream=1.5)


def test_seeded_module_takes_stream_k_on_its_kth_training_call_only():
    module, x = Dropout2d(0.5, seed=11), data((2, 6, 3, 3), torch.float64)
    for k in range(3):
        assert torch.equal(module(x), F.dropout2d(x, 0.5, seed=11, stream=k))
    module.eval()
    assert module(x) is x
    assert module.calls == 3  # eval calls take no stream


def test_calls_can_be_set_to_resume_a_seeded_run():
    module, x = DropPath(0.5, seed=11), data((16, 3), torch.float64)
    module.calls = 7
    assert torch.equal(module(x), F.drop_path(x, 0.5, seed=11, stream=7)) and module.calls == 8
    with pytest.raises(
        ValueError, match=r"calls must be an integer in \[0, 2\*\*63\), got 9223372036854775808"
    ):
        module.calls = 2**63
    assert module.calls == 8


# --- identities and special values -----------------------------------------------------------

IDENTITY_FORMS = [
    (lambda x, **k: F.dropout(x, noise_shape=(None, 1, 1), **k), (2, 3, 4)),
    (F.dropout1d, (2, 3, 4)),
    (F.dropout2d, (2, 3, 4, 4)),
    (F.dropout3d, (2, 3, 2, 2, 2)),
    (F.locked_dropout, (3, 2, 4)),
    (F.drop_path, (2, 3)),
    (F.gaussian_dropout, (2, 3)),
    (F.alpha_dropout, (2, 3)),
    (F.feature_alpha_dropout, (2, 3, 2)),
    (lambda x, **k: F.drop_block2d(x, block_size=2, **k), (2, 3, 4, 4)),
]


@pytest.mark.parametrize(("form", "shape"), IDENTITY_FORMS)
def test_not_training_p_zero_and_empty_return_the_input_object(form, shape):
    x = data(shape, torch.float64)
    assert form(x, p=0.5, training=False, seed=1) is x
    assert form(x, p=0.0, training=True, seed=1) is x
    empty = torch.empty((0, *shape[1:]))
    assert form(empty, p=0.5, training=True, seed=1) is empty


# Not DropBlock: its p is a target rate through timm's seed rate gamma, not a drop probability.
P_ONE = {
    "dropout1d": lambda t: F.dropout1d(t, 1.0, seed=1),
    "dropout2d": lambda t: F.dropout2d(t, 1.0, seed=1),
    "locked": lambda t: F.locked_dropout(t, 1.0, seed=1),
    "drop_path-row": lambda t: F.drop_path(t, 1.0, seed=1),
    "noise_shape": lambda t: F.dropout(t, 1.0, noise_shape=(None, 1, 5), seed=1),
}


@pytest.mark.parametrize("name", P_ONE)
def test_p_one_gives_zeros_and_a_zero_gradient(name):
    x = data(VARIANTS[name][2], torch.float64).requires_grad_()
    y = P_ONE[name](x)
    y.sum().backward()
    assert torch.equal(y, torch.zeros_like(x)) and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("form", [F.alpha_dropout, F.feature_alpha_dropout])
def test_alpha_p_one_gives_zeros_as_torch_even_for_inf(form):
    x = torch.tensor([[1.0, -math.inf], [math.inf, 2.0]], requires_grad=True)
    y = form(x, 1.0, True, seed=0)
    y.sum().backward()
    assert torch.equal(y, torch.zeros(2, 2)) and torch.equal(x.grad, torch.zeros(2, 2))
    assert torch.equal(nn.functional.alpha_dropout(torch.ones(2, 2), 1.0, True), torch.zeros(2, 2))


def test_inplace_writes_the_same_values_into_the_input():
    for form in (F.dropout1d, F.alpha_dropout, F.feature_alpha_dropout):
        base = data((3, 4, 5), torch.float64).requires_grad_()
        x = base * 1  # a non-leaf, as torch requires for in-place under autograd
        expected = form(x, 0.5, True, seed=4, stream=2)
        y = form(x, 0.5, True, True, seed=4, stream=2)
        assert y is x and torch.equal(x, expected)
        y.sum().backward()
        expected_grad = torch.autograd.grad(form(base * 1, 0.5, True, seed=4, stream=2).sum(), base)[0]
        assert torch.equal(base.grad, expected_grad)


def test_inplace_on_a_leaf_is_refused_before_the_counter_moves():
    module, x = Dropout2d(0.5, inplace=True, seed=1), data((2, 3, 4, 4), torch.float64).requires_grad_()
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        module(x)
    assert module.calls == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: Dropout(0.0, True, seed=1),
        lambda: Dropout2d(0.0, True, seed=1),
        lambda: AlphaDropout(0.0, True, seed=1),
    ],
    ids=["Dropout", "Dropout2d", "AlphaDropout"],
)
def test_inplace_at_p_zero_returns_the_input_as_torch_does_and_counts_the_call(make):
    # Nothing is written at p == 0, so torch returns a leaf that requires grad instead of refusing it.
    module, x = make(), data((2, 3, 4, 4), torch.float64).requires_grad_()
    assert module(x) is x
    assert module(torch.empty(0, 3, 4, 4, requires_grad=True)).numel() == 0
    assert module.calls == 2  # training calls: the next one still uses stream 2


def test_a_stream_past_independent_masks_range_is_refused_before_the_counter_moves():
    from dropkit.torch.distributed import independent_masks

    for module in (Dropout(0.5, seed=1), Dropout2d(0.5, seed=1), DropPath(0.5, seed=1)):
        module.calls = 2**32  # rank 1 would fold into stream 2**32 + 2**32: not one-to-one any more
        with independent_masks(1), pytest.raises(ValueError, match="stream"):
            module(data((2, 3, 4, 4), torch.float64))
        assert module.calls == 2**32, type(module).__name__


def test_weight_dropouts_count_a_call_only_when_the_layer_accepts_its_input():
    layer = DropConnectLinear(4, 3, p=0.5, seed=1)
    with pytest.raises(ValueError, match=r"input must have shape \(\*, in_features=4\)"):
        layer(torch.ones(2, 5))
    assert layer.weight_dropout.calls == 0
    lstm = WeightDrop(nn.LSTM(4, 5), "weight_hh_l0", p=0.5, seed=1)
    with pytest.raises(RuntimeError):
        lstm(torch.ones(3, 2, 7))  # the LSTM refuses 7 input features
    assert lstm.dropouts[0].calls == 0
    lstm(torch.ones(3, 2, 4))
    assert lstm.dropouts[0].calls == 1


def test_channels_last_input_keeps_its_layout_and_values():
    x = data((2, 6, 3, 4), torch.float64).contiguous(memory_format=torch.channels_last)
    for form in (F.dropout2d, lambda t, p, **k: F.drop_block2d(t, p, 2, **k), F.gaussian_dropout):
        y = form(x, 0.5, seed=2)
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(y, form(x.contiguous(), 0.5, seed=2))


def test_noise_shape_draws_over_the_mask_shape_and_broadcasts():
    x = data((4, 3, 5), torch.float32)
    y = F.dropout(x, 0.5, seed=6, stream=1, noise_shape=(None, 1, None))
    keep = keep_mask((4, 1, 5), 0.5, seed=6, stream=1)
    assert np.array_equal((y != 0).numpy(), np.broadcast_to(keep, (4, 3, 5)))
    # A full noise shape is plain dropout: the core's fused kernel draws the same mask.
    assert torch.equal(F.dropout(x, 0.5, seed=6, noise_shape=(4, 3, 5)), F.dropout(x, 0.5, seed=6))


# --- mask structure --------------------------------------------------------------------------


def test_channel_masks_are_per_channel_all_or_nothing():
    for form, shape in (
        (F.dropout1d, (6, 7, 9)),
        (F.dropout2d, (6, 7, 3, 3)),
        (F.dropout3d, (6, 7, 2, 2, 2)),
    ):
        y = form(torch.ones(shape), 0.5, seed=3).flatten(2)
        per_channel = (y != 0).sum(-1)
        assert ((per_channel == 0) | (per_channel == y.shape[-1])).all()
        assert torch.equal(per_channel != 0, torch.from_numpy(keep_mask(shape[:2], 0.5, seed=3)))


def test_locked_mask_is_the_same_at_every_time_step():
    y = F.locked_dropout(torch.ones(9, 4, 6), 0.5, seed=2)
    assert (y == y[0]).all() and torch.equal(
        y[0] != 0, torch.from_numpy(keep_mask((1, 4, 6), 0.5, seed=2)[0])
    )
    y = F.locked_dropout(torch.ones(4, 9, 6), 0.5, batch_first=True, seed=2)
    assert (y == y[:, :1]).all()


def test_drop_path_drops_whole_samples_or_the_whole_batch():
    y = F.drop_path(torch.ones(64, 3, 2), 0.5, seed=1)
    per_sample = (y != 0).flatten(1).sum(1)
    assert ((per_sample == 0) | (per_sample == 6)).all() and 0 < int((per_sample == 0).sum()) < 64
    kept = [bool(F.drop_path(torch.ones(8, 2), 0.5, mode="batch", seed=1, stream=k).all()) for k in range(32)]
    dropped = [
        bool((F.drop_path(torch.ones(8, 2), 0.5, mode="batch", seed=1, stream=k) == 0).all())
        for k in range(32)
    ]
    assert all(a != b for a, b in zip(kept, dropped, strict=True)) and any(kept) and any(dropped)


def test_drop_block_zeros_are_whole_blocks_and_the_mean_of_ones_stays_one():
    y = F.drop_block2d(torch.ones(2, 3, 12, 12, dtype=torch.float64), 0.2, 4, seed=5)
    keep = drop_block_keep((2, 3, 12, 12), 0.2, block_size=4, seed=5)
    assert torch.equal(y != 0, torch.from_numpy(keep))
    # The dropped set is a union of whole 4 x 4 squares: every dropped element lies in a dropped window.
    dropped = torch.from_numpy(~keep).double()
    full = -nn.functional.max_pool2d(-dropped, 4, stride=1)  # 1 where a whole window is dropped
    covered = nn.functional.max_pool2d(nn.functional.pad(full, (3, 3, 3, 3)), 4, stride=1)
    assert torch.equal(covered.bool(), dropped.bool()) and bool(full.any())
    # Survivors are rescaled by numel / kept, so an all-ones input keeps mean 1 exactly (up to rounding).
    assert abs(float(y.mean()) - 1.0) < 1e-12


# --- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "shape", "units"),
    [
        (lambda x, p, **k: F.dropout2d(x, p, **k), (200, 50, 2, 2), 10_000),
        (lambda x, p, **k: F.locked_dropout(x, p, **k), (4, 200, 50), 10_000),
        (lambda x, p, **k: F.drop_path(x, p, **k), (10_000, 4), 10_000),
        (lambda x, p, **k: F.dropout(x, p, noise_shape=(None, 1), **k), (10_000, 4), 10_000),
    ],
)
def test_bernoulli_variants_keep_the_mean(form, shape, units):
    # Output mean of ones is (kept units) / units / (1 - p): sd sqrt(p / ((1 - p) units)) = 0.0065 for
    # p = 0.3 and 10**4 independent units; 0.04 is 6 sigma.
    y = form(torch.ones(shape), 0.3, seed=17)
    assert abs(float(y.mean()) - 1.0) < 6 * math.sqrt(0.3 / 0.7 / units)


def test_gaussian_noise_has_mean_one_and_variance_p_over_one_minus_p():
    # eps ~ N(1, v), v = p/(1-p) = 1 for p = 0.5, n = 2 * 10**5: the sample mean has sd sqrt(v / n) =
    # 0.0022 and the sample variance sd v sqrt(2 / n) = 0.0032; 6 sigma bounds both.
    n, p = 200_000, 0.5
    eps = F.gaussian_dropout(torch.ones(n, dtype=torch.float64), p, seed=8)
    v = p / (1 - p)
    assert abs(float(eps.mean()) - 1.0) < 6 * math.sqrt(v / n)
    assert abs(float(eps.var()) - v) < 6 * v * math.sqrt(2 / n)


# --- errors ----------------------------------------------------------------------------------

RANK_ERRORS = [
    (F.locked_dropout, LockedDropout, 1, r"locked dropout expects x of shape"),
    (F.drop_path, DropPath, 0, r"drop path expects x with a batch dimension, got a 0D input"),
    (
        lambda x, p, **k: F.drop_block2d(x, p, 3, **k),
        lambda p, **k: DropBlock2d(p, 3, **k),
        3,
        r"DropBlock2d expects x of shape \(N, C, H, W\), got a 3D input",
    ),
]


@pytest.mark.parametrize(("form", "make", "rank", "message"), RANK_ERRORS)
def test_bad_ranks_are_value_errors_always_and_move_no_counter(form, make, rank, message):
    x = torch.ones((2,) * rank)
    for p in (0.5, 0.0):  # checked before the identity cases too
        with pytest.raises(ValueError, match=message):
            form(x, p, seed=1)
    module = make(0.5, seed=1)
    with pytest.raises(ValueError, match=message):
        module(x)
    with pytest.raises(ValueError, match=message):
        module.eval()(x)
    assert module.calls == 0


def torch_says(fn, *args, **kwargs):
    """What ``fn(*args, **kwargs)`` does, as torch's outcome: ``("ok", shape)`` or ``(error type,
    message)``, and the warnings' categories and messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome = ("ok", tuple(fn(*args, **kwargs).shape))
        except (RuntimeError, ValueError) as error:
            outcome = (type(error).__name__, str(error))
    return outcome, [(w.category, str(w.message)) for w in caught]


TORCH_TWINS = [
    (nn.functional.dropout1d, F.dropout1d, nn.Dropout1d, Dropout1d),
    (nn.functional.dropout2d, F.dropout2d, nn.Dropout2d, Dropout2d),
    (nn.functional.dropout3d, F.dropout3d, nn.Dropout3d, Dropout3d),
    (
        nn.functional.feature_alpha_dropout,
        F.feature_alpha_dropout,
        nn.FeatureAlphaDropout,
        FeatureAlphaDropout,
    ),
    (nn.functional.alpha_dropout, F.alpha_dropout, nn.AlphaDropout, AlphaDropout),
]


@pytest.mark.parametrize(("torch_fn", "fn", "torch_cls", "cls"), TORCH_TWINS, ids=lambda t: t.__name__)
@pytest.mark.parametrize("rank", range(7))
def test_every_rank_errs_and_warns_exactly_as_torch_does(torch_fn, fn, torch_cls, cls, rank):
    # torch 2.13 itself is the oracle: dropout1d's RuntimeError for ranks but 2 and 3, even out of
    # training; dropout2d/3d's deprecation warnings (and dropout2d's 3-D one), also out of training;
    # "Feature dropout requires at least 2 dimensions" only when noise is drawn (training, 0 < p < 1,
    # non-empty); torch's ValueError for p first.
    for size in (2, 0):
        x = torch.ones((size,) * rank)
        for p, training, inplace in itertools.product((0.5, 0.0, 1.0, 1.5), (True, False), (False, True)):
            expected = torch_says(torch_fn, x.clone(), p, training, inplace)
            assert torch_says(fn, x.clone(), p, training, inplace) == expected
            assert torch_says(fn, x.clone(), p, training, inplace, seed=1, stream=2) == expected
        for p, training in itertools.product((0.5, 0.0, 1.0), (True, False)):
            expected = torch_says(torch_cls(p).train(training), x)
            assert torch_says(cls(p).train(training), x) == expected
            module = cls(p, seed=1).train(training)
            assert torch_says(module, x) == expected
            accepted = expected[0][0] == "ok"
            assert module.calls == int(accepted and training)  # a refused call moves no counter


def test_torch_warnings_point_at_the_caller():
    # torch warns with stacklevel=2, at the code that called dropout2d; dropkit skips its own frames
    # (and torch's, for a module called through nn.Module.__call__ or a Sequential) to the same place.
    x = torch.ones(2, 3, 4)
    for call in (
        lambda: F.dropout2d(x, 0.5, seed=1),
        lambda: Dropout2d(0.5)(x),
        lambda: nn.Sequential(Dropout3d(0.5)).eval()(x),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert [w.filename for w in caught] and {w.filename for w in caught} == {__file__}


@pytest.mark.parametrize(
    ("form", "shape", "mask_shape"),
    [
        (F.dropout1d, (6, 5), (6, 1)),  # unbatched (C, L)
        (F.dropout2d, (4, 6, 5), (4, 6, 1)),  # 3-D is (N, C, L), with a warning
        (F.dropout2d, (4, 6), (4, 6)),  # 2-D: one decision per element, with a warning
        (F.dropout2d, (2, 3, 2, 2, 2), (2, 3, 1, 1, 1)),  # 5-D: (N, C, ...), with a warning
        (F.dropout3d, (4, 3, 2, 2), (4, 1, 1, 1)),  # unbatched (C, D, H, W)
        (F.dropout3d, (4, 3, 2), (4, 1, 1)),  # not 5-D: a batch of one is prepended, dim 0 is C
        (F.dropout3d, (4, 3, 2, 2, 2, 2), (4, 1, 1, 1, 1, 1)),
        (F.dropout3d, (5,), (5,)),
    ],
)
def test_the_mask_is_the_contracts_over_torchs_reading_of_the_shape(form, shape, mask_shape):
    x = data(shape, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = form(x, 0.5, seed=6, stream=3)
    keep = torch.from_numpy(np.broadcast_to(keep_mask(mask_shape, 0.5, seed=6, stream=3), shape).copy())
    assert torch.equal(y != 0, keep)


def test_dropout2d_reads_a_3d_input_as_n_c_l_and_warns_as_torch():
    x = data((5, 3, 4), torch.float64)
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout behavior is desired"):
        y = Dropout2d(0.5, seed=1)(x)
    assert torch.equal(y, F.dropout1d(x, 0.5, seed=1, stream=0))
    assert torch.equal(
        y != 0, torch.from_numpy(np.broadcast_to(keep_mask((5, 3, 1), 0.5, seed=1), (5, 3, 4)).copy())
    )
    # channel_dropout is the unambiguous form: its rank says (C, H, W), and nothing warns.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = F.channel_dropout(x, 0.5, seed=1)
    assert torch.equal(z, F.dropout2d(x.unsqueeze(0), 0.5, seed=1).squeeze(0))


@pytest.mark.parametrize(("spatial_dims", "rank"), [(1, 4), (1, 1), (2, 5), (2, 2), (3, 6), (3, 3)])
def test_channel_dropout_keeps_its_value_error_for_other_ranks_and_never_warns(spatial_dims, rank):
    message = (
        f"dropout{spatial_dims}d: Expected {spatial_dims + 1}D or {spatial_dims + 2}D input, "
        f"but received a {rank}D input"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p, training in ((0.5, True), (0.0, True), (0.5, False)):  # before the identity cases too
            with pytest.raises(ValueError, match=message):
                F.channel_dropout(torch.ones((2,) * rank), p, training, spatial_dims=spatial_dims, seed=1)


FUNCTIONS_AND_MODULES = [
    (lambda x, p: F.dropout(x, p, noise_shape=(None, 1), seed=1), None),
    (lambda x, p: F.dropout1d(x, p, seed=1), Dropout1d),
    (lambda x, p: F.dropout2d(x.unsqueeze(-1), p, seed=1), Dropout2d),
    (lambda x, p: F.dropout3d(x[..., None, None], p, seed=1), Dropout3d),
    (lambda x, p: F.locked_dropout(x, p, seed=1), LockedDropout),
    (lambda x, p: F.drop_path(x, p, seed=1), DropPath),
    (lambda x, p: F.alpha_dropout(x, p, seed=1), AlphaDropout),
    (lambda x, p: F.feature_alpha_dropout(x, p, seed=1), FeatureAlphaDropout),
    (lambda x, p: F.drop_block2d(x[..., None], p, 1, seed=1), DropBlock2d),
    (lambda x, p: F.gaussian_dropout(x, p, seed=1), GaussianDropout),
    (None, lambda p: DropConnectLinear(3, 2, p=p)),
    (None, lambda p: WeightDrop(nn.Linear(3, 2), p=p)),
]


@pytest.mark.parametrize(("form", "make"), FUNCTIONS_AND_MODULES)
@pytest.mark.parametrize("p", [-0.1, 1.5, math.nan])
def test_bad_p_is_torchs_value_error(form, make, p):
    x = torch.ones(2, 3, 4)
    if form is not None:
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got"):
            form(x, p)
    if make is not None:
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got"):
            make(p)


def test_bad_p_type_and_gaussian_p_one():
    with pytest.raises(TypeError, match="p must be a real number in"):
        F.dropout2d(torch.ones(2, 2, 2), "0.5")
    with pytest.raises(ValueError, match=r"Gaussian dropout needs p in \[0, 1\)"):
        F.gaussian_dropout(torch.ones(3), 1.0, seed=1)
    with pytest.raises(ValueError, match=r"Gaussian dropout needs p in \[0, 1\)"):
        GaussianDropout(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_size": 0}, "block_size must be a positive int, got 0"),
        ({"block_size": 2.5}, "block_size must be a positive int, got 2.5"),
        ({"block_size": True}, "block_size must be a positive int, got True"),
        ({"gamma_scale": 0.0}, "gamma_scale must be a positive number, got 0.0"),
        ({"gamma_scale": math.nan}, "gamma_scale must be a positive number, got nan"),
    ],
)
def test_bad_block_arguments(kwargs, message):
    args = {"block_size": 3, "gamma_scale": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        F.drop_block2d(torch.ones(1, 1, 4, 4), 0.1, args["block_size"], gamma_scale=args["gamma_scale"])
    with pytest.raises(ValueError, match=message):
        DropBlock2d(0.1, args["block_size"], args["gamma_scale"])


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch', got 'rows'"):
        F.drop_path(torch.ones(2), 0.1, mode="rows")
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch', got 'rows'"):
        DropPath(0.1, mode="rows")
    with pytest.raises(ValueError, match="noise_shape must have x's rank 2"):
        F.dropout(torch.ones(2, 3), 0.1, noise_shape=(2, 2))
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        F.dropout2d(torch.ones(2, 2, 2, dtype=torch.int64), 0.1)
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        Dropout2d(0.1, seed=1)(torch.ones(2, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"names must name parameters of the module, got \['wieght'\]"):
        WeightDrop(nn.Linear(2, 2), "wieght")
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        DropConnectLinear(2, 2, seed=-1)


# --- ports of torch's test/nn/test_dropout.py --------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "shape", "memory_format"),
    [
        (Dropout1d, (40, 40, 3), torch.contiguous_format),
        (Dropout2d, (40, 40, 2, 2), torch.channels_last),
        (Dropout3d, (40, 40, 2, 1, 2), torch.contiguous_format),
    ],
)
def test_torch_dropoutNd(cls, shape, memory_format):
    # torch's _test_dropout with 40 x 40 = 1600 channels instead of 10-15 squared: the output mean is
    # the kept fraction of channels, sd sqrt(0.2 * 0.8 / 1600) = 0.01, so torch's 0.05 is 5 sigma.
    p = 0.2
    input = torch.empty(shape).fill_(1 - p)
    for inplace in (False, True):
        module = cls(p, inplace)
        input_var = input.clone(memory_format=memory_format).requires_grad_()
        output = module(input_var + 0 if inplace else input_var)
        assert output.is_contiguous(memory_format=memory_format)
        assert abs(float(output.detach().mean()) - (1 - p)) < 0.05
        output.backward(input)
        assert input_var.grad.is_contiguous(memory_format=memory_format)
        assert abs(float(input_var.grad.mean()) - (1 - p)) < 0.05
    for inplace in (True, False):  # eval mode changes nothing
        module = cls(p, inplace).eval()
        assert torch.equal(input, module(input))
    assert repr(module) == f"{cls.__name__}(p=0.2, inplace=False)"
    assert repr(cls(0.5, seed=3)) == f"{cls.__name__}(p=0.5, inplace=False, seed=3)"


@pytest.mark.parametrize(
    # Not Dropout2d: torch reads its 3-D input as (N, C, L), and torch's own test leaves it out too.
    ("cls", "unbatched"),
    [(Dropout1d, (50, 2)), (Dropout3d, (50, 2, 2, 2))],
)
@pytest.mark.parametrize("inplace", [False, True])
def test_torch_dropoutNd_no_batch(cls, unbatched, inplace):
    # torch's _test_dropoutNd_no_batch: with the generator frozen, unbatched == batched-then-squeezed.
    input = torch.rand(unbatched)
    torch.manual_seed(1)
    res_no_batch = cls(0.5, inplace)(input.clone())
    torch.manual_seed(1)
    res_batched = cls(0.5, inplace)(input.clone().unsqueeze(0)).squeeze(0)
    assert torch.equal(res_no_batch, res_batched)
    seeded = cls(0.5, inplace, seed=4)(input.clone()), cls(0.5, inplace, seed=4)(input.clone().unsqueeze(0))
    assert torch.equal(seeded[0], seeded[1].squeeze(0))


@pytest.mark.parametrize(
    ("cls", "shape"), [(Dropout1d, (10, 4, 2)), (Dropout2d, (10, 4, 2, 2)), (Dropout3d, (10, 4, 2, 2, 2))]
)
@pytest.mark.parametrize("inplace", [False, True])
def test_torch_dropoutNd_channel_zero(cls, shape, inplace):
    # torch's _test_dropoutNd_channel_zero: a channel has 0 or all of its elements non-zero.
    result = cls(0.5, inplace)(torch.ones(shape))
    channel_numel = math.prod(shape[2:])
    for b in range(shape[0]):
        for c in range(shape[1]):
            assert int(result[b, c].count_nonzero()) in (0, channel_numel)


ALPHA_STATS = (
    "torch's bound 0.1 on |mean(y) - mean(x)| and |std(y) - std(x)|: for 5000 unit-variance outputs the "
    "mean has sd 1/sqrt(5000) = 0.014; over 300 seeds the measured sd of either statistic was at most "
    "0.019 (feature alpha, p = 0.8), so 0.1 is at least 5 sigma."
)


def _torch_alpha_dropout_check(cls, input):
    mean, std = input.mean(), input.std()
    for p in (0.2, 0.5, 0.8):
        module = cls(p)
        input_var = input.detach().clone().requires_grad_()
        output = module(input_var)
        assert abs(float(output.detach().mean() - mean)) < 0.1, ALPHA_STATS
        assert abs(float(output.detach().std() - std)) < 0.1, ALPHA_STATS
        output.backward(input)


def test_torch_AlphaDropout():
    _torch_alpha_dropout_check(AlphaDropout, torch.randn(5000))


def test_torch_FeatureAlphaDropout():
    # torch draws b, w, h in [1, 5] and d in [1, 2] at random; fixed here at 2 each.
    _torch_alpha_dropout_check(FeatureAlphaDropout, torch.randn(1000, 2, 2, 2, 2))
    _torch_alpha_dropout_check(FeatureAlphaDropout, torch.randn(50, 20, 8, 8))


def test_alpha_constants_are_torchs():
    # Where kept and dropped values can be read off, they are torch's: a x + a alpha p and -a alpha (1 - p).
    p, alpha = 0.3, 1.7580993408473766
    a = 1 / math.sqrt((alpha**2 * p + 1) * (1 - p))
    y = F.alpha_dropout(torch.zeros(10_000, dtype=torch.float64), p, True, seed=2)
    values = set(y.tolist())
    assert values == {a * alpha * p, -a * alpha * (1 - p)}


@pytest.mark.parametrize(
    ("make", "bad_p", "message"),
    [
        (lambda: dkt.Dropout(0.5, seed=0), 1.5, "between 0 and 1"),
        (lambda: dkt.Dropout2d(0.5, seed=0), -0.1, "between 0 and 1"),
        (lambda: dkt.GaussianDropout(0.5, seed=0), 1.0, r"p in \[0, 1\)"),
    ],
)
def test_p_reassigned_out_of_range_moves_no_counter(make, bad_p, message):
    layer = make()
    layer.p = bad_p
    with pytest.raises(ValueError, match=message):
        layer(torch.ones(2, 3, 4, 4))
    assert layer.calls == 0
