"""torch.fx, torch.jit.trace, torch.export, torch.jit.script (via revert) and the torch class family.

Every traced graph must draw a fresh mask per training call, as torch's own dropout does, and an
explicitly seeded layer's k-th call must draw stream k; masks compared with ``dropkit.keep_mask``.
"""

from __future__ import annotations

import pickle
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import dropkit  # noqa: E402
import dropkit.torch as dt  # noqa: E402
import dropkit.torch.timm as dt_timm  # noqa: E402
import dropkit.torch.torchvision as dt_tv  # noqa: E402
from dropkit.torch import functional as F  # noqa: E402


def _expected(shape, p, seed, stream):
    return torch.from_numpy(dropkit.keep_mask(shape, p, seed=seed, stream=stream)).float() / (1 - p)


class Net(nn.Module):
    def __init__(self, seed=None):
        super().__init__()
        self.linear = nn.Linear(4, 16)
        self.drop = dt.Dropout(0.5, seed=seed)

    def forward(self, x):
        return F.dropout(self.drop(self.linear(x)), 0.25, self.training)


def test_fx_symbolic_trace_keeps_dropkit_layers_as_leaves():
    graph = torch.fx.symbolic_trace(Net())
    ops = [(node.op, node.target) for node in graph.graph.nodes]
    assert ("call_module", "drop") in ops
    assert ("call_function", F.dropout) in ops


def test_fx_traced_training_model_draws_a_fresh_mask_per_call():
    graph = torch.fx.symbolic_trace(Net())
    x = torch.ones(3, 4)
    torch.manual_seed(0)
    outputs = [graph(x) for _ in range(3)]
    # 48 independent p = 1/2 decisions per call: two equal outputs has probability about 3 * 2**-48.
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])


def test_fx_traced_model_in_eval_mode_is_the_identity():
    model = nn.Sequential(nn.Linear(4, 4), dt.Dropout(0.5), dt.Dropout1d(0.5))
    graph = torch.fx.symbolic_trace(model).eval()  # training is read when the graph runs
    x = torch.ones(3, 4, 2).transpose(1, 2)
    assert torch.equal(graph(x), model[0](x))


def test_fx_traced_seeded_layer_advances_its_stream():
    layer = dt.Dropout(0.5, seed=3)
    graph = torch.fx.symbolic_trace(nn.Sequential(layer))
    x = torch.ones(2, 8)
    for stream in range(3):
        assert torch.equal(graph(x), _expected((2, 8), 0.5, 3, stream))
    assert layer.calls == 3


def _trace(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, x, check_trace=False)


def test_jit_trace_draws_a_fresh_mask_per_call_and_follows_manual_seed():
    model = nn.Sequential(dt.Dropout(0.5))
    x = torch.ones(4, 16)
    traced = _trace(model, x)
    torch.manual_seed(1)
    first, second = traced(x), traced(x)
    assert not torch.equal(first, second)  # 64 decisions each: equal with probability 2**-64
    torch.manual_seed(1)
    assert torch.equal(traced(x), first)


def test_jit_trace_of_seeded_layers_draws_the_next_stream_per_call():
    first, second = dt.Dropout(0.5, seed=7), dt.Dropout(0.5, seed=9)
    x = torch.ones(4, 8)
    traced = _trace(nn.Sequential(first, nn.Identity(), second), x)
    assert (first.calls, second.calls) == (1, 1)  # the trace ran the forward once, and that call counts
    for stream in range(1, 4):
        expected = _expected((4, 8), 0.5, 7, stream) * _expected((4, 8), 0.5, 9, stream)
        assert torch.equal(traced(x), expected)
    assert (first.calls, second.calls) == (4, 4)  # the graph advances the modules' own counters


def test_jit_trace_with_its_default_check_traces_a_drawn_seed_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's check warns that a fresh mask per call differs
        traced = torch.jit.trace(nn.Sequential(nn.Linear(4, 8), dt.Dropout(0.5)), torch.ones(2, 4))
    assert not torch.equal(traced(torch.ones(2, 4)), traced(torch.ones(2, 4)))


