"""Whole-model conversion (:func:`dropkit.torch.convert`) and call routing
(:func:`dropkit.torch.route_dropout`), on toy models with every dropout class and on a real third-party
model (a small transformers BERT built from a config, no weights downloaded; skipped without the
``[models]`` extra)."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import dropkit.torch as dk  # noqa: E402
from dropkit import keep_mask  # noqa: E402
from dropkit.torch import routing  # noqa: E402


def _peer(module: str, name: str, **attrs):
    """A stand-in for a timm/torchvision class: what convert sees is the module path and the class name."""
    cls = type(name, (nn.Module,), {"__module__": module, "forward": lambda self, x: x})
    obj = cls()
    for key, value in attrs.items():
        setattr(obj, key, value)
    return obj


def _zoo():
    return nn.Sequential(
        nn.Dropout(0.1, inplace=True),
        nn.Dropout1d(0.2),
        nn.Dropout2d(0.3),
        nn.Dropout3d(0.4),
        nn.AlphaDropout(0.5),
        nn.FeatureAlphaDropout(0.6),
        _peer("timm.layers.drop", "DropPath", drop_prob=0.15, scale_by_keep=False),
        _peer(
            "timm.layers.drop",
            "DropBlock2d",
            drop_prob=0.25,
            block_size=5,
            gamma_scale=0.5,
            with_noise=True,
            inplace=True,
            couple_channels=False,
            scale_by_keep=False,
        ),
        _peer("torchvision.ops.stochastic_depth", "StochasticDepth", p=0.35, mode="batch"),
        _peer("torchvision.ops.drop_block", "DropBlock2d", p=0.45, block_size=3, inplace=True, eps=1e-5),
        _peer("torchvision.ops.drop_block", "DropBlock3d", p=0.55, block_size=3, inplace=False, eps=1e-6),
    )


def test_convert_swaps_every_class_keeping_its_arguments():
    model = _zoo()
    assert dk.convert(model) is model
    expected = [
        (dk.Dropout, {"p": 0.1, "inplace": True}),
        (dk.Dropout1d, {"p": 0.2, "inplace": False}),
        (dk.Dropout2d, {"p": 0.3}),
        (dk.Dropout3d, {"p": 0.4}),
        (dk.AlphaDropout, {"p": 0.5}),
        (dk.FeatureAlphaDropout, {"p": 0.6}),
        (dk.timm.DropPath, {"drop_prob": 0.15, "scale_by_keep": False}),
        (
            dk.timm.DropBlock2d,
            {"drop_prob": 0.25, "block_size": 5, "gamma_scale": 0.5, "with_noise": True, "inplace": True},
        ),
        (dk.torchvision.StochasticDepth, {"p": 0.35, "mode": "batch"}),
        (dk.torchvision.DropBlock2d, {"p": 0.45, "block_size": 3, "inplace": True, "eps": 1e-5}),
        (dk.torchvision.DropBlock3d, {"p": 0.55, "block_size": 3, "eps": 1e-6}),
    ]
    for layer, (cls, attrs) in zip(model, expected, strict=True):
        assert type(layer) is cls
        assert {k: getattr(layer, k) for k in attrs} == attrs
    assert model[7].couple_channels is False and model[7].scale_by_keep is False


def test_convert_keeps_training_mode_sharing_and_gives_each_layer_its_seed():
    shared = nn.Dropout(0.5)
    model = nn.Sequential(nn.Dropout(0.5), shared, nn.Sequential(shared, nn.Linear(2, 2)))
    model[0].eval()
    dk.convert(model, seed=10)
    assert model[0].training is False and model[1].training is True
    assert model[1] is model[2][0]
    assert [model[0].seed, model[1].seed] == [10, 11]


def test_converted_layer_draws_the_contract_mask():
    model = dk.convert(nn.Sequential(nn.Linear(3, 6), nn.Dropout(0.5)), seed=3)
    y = model[1](torch.ones(4, 6))
    np.testing.assert_array_equal(y.numpy(), keep_mask((4, 6), 0.5, seed=3, stream=0) * 2.0)


def test_convert_leaves_dropkit_layers_and_subclasses_alone():
    class MyDropout(nn.Dropout):
        pass

    mine, ours = MyDropout(0.5), dk.Dropout(0.5, seed=1)
    model = dk.convert(nn.Sequential(mine, ours))
    assert model[0] is mine and model[1] is ours


def test_convert_rejects_a_non_module_and_a_lone_layer():
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        dk.convert([nn.Dropout()])
    with pytest.raises(ValueError, match="wrap a lone layer"):
        dk.convert(nn.Dropout())


# --- routing -----------------------------------------------------------------------------------


def test_route_dropout_runs_dropkit_with_a_stream_per_drawing_call():
    x = torch.ones(3, 8)
    with dk.route_dropout(seed=7) as mode:
        first = F.dropout(x, 0.25)
        unchanged = F.dropout(x, 0.25, training=False)
        second = nn.Dropout2d(0.5)(torch.ones(2, 3, 4, 4))
    assert unchanged is x and mode.calls == 2
    assert torch.equal(first, dk.functional.dropout(x, 0.25, seed=7, stream=0))
    assert torch.equal(second, dk.functional.dropout2d(torch.ones(2, 3, 4, 4), 0.5, seed=7, stream=1))


def test_route_dropout_with_seed_none_follows_torch_manual_seed():
    torch.manual_seed(1)
    with dk.route_dropout():
        a = F.dropout(torch.ones(64), 0.5)
    torch.manual_seed(1)
    b = dk.functional.dropout(torch.ones(64), 0.5)
    assert torch.equal(a, b)


def test_attention_dropout_is_routed_to_dropkits_attention(monkeypatch):
    q = torch.randn(1, 2, 4, 8)
    with dk.route_dropout(seed=0) as mode:
        routed = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    assert mode.fallbacks == 0 and mode.calls == 1
    expected = dk.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.5, seed=0, stream=0)
    assert torch.equal(routed, expected)
    route = routing.ROUTES[F.scaled_dot_product_attention]
    monkeypatch.setitem(routing.ROUTES, F.scaled_dot_product_attention, dataclasses.replace(route, fn=None))
    with dk.route_dropout(seed=0) as mode, pytest.warns(UserWarning, match="no route for it yet"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    assert mode.fallbacks == 1 and mode.calls == 0
    seen = []

    def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        seen.append((dropout_p, is_causal, kw))
        return query

    route = routing.ROUTES[F.scaled_dot_product_attention]
    monkeypatch.setitem(
        routing.ROUTES, F.scaled_dot_product_attention, dataclasses.replace(route, fn=attention)
    )
    with dk.route_dropout(seed=5) as mode:
        F.scaled_dot_product_attention(q, q, q, dropout_p=0.1, is_causal=True)
        F.scaled_dot_product_attention(q, q, q)  # no dropout: torch's fast kernel
    assert seen == [(0.1, True, {"seed": 5, "stream": 0})] and mode.calls == 1


# --- a real third-party model --------------------------------------------------------------------

RNG_OPS = ("dropout", "bernoulli", "rand", "normal")


class CountTorchRandomness(TorchDispatchMode):
    """Counts aten ops that draw from torch's RNG (dropkit's own ops are ``dropkit::``)."""

    def __init__(self):
        super().__init__()
        self.ops = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name.startswith("aten.") and any(word in name for word in RNG_OPS):
            self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def saved_bytes(step) -> int:
    """Bytes of every tensor autograd saves for backward during ``step()``."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


