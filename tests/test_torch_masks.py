"""dropkit.torch draws the contract's masks element for element, and keeps nothing else for backward.

Every expected value comes from the NumPy reference: ``keep_mask`` / ``keep_range`` for the mask and
``scale_kept`` for the rounding (bfloat16, which NumPy lacks, is rounded from the reference's float32).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.autograd.graph import saved_tensors_hooks  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

import dropkit  # noqa: E402
from dropkit.kernels.reference import scale_kept  # noqa: E402
from dropkit.philox import keep_mask, keep_range  # noqa: E402
from dropkit.torch import Dropout, _checks, _launch, _ops, dropout  # noqa: E402
from torch_common import DTYPES, KEYS, data  # noqa: E402

# Seeds and streams at and past 2**63 cross the op's int64 boundary as negative numbers.


def reference(
    x: torch.Tensor, p: float, seed: int, stream: int = 0, start: int | None = None
) -> torch.Tensor:
    """The NumPy reference's output for ``x`` (any layout) as a contiguous tensor of ``x``'s dtype."""
    if start is None:
        keep = keep_mask(tuple(x.shape), p, seed=seed, stream=stream)
    else:
        keep = keep_range(p, seed, stream, start, x.numel()).reshape(tuple(x.shape))
    scale = 1.0 if p == 1 else 1.0 / (1.0 - p)
    if x.dtype == torch.bfloat16:
        return torch.from_numpy(scale_kept(x.float().numpy(), keep, scale)).bfloat16()
    return torch.from_numpy(scale_kept(x.contiguous().numpy(), keep, scale))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("seed", "stream"), KEYS)
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (2, 3, 4, 5), (4099,)])
def test_output_equals_the_reference(dtype, seed, stream, shape):
    x = data(shape, dtype)
    y = dropout(x, 0.3, seed=seed, stream=stream)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y, reference(x, 0.3, seed, stream))
    assert np.array_equal((y != 0).numpy(), keep_mask(shape, 0.3, seed=seed, stream=stream))


@pytest.mark.parametrize("p", [0.01, 0.5, 0.9, 1 - 2**-20])
def test_every_probability_draws_the_reference_mask(p):
    x = data((64, 33), torch.float64)
    assert torch.equal(dropout(x, p, seed=99, stream=4), reference(x, p, 99, 4))


def layouts():
    """The same kind of values in many memory layouts: (name, tensor, whether it is dense)."""
    base = data((4, 6, 5, 3))
    yield "transposed", base.transpose(0, 2).contiguous().transpose(0, 2), True
    yield "channels_last", base.contiguous(memory_format=torch.channels_last), True
    yield "permuted", base.permute(3, 1, 0, 2).contiguous().permute(2, 1, 3, 0), True
    yield "sliced", data((8, 6, 10, 3))[::2, :, 1::2], False
    yield "transposed-view", data((6, 9)).t(), True
    yield "expanded", data((1, 5)).expand(4, 5), False
    yield "storage-offset", data((30,))[7:19].view(3, 4), True


@pytest.mark.parametrize(("name", "x", "dense"), list(layouts()), ids=[name for name, *_ in layouts()])
def test_masks_follow_the_logical_index_whatever_the_strides(name, x, dense):
    y = dropout(x, 0.4, seed=2**63 + 11, stream=3)
    assert torch.equal(y, reference(x, 0.4, 2**63 + 11, 3))
    order = _launch.stride_order(x)  # innermost to outermost
    assert y.permute(order[::-1]).is_contiguous()  # dense, in x's stride order
    if dense:
        assert y.stride() == x.stride()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gradient_is_the_same_mask_times_the_scale(dtype):
    x = data((5, 7), dtype).requires_grad_()
    y = dropout(x, 0.25, seed=2**64 - 3, stream=8)
    y.sum().backward()  # the upstream gradient is an expanded (stride 0) tensor of ones
    assert torch.equal(x.grad, reference(torch.ones(5, 7, dtype=dtype), 0.25, 2**64 - 3, 8))


def test_gradcheck_and_gradgradcheck_in_float64():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    for p in (0.3, 1.0):
        for inp in (x, x.t()):

            def f(t, p=p):
                return dropout(t, p, seed=2**63 + 5, stream=2**40)

            assert torch.autograd.gradcheck(f, (inp,))
            assert torch.autograd.gradgradcheck(f, (inp,))


def test_start_shifts_the_flat_index_for_future_sharding():
    x = data((3, 7), torch.float64)
    y = _ops.dropout_op(x, 0.5, _checks.to_signed(2**63 + 1), 6, 2.0, 2**40 + 3)
    assert torch.equal(y, reference(x, 0.5, 2**63 + 1, 6, start=2**40 + 3))


def test_seed_conversion_round_trips_every_bit_pattern():
    for value in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        signed = _checks.to_signed(value)
        assert -(2**63) <= signed < 2**63
        assert _checks.to_unsigned(signed) == value


# --- streams and seeds --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [42, 2**64 - 1])
def test_seeded_module_uses_stream_k_on_its_kth_training_call(seed):
    layer, x = Dropout(0.3, seed=seed), data((16, 16))
    for k in range(3):
        assert torch.equal(layer(x), reference(x, 0.3, seed, k))
    layer.eval()
    layer(x)
    assert layer.calls == 3  # inference draws nothing


def test_seeded_module_resumes_from_a_set_call_count():
    layer, x = Dropout(0.3, seed=5), data((6, 6))
    layer.calls = 2**40
    assert torch.equal(layer(x), reference(x, 0.3, 5, 2**40))
    assert layer.calls == 2**40 + 1
    with pytest.raises(
        ValueError, match=r"calls must be an integer in \[0, 2\*\*63\), got 9223372036854775808"
    ):
        layer.calls = 2**63
    assert layer.calls == 2**40 + 1


def test_seeded_module_matches_the_numpy_layer_call_for_call():
    torch_layer, numpy_layer = Dropout(0.35, seed=2024), dropkit.Dropout(0.35, seed=2024)
    x = data((9, 11))
    for _ in range(3):
        assert np.array_equal(torch_layer(x).numpy(), numpy_layer(x.numpy()))


def test_unseeded_calls_draw_their_seed_from_torchs_generator():
    x = data((10, 10))
    torch.manual_seed(7)
    drawn = [int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64)) for _ in range(2)]
    torch.manual_seed(7)
    first, second = dropout(x, 0.5), Dropout(0.5)(x)
    assert torch.equal(first, reference(x, 0.5, drawn[0], 0))
    assert torch.equal(second, reference(x, 0.5, drawn[1], 0))


def test_manual_seed_reproduces_unseeded_masks():
    x, model = data((32, 8)), Dropout(0.5)
    torch.manual_seed(3)
    run1 = [model(x), dropout(x, 0.5)]
    torch.manual_seed(3)
    run2 = [model(x), dropout(x, 0.5)]
    assert all(torch.equal(a, b) for a, b in zip(run1, run2, strict=True))
    assert not torch.equal(run1[0], run1[1])  # fresh seed per call: equal masks have odds 2**-256


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpoint_recomputes_the_same_mask(use_reentrant):
    torch.manual_seed(0)
    lin1, lin2, drop = torch.nn.Linear(8, 32), torch.nn.Linear(32, 4), Dropout(0.5)

    def block(t):
        return lin2(drop(torch.relu(lin1(t))) + dropout(t, 0.3).sum())

    def grads(wrap):
        x = data((16, 8)).requires_grad_()
        for param in (*lin1.parameters(), *lin2.parameters()):
            param.grad = None
        torch.manual_seed(11)
        wrap(x).square().sum().backward()
        return [x.grad, lin1.weight.grad, lin2.weight.grad]

    plain = grads(block)
    recomputed = grads(lambda x: checkpoint(block, x, use_reentrant=use_reentrant))
    assert all(torch.equal(a, b) for a, b in zip(plain, recomputed, strict=True))


# --- what autograd keeps -------------------------------------------------------------------------


def saved_bytes(layer, x):
    """Bytes of tensors autograd saves for ``layer(x)``'s backward."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    y.sum().backward()
    return sum(sizes)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autograd_saves_no_tensor(dtype):
    x = data((1000,), dtype).requires_grad_()
    assert saved_bytes(Dropout(0.5), x) == 0
    assert saved_bytes(Dropout(0.5, seed=1), x) == 0
    assert saved_bytes(lambda t: dropout(t, 0.5, seed=1, stream=2), x) == 0
    # torch.nn.Dropout keeps a mask: an input-dtype noise tensor on CPU, 1 byte/element on CUDA.
    assert saved_bytes(torch.nn.Dropout(0.5), x) >= x.numel()