SCRIPTABLE = [
    dt_timm.DropBlock2d(0.1, 3),
    dt_tv.StochasticDepth(0.1, "batch"),
    dt.Dropout(0.3, seed=2**64 - 1),
    dt.Dropout(0.3, inplace=True),
    dt.Dropout1d(0.2),
    dt.Dropout2d(0.2),
    dt.Dropout3d(0.2),
    dt.AlphaDropout(0.2),
    dt.FeatureAlphaDropout(0.2),
    dt.DropPath(0.1),
    dt.LockedDropout(0.2),
    dt.GaussianDropout(0.2),
    dt.DropBlock2d(0.1, 3),
]


@pytest.mark.parametrize("layer", SCRIPTABLE, ids=lambda layer: type(layer).__name__)
def test_jit_script_compiles_dropkit_layers_as_their_eval_mode_identity(layer):
    scripted = torch.jit.script(nn.Sequential(nn.Identity(), layer).eval())
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(scripted(x), x)
    scripted.train()
    with pytest.raises(torch.jit.Error, match=r"eval mode only.*revert"):
        scripted(x)


VARIANT_LAYERS = {  # (a seeded layer, its input shape)
    "Dropout": (lambda: dt.Dropout(0.5, seed=5), (2, 3, 4, 4)),
    "Dropout1d": (lambda: dt.Dropout1d(0.5, seed=5), (2, 3, 4)),
    "Dropout2d": (lambda: dt.Dropout2d(0.5, seed=5), (2, 3, 4, 4)),
    "Dropout3d": (lambda: dt.Dropout3d(0.5, seed=5), (2, 3, 2, 4, 4)),
    "AlphaDropout": (lambda: dt.AlphaDropout(0.5, seed=5), (2, 3, 4, 4)),
    "FeatureAlphaDropout": (lambda: dt.FeatureAlphaDropout(0.5, seed=5), (2, 3, 4, 4)),
    "DropPath": (lambda: dt.DropPath(0.5, seed=5), (8, 3, 4, 4)),
    "LockedDropout": (lambda: dt.LockedDropout(0.5, seed=5), (4, 3, 8)),
    "GaussianDropout": (lambda: dt.GaussianDropout(0.5, seed=5), (2, 3, 4, 4)),
    "DropBlock2d": (lambda: dt.DropBlock2d(0.3, 3, seed=5), (2, 3, 8, 8)),
    "timm.DropPath": (lambda: dt_timm.DropPath(0.5, seed=5), (8, 3, 4)),
    "timm.DropBlock2d": (lambda: dt_timm.DropBlock2d(0.3, 3, with_noise=True, seed=5), (2, 3, 8, 8)),
    "torchvision.StochasticDepth": (lambda: dt_tv.StochasticDepth(0.5, "row", seed=5), (8, 3, 4)),
    "torchvision.DropBlock3d": (lambda: dt_tv.DropBlock3d(0.3, 3, seed=5), (2, 3, 4, 6, 6)),
}


def _eager_call(make, x, stream):
    """What the layer's call number ``stream`` computes eagerly."""
    layer = make()
    layer.calls = stream
    return layer(x)


@pytest.mark.parametrize("tracer", ["jit.trace", "export", "fx"])
@pytest.mark.parametrize("name", sorted(VARIANT_LAYERS))
def test_every_variant_traced_draws_its_next_stream_per_call(name, tracer):
    make, shape = VARIANT_LAYERS[name]
    layer = make()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if tracer == "jit.trace":
        graph = _trace(nn.Sequential(layer), x)
    elif tracer == "export":
        graph = torch.export.export(nn.Sequential(layer), (x,)).module()
    else:
        graph = torch.fx.symbolic_trace(nn.Sequential(layer))
    start = layer.calls  # jit.trace and export run the forward once while tracing; that call counts
    for stream in range(start, start + 3):
        assert torch.equal(graph(x), _eager_call(make, x, stream))
    assert layer.calls == start + 3


def test_torch_export_draws_a_fresh_mask_per_call():
    x = torch.ones(4, 16)
    program = torch.export.export(nn.Sequential(dt.Dropout(0.5)), (x,))
    module = program.module()
    assert not torch.equal(module(x), module(x))