def small_bert(attention: str):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        vocab_size=100,
        max_position_embeddings=32,
        attn_implementation=attention,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config)


def test_bert_trains_with_no_torch_dropout_after_convert_and_routing():
    model = small_bert("eager")
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        before = model(ids).last_hidden_state
    model.train()
    with CountTorchRandomness() as torch_run:
        model(ids).last_hidden_state.sum().backward()
    assert torch_run.ops == {"aten.bernoulli_": 7}  # embeddings, 2 x (attention, self-output, output)
    dk.convert(model, seed=0)
    with CountTorchRandomness() as converted:
        model(ids).last_hidden_state.sum().backward()
    # the attention dropout is a call (F.dropout with the module's p), no module: convert cannot see it
    assert converted.ops == {"aten.bernoulli_": 2}
    with CountTorchRandomness() as routed, dk.route_dropout(seed=1) as mode:
        model(ids).last_hidden_state.sum().backward()
    assert routed.ops == {} and mode.calls == 2
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, before)


def test_bert_sdpa_attention_dropout_is_routed_to_dropkit():
    model = dk.convert(small_bert("sdpa"), seed=0).train()
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    with dk.route_dropout(seed=1) as mode, CountTorchRandomness() as counter:
        model(ids)
    assert mode.fallbacks == 0 and mode.calls == 2  # one attention dropout per layer
    assert not counter.ops  # no torch RNG op ran


def test_bert_saves_fewer_bytes_for_backward_after_conversion():
    model = small_bert("eager").train()
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    torch_bytes = saved_bytes(lambda: model(ids).last_hidden_state.sum())
    dk.convert(model, seed=0)
    with dk.route_dropout(seed=1):
        dropkit_bytes = saved_bytes(lambda: model(ids).last_hidden_state.sum())
    assert dropkit_bytes < torch_bytes
