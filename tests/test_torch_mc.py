"""MC dropout for torch models: which layers turn on, what stays untouched, the uncertainty formulas."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

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
)
from dropkit.torch.mc import is_stochastic, mc_dropout, mc_predict  # noqa: E402


def make_model(p=0.5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 5))


def test_turns_on_every_torch_dropout_and_marked_modules_only():
    class Marked(nn.Identity):
        stochastic = True

    layers = [
        nn.Dropout(),
        nn.Dropout1d(),
        nn.Dropout2d(),
        nn.Dropout3d(),
        nn.AlphaDropout(),
        nn.FeatureAlphaDropout(),
    ]
    model = nn.Sequential(*layers, Marked(), nn.BatchNorm1d(3), nn.Linear(3, 3))
    assert all(is_stochastic(m) for m in [*layers, model[6]])
    with mc_dropout(model):
        assert [m.training for m in model] == [True] * 7 + [False, False]
        assert not model.training


def test_restores_every_previous_mode():
    model = make_model()
    model.eval()
    model[1].train()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    mc_predict(model, torch.randn(4, 6), samples=3)
    assert [m.training for m in model.modules()] == before


def test_batchnorm_running_statistics_are_untouched():
    model = make_model().train()
    stats = [t.clone() for t in (model[1].running_mean, model[1].running_var, model[1].num_batches_tracked)]
    mc_predict(model, torch.randn(8, 6), samples=10)
    for before, after in zip(
        stats, (model[1].running_mean, model[1].running_var, model[1].num_batches_tracked), strict=True
    ):
        assert torch.equal(before, after)


def test_formulas_against_a_manual_computation():
    model, x, k = make_model(), torch.randn(3, 6), 7
    torch.manual_seed(1)
    out = mc_predict(model, x, samples=k)
    torch.manual_seed(1)  # the same draws: one batched forward over k stacked copies
    with mc_dropout(model):
        logits = model(x.repeat(k, 1))
    probs = torch.softmax(logits.double(), -1).reshape(k, 3, 5)
    mean = probs.mean(0)
    entropy = -(mean * mean.log()).sum(-1)
    expected_entropy = -(probs * probs.log()).sum(-1).mean(0)
    torch.testing.assert_close(out.mean, mean)
    torch.testing.assert_close(out.variance, ((probs - mean) ** 2).mean(0))
    torch.testing.assert_close(out.entropy, entropy)
    torch.testing.assert_close(out.mutual_information, entropy - expected_entropy)
    assert torch.allclose(out.mean.sum(-1), torch.ones(3, dtype=torch.float64))
    assert (out.entropy <= math.log(5) + 1e-12).all() and (out.mutual_information >= 0).all()


def test_no_dropout_means_no_model_uncertainty():
    out = mc_predict(make_model(p=0.0), torch.randn(4, 6), samples=5)
    assert torch.allclose(out.mutual_information, torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out.variance, torch.zeros(4, 5, dtype=torch.float64), atol=1e-12)


def test_max_batch_splits_the_passes():
    model, calls = make_model(), []
    model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    mc_predict(model, torch.randn(4, 6), samples=5, max_batch=8)
    assert calls == [8, 8, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"samples": 0}, "samples must be a positive int"), ({"max_batch": 0}, "max_batch must be")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mc_predict(make_model(), torch.randn(2, 6), **({"samples": 3} | kwargs))


def test_layers_with_one_mask_per_forward_get_one_forward_per_pass():
    from dropkit.torch import DropConnectLinear

    torch.manual_seed(0)
    model, calls = nn.Sequential(DropConnectLinear(6, 5, p=0.5)), []
    model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    out = mc_predict(model, torch.randn(4, 6), samples=3)
    assert calls == [4, 4, 4]
    assert (out.mutual_information > 0).all()  # the passes differ: each drew its own weight mask


# --- MC dropout over every dropkit module ---------------------------------------------------

ALL_MODULES = [
    Dropout(0.5),
    Dropout1d(),
    Dropout2d(),
    Dropout3d(),
    LockedDropout(),
    DropPath(0.1),
    GaussianDropout(),
    AlphaDropout(),
    FeatureAlphaDropout(),
    DropBlock2d(),
    DropConnectLinear(2, 2),
    WeightDrop(nn.Linear(2, 2)),
]


def test_every_module_is_stochastic_and_mc_dropout_turns_it_on():
    model = nn.Sequential(*ALL_MODULES, nn.BatchNorm1d(3))
    assert all(is_stochastic(m) for m in ALL_MODULES)
    model.train()
    with mc_dropout(model):
        assert all(m.training for m in ALL_MODULES) and not model[-1].training
    model.eval()
    with mc_dropout(model):
        assert all(m.training for m in ALL_MODULES) and not model[-1].training
    assert not any(m.training for m in model.modules())


def test_mc_dropout_leaves_a_batchnorm_inside_weight_drop_in_eval():
    inner = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model = nn.Sequential(WeightDrop(inner, "0.weight", p=0.5, seed=1))
    with mc_dropout(model):
        assert model[0].training and model[0].dropouts[0].training
        assert not inner.training and not inner[1].training
        before = inner[1].running_mean.clone()
        model(torch.randn(4, 3))
        assert torch.equal(inner[1].running_mean, before)


def test_mc_predict_with_dropkit_modules_leaves_batchnorm_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        GaussianDropout(0.2),
        DropConnectLinear(16, 16, p=0.3),
        nn.ReLU(),
        DropPath(0.2),
        nn.Linear(16, 4),
    ).train()
    bn = model[1]
    stats = [t.clone() for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)]
    x = torch.randn(8, 6)
    # DropConnect draws one weight mask per forward, so each pass gets its own forward (max_batch = N).
    out = mc_predict(model, x, samples=10, max_batch=len(x))
    for before, after in zip(stats, (bn.running_mean, bn.running_var, bn.num_batches_tracked), strict=True):
        assert torch.equal(before, after)
    assert bool((out.mutual_information > 0).all())
    assert all(m.training for m in model.modules())