def test_torch_export_of_a_seeded_layer_shares_and_advances_its_counter():
    x = torch.ones(2, 8)
    layer = dt.Dropout(0.5, seed=11)
    module = torch.export.export(nn.Sequential(layer), (x,)).module()
    start = layer.calls  # export's trace runs the forward once, and that call counts (docs/torch.md)
    for stream in range(start, start + 3):
        assert torch.equal(module(x), _expected((2, 8), 0.5, 11, stream))
    assert layer.calls == start + 3


def test_revert_gives_torch_modules_that_script():
    model = nn.Sequential(
        nn.Linear(4, 4), dt.Dropout(0.3, inplace=True, seed=1), dt.Dropout2d(0.2), dt.DropPath(0.1)
    ).eval()
    x = torch.randn(2, 3, 1, 4)
    expected = model(x)
    reverted = dt.revert(model)
    assert type(reverted[1]) is nn.Dropout and reverted[1].p == 0.3 and reverted[1].inplace
    assert type(reverted[2]) is nn.Dropout2d and type(reverted[3]) is nn.Identity
    assert torch.equal(torch.jit.script(reverted)(x), expected)


def test_revert_keeps_training_mode_and_leaves_twinless_training_layers():
    model = nn.Sequential(dt.AlphaDropout(0.2), dt.LockedDropout(0.2))
    dt.revert(model)
    assert type(model[0]) is nn.AlphaDropout and model[0].training
    assert isinstance(model[1], dt.LockedDropout)


TWINS = [
    (dt.Dropout, nn.Dropout),
    (dt.Dropout1d, nn.Dropout1d),
    (dt.Dropout2d, nn.Dropout2d),
    (dt.Dropout3d, nn.Dropout3d),
    (dt.AlphaDropout, nn.AlphaDropout),
    (dt.FeatureAlphaDropout, nn.FeatureAlphaDropout),
]


@pytest.mark.parametrize(("ours", "theirs"), TWINS, ids=[t.__name__ for t, _ in TWINS])
def test_each_module_is_an_instance_of_the_torch_class_it_replaces(ours, theirs):
    layer = ours(0.3, seed=2)
    assert isinstance(layer, theirs)
    assert repr(layer) == f"{ours.__name__}(p=0.3, inplace=False, seed=2)"
    assert layer.state_dict() == theirs(0.3).state_dict() == {}
    clone = pickle.loads(pickle.dumps(layer))
    assert (clone.p, clone.seed, clone.calls) == (0.3, 2, 0)


PEER_BLOCKS = {
    "timm": (lambda: dt_timm.DropBlock2d(0.3, 3, seed=5), (2, 3, 8, 8)),
    "timm-noise": (lambda: dt_timm.DropBlock2d(0.3, 3, with_noise=True, seed=5), (2, 3, 8, 8)),
    "torchvision-3d": (lambda: dt_tv.DropBlock3d(0.3, 3, seed=5), (2, 3, 4, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(PEER_BLOCKS))
def test_peer_dropblocks_compile_fullgraph_with_the_eager_values_and_gradients(name):
    make, shape = PEER_BLOCKS[name]
    layer = make()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    for stream in range(2):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(stream), requires_grad=True)
        x_eager = x.detach().clone().requires_grad_()
        weights = torch.randn(shape, generator=torch.Generator().manual_seed(9))
        y, y_eager = compiled(x), _eager_call(make, x_eager, stream)
        assert torch.equal(y, y_eager)
        (y * weights).sum().backward()
        (y_eager * weights).sum().backward()
        assert torch.equal(x.grad, x_eager.grad)  # the factor, replayed from the key
    assert layer.calls == 2


def test_peer_dropblock_op_passes_torchs_opcheck():
    from dropkit.torch._dropblock import _peer_drop_block_custom

    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    key = torch.tensor([3, 1])
    for layout, noise in (("timm", False), ("timm", True), ("torchvision", False)):
        args = (x, key, 0.3, 3, layout, 1.0, False, True, noise, 1e-6, False)
        torch.library.opcheck(_peer_drop_block_custom, args)
