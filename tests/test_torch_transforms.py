"""torch.func, forward-mode AD and gradcheck through every dropkit.torch variant.

The derivative of each variant is a diagonal operator drawn from the same ``(seed, stream)`` as its
forward (``keep * scale``, the Gaussian noise, alpha's ``keep * a``); the tests compare transform
results with that operator built from ``dropkit.keep_mask`` / the layer's own output, element for element.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.autograd.forward_ad as fwAD  # noqa: E402
from torch.func import grad, jacfwd, jacrev, jvp, vmap  # noqa: E402

import dropkit  # noqa: E402
from dropkit.torch import functional as F  # noqa: E402
from dropkit.torch import timm  # noqa: E402
from dropkit.torch import torchvision as tv  # noqa: E402


def _mask(shape, p, seed, stream=0):
    return torch.from_numpy(dropkit.keep_mask(shape, p, seed=seed, stream=stream)).double()


def test_jacfwd_and_jacrev_are_the_diagonal_of_the_contracts_mask():
    expected = torch.diag(_mask((6,), 0.5, seed=1) * 2)
    f = lambda r: F.dropout(r, 0.5, True, seed=1)  # noqa: E731
    x = torch.ones(6, dtype=torch.float64)
    assert torch.equal(jacfwd(f)(x), expected)
    assert torch.equal(jacrev(f)(x), expected)


def test_jvp_applies_the_forwards_mask_to_the_tangent():
    x, t = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    out, tangent = jvp(lambda r: F.dropout(r, 0.3, seed=4, stream=2), (x,), (t,))
    scale = _mask((3, 5), 0.3, seed=4, stream=2) / 0.7
    assert torch.equal(out, x * scale)
    assert torch.equal(tangent, t * scale)


def test_dual_tensors_carry_the_masked_tangent():
    with fwAD.dual_level():
        dual = fwAD.make_dual(torch.ones(8, dtype=torch.float64), torch.full((8,), 3.0, dtype=torch.float64))
        tangent = fwAD.unpack_dual(F.dropout(dual, 0.5, seed=9)).tangent
    assert torch.equal(tangent, 3.0 * 2 * _mask((8,), 0.5, seed=9))


def test_grad_and_vmap_of_grad_with_an_explicit_seed():
    f = lambda r: F.dropout(r, 0.5, seed=1).sum()  # noqa: E731
    expected = _mask((4,), 0.5, seed=1) * 2
    assert torch.equal(grad(f)(torch.ones(4, dtype=torch.float64)), expected)
    assert torch.equal(vmap(grad(f))(torch.ones(3, 4, dtype=torch.float64)), expected.expand(3, 4))


def test_vmap_with_an_explicit_seed_gives_every_sample_the_named_mask():
    # A seeded dropout is a pure function of its arguments: randomness= does not apply.
    x = torch.ones(3, 6, dtype=torch.float64)
    for randomness in ("error", "same", "different"):
        y = vmap(lambda r: F.dropout(r, 0.5, seed=2), randomness=randomness)(x)
        assert torch.equal(y, (_mask((6,), 0.5, seed=2) * 2).expand(3, 6))


def test_vmap_with_seed_none_follows_torchs_randomness_flag():
    x = torch.ones(4, 64)
    with pytest.raises(RuntimeError, match="randomness error mode"):
        vmap(lambda r: F.dropout(r, 0.5))(x)
    torch.manual_seed(0)
    same = vmap(lambda r: F.dropout(r, 0.5), randomness="same")(x)
    assert all(torch.equal(row, same[0]) for row in same)
    different = vmap(lambda r: F.dropout(r, 0.5), randomness="different")(x)
    # 4 rows of 64 independent p = 1/2 decisions: two equal rows has probability <= 6 * 2**-64.
    assert len({tuple(row.tolist()) for row in different}) == 4


def test_vmap_same_under_manual_seed_is_the_eager_mask():
    x = torch.ones(3, 16)
    torch.manual_seed(5)
    eager = F.dropout(x[0], 0.5)
    torch.manual_seed(5)
    same = vmap(lambda r: F.dropout(r, 0.5), randomness="same")(x)
    assert torch.equal(same, eager.expand(3, 16))


VARIANTS = {
    "dropout": lambda x: F.dropout(x, 0.5, seed=3),
    "noise_shape": lambda x: F.dropout(x, 0.5, seed=3, noise_shape=(None, 1, None)),
    "dropout1d": lambda x: F.dropout1d(x, 0.5, seed=3),
    "dropout2d": lambda x: F.dropout2d(x.unsqueeze(-1), 0.5, seed=3).squeeze(-1),
    "locked": lambda x: F.locked_dropout(x, 0.5, seed=3),
    "drop_path": lambda x: F.drop_path(x, 0.5, seed=3),
    "gaussian": lambda x: F.gaussian_dropout(x, 0.3, seed=3),
    "alpha": lambda x: F.alpha_dropout(x, 0.3, True, seed=3),
    "feature_alpha": lambda x: F.feature_alpha_dropout(x, 0.3, True, seed=3),
    "shard": lambda x: F.dropout(x, 0.5, seed=3, global_shape=(5, 3, 4), offsets=(1, 0, 0)),
    "drop_block2d": lambda x: F.drop_block2d(x.view(2, 3, 2, 2), 0.3, 2, seed=3).view(2, 3, 4),
    "timm_drop_block_2d": lambda x: timm.drop_block_2d(x.view(2, 3, 2, 2), 0.3, 2, seed=3).view(2, 3, 4),
    "torchvision_drop_block2d": lambda x: tv.drop_block2d(x.view(2, 3, 2, 2), 0.3, 2, seed=3).view(2, 3, 4),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_gradcheck_with_forward_ad_and_batched_grads(name):
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    f = VARIANTS[name]
    assert torch.autograd.gradcheck(f, (x,), check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(f, (x,), check_fwd_over_rev=True, check_batched_grad=True)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_jacfwd_equals_jacrev_and_the_output_ratio(name):
    f = VARIANTS[name]
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    forward, reverse = jacfwd(f)(x), jacrev(f)(x)
    assert torch.equal(forward, reverse)
    # Each output depends on its own input only, by the factor the layer applied to it.
    diagonal = forward.reshape(x.numel(), x.numel()).diagonal().reshape(x.shape)
    assert torch.count_nonzero(forward.reshape(x.numel(), -1)) == torch.count_nonzero(diagonal)
    if name not in ("alpha", "feature_alpha"):  # linear: y = D x
        assert torch.allclose(f(x), diagonal * x, rtol=1e-12, atol=0)


def test_module_gradients_under_torch_func_grad():
    layer = dropkit.torch.Dropout(0.5, seed=7)
    g = grad(lambda r: layer(r).sum())(torch.ones(10, dtype=torch.float64))
    assert torch.equal(g, _mask((10,), 0.5, seed=7) * 2)
    assert layer.calls == 1
