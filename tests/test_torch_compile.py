"""dropkit.torch under torch.compile: registered ops pass torch's checks; compiled masks equal eager ones."""

from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from dropkit.torch import (  # noqa: E402  # noqa: E402
    DropBlock2d,
    Dropout,
    Dropout2d,
    DropPath,
    GaussianDropout,
    _checks,
    _ops,
    dropout,
)


@contextlib.contextmanager
def inductor_compiles():
    """Skip the test, with the reason, when inductor finds no working C++ compiler on this machine."""
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as error:
        inner = getattr(error, "inner_exception", None)
        if isinstance(inner, (torch._inductor.exc.InvalidCxxCompiler, torch._inductor.exc.CppCompileError)):
            pytest.skip(f"torch.compile (inductor) cannot build C++ here: {type(inner).__name__}: {inner}")
        raise


def samples():
    yield torch.randn(3, 4, 5, dtype=torch.float64).permute(2, 0, 1).requires_grad_()
    yield torch.randn(2, 3, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)


def test_ops_pass_torch_library_opcheck():
    # Schema, fake (meta) implementation vs real strides and dtypes, autograd registration, AOT dispatch.
    for x in samples():
        torch.library.opcheck(_ops.dropout_op.custom, (x, 0.4, _checks.to_signed(2**64 - 1), 3, 1 / 0.6, 0))
        key = torch.tensor([_checks.to_signed(2**63), 5])
        torch.library.opcheck(_ops.dropout_keyed_op.custom, (x, key, 0.4, 1 / 0.6, 0))


def test_fake_output_has_the_real_strides():
    for x in samples():
        real = dropout(x, 0.5, seed=1)
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
            fake = _ops.dropout_op(mode.from_tensor(x), 0.5, 1, 0, 2.0, 0)
        assert fake.stride() == real.stride()


class Net(torch.nn.Module):
    """Unseeded and seeded dropout modules, one used twice, plus the functional form."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 16)
        self.free = Dropout(0.3)  # seed drawn from torch's generator on every call
        self.seeded = Dropout(0.5, seed=2**64 - 1)  # stream = call number

    def forward(self, x):
        h = self.seeded(torch.relu(self.free(self.lin(x))))
        return self.seeded(h) + dropout(x, 0.2, seed=7, stream=9).sum()


@inductor_compiles()
def test_compiled_equals_eager_over_successive_calls():
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager, x = Net(), torch.randn(4, 8)
    twin = Net()
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin, fullgraph=True)  # fullgraph: any graph break is an error
    for call in range(2):
        torch.manual_seed(100 + call)
        expected = eager(x)
        expected.square().sum().backward()
        torch.manual_seed(100 + call)
        got = compiled(x)
        got.square().sum().backward()
        assert torch.equal(got, expected)
        assert torch.equal(twin.lin.weight.grad, eager.lin.weight.grad)
    # The compiled graph advanced the module's call counter at run time, as eager did.
    assert twin.seeded.calls == eager.seeded.calls == 4


@inductor_compiles()
def test_compiled_function_with_a_changing_stream():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    x = torch.randn(5, 7)
    step = torch.compile(lambda t, k: dropout(t, 0.5, seed=2**63 + 3, stream=k), fullgraph=True)
    for k in range(4):
        assert torch.equal(step(x, k), dropout(x, 0.5, seed=2**63 + 3, stream=k))
    # Dynamo specializes on the first int and makes it dynamic on the second: two graphs, not one per call.
    assert counters["stats"]["unique_graphs"] <= 2


def test_a_p_that_changes_between_calls_recompiles_without_a_graph_break():
    # As torch's own Dropout: one graph per value of p, each equal to eager; fullgraph=True makes any
    # graph break an error.
    from torch._dynamo.utils import counters

    from dropkit.torch import Dropout2d

    for make in (lambda p: Dropout(p, seed=5), lambda p: Dropout2d(p, seed=5)):
        torch._dynamo.reset()
        counters.clear()
        layer, x = make(0.1), torch.randn(2, 3, 4, 4)
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
        for call, p in enumerate((0.1, 0.2, 0.3)):
            layer.p = p
            reference = make(p)
            reference.calls = call
            assert torch.equal(compiled(x), reference(x))
        assert counters["stats"]["unique_graphs"] == 3


# --- the variants: registered ops and compiled modules ----------------------------------------


def test_variant_ops_pass_torch_library_opcheck():
    key = torch.tensor([_checks.to_signed(2**64 - 1), 3])
    for x in (
        torch.randn(3, 4, 5, 6, dtype=torch.float64).requires_grad_(),
        torch.randn(2, 3, 4, 5, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last),
    ):
        mask = [[*x.shape[:2], 1, 1], [7, x.shape[1], 1, 1], [4, 0, 0, 0]]  # rows 4.. of a batch of 7
        torch.library.opcheck(_ops.shaped_dropout_op.custom, (x, key, 0.4, 1 / 0.6, *mask))
        torch.library.opcheck(_ops.alpha_dropout_op.custom, (x, key, 0.4, *mask))
        shard = [[9, *x.shape[1:]], [5, 0, 0, 0]]
        torch.library.opcheck(_ops.gaussian_dropout_op.custom, (x, key, 0.4, *shard))
        torch.library.opcheck(_ops.drop_block2d_op.custom, (x, key, 0.4, 3, 1.0, False))


class VariantsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.channel = Dropout2d(0.3, seed=5)  # stream = call number, a run-time tensor when compiled
        self.block = DropBlock2d(0.2, 3, seed=6)
        self.noise = GaussianDropout(0.2)  # seed drawn from torch's generator per call
        self.path = DropPath(0.5, seed=2**64 - 1)

    def forward(self, x):
        return self.path(self.noise(self.block(self.channel(self.conv(x)))))


def test_compiled_modules_equal_eager_over_successive_calls():
    torch._dynamo.reset()
    eager, twin, x = VariantsNet(), VariantsNet(), torch.randn(2, 3, 6, 6)
    twin.load_state_dict(eager.state_dict())
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)  # no graph break allowed
    for call in range(2):
        torch.manual_seed(100 + call)
        expected = eager(x)
        expected.square().sum().backward()
        torch.manual_seed(100 + call)
        got = compiled(x)
        got.square().sum().backward()
        assert torch.equal(got, expected)
        assert torch.equal(twin.conv.weight.grad, eager.conv.weight.grad)
    assert twin.channel.calls == eager.channel.calls == 2
