"""dropkit.torch behaves as torch.nn.Dropout / F.dropout do: ports of torch's test/nn/test_dropout.py.

The ported statistical checks keep torch's bounds. Output mean (and grad mean) for an input filled
with 1 - p = 0.8 is K / n with K ~ Binomial(n = 1000, 0.8), standard deviation
sqrt(0.8 * 0.2 / 1000) = 0.0126, so torch's tolerance 0.05 is 4 sigma; seeds are fixed.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import dropkit.kernels  # noqa: E402
import dropkit.torch  # noqa: E402
from dropkit.torch import Dropout, _launch, dropout  # noqa: E402

P = 0.2


def function_module(p, inplace=False):
    """The functional form wearing the module's call signature, so both run the same checks."""
    return lambda x: dropout(x, p, training=True, inplace=inplace)


MODULES = {
    "module": Dropout,
    "module-seeded": lambda p, inplace=False: Dropout(p, inplace, seed=12345),
    "function": function_module,
}


pytestmark = pytest.mark.usefixtures("fixed_torch_seed")


def mean_close(value, target, tol=0.05):
    return abs(float(value) - target) < tol


# --- test_Dropout / _test_dropout ------------------------------------------------------------------


@pytest.mark.parametrize("make", MODULES.values(), ids=MODULES.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_and_grad_mean_near_keep_rate(make, dtype):
    input = torch.empty(1000, dtype=dtype).fill_(1 - P)
    input_var = input.clone().requires_grad_()
    output = make(P)(input_var)
    assert output.is_contiguous()
    assert mean_close(output.data.float().mean(), 1 - P)
    output.backward(input)
    assert input_var.grad.is_contiguous()
    assert mean_close(input_var.grad.float().mean(), 1 - P)


@pytest.mark.parametrize("make", MODULES.values(), ids=MODULES.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_on_a_non_leaf(make, dtype):
    input = torch.empty(1000, dtype=dtype).fill_(1 - P)
    input_var = input.clone().requires_grad_()
    non_leaf = input_var + 0
    output = make(P, True)(non_leaf)
    assert output is non_leaf
    assert mean_close(output.data.float().mean(), 1 - P)
    output.backward(input)
    assert mean_close(input_var.grad.float().mean(), 1 - P)
    # y = x * keep * scale, so dL/dx = input * keep * scale, zero exactly where y is.
    assert torch.equal(input_var.grad == 0, output.detach() == 0)


@pytest.mark.parametrize("inplace", [False, True])
def test_eval_returns_the_input_unchanged(inplace):
    input = torch.full((1000,), 1 - P)
    for module in (Dropout(P, inplace).eval(), Dropout(P, inplace, seed=1).eval()):
        out = module(input)
        assert out is input
        assert torch.equal(out, torch.full((1000,), 1 - P))
    assert dropout(input, P, training=False, inplace=inplace) is input


def test_repr_is_torchs():
    assert repr(Dropout()) == "Dropout(p=0.5, inplace=False)"
    assert repr(Dropout(0.2, True)) == repr(torch.nn.Dropout(0.2, True))
    assert Dropout(0.1, seed=7).extra_repr() == "p=0.1, inplace=False, seed=7"


# --- _test_dropout_discontiguous -----------------------------------------------------------------


@pytest.mark.parametrize("make", MODULES.values(), ids=MODULES.keys())
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("p", [0.0, 1e-10])
def test_discontiguous_input_keeps_layout_and_values(make, memory_format, p):
    inp = torch.ones(2, 3, 3, 3)
    inp_discontiguous = torch.empty(2, 3, 3, 6, memory_format=memory_format)[..., ::2]
    inp_discontiguous.copy_(inp)
    out = make(p)(inp_discontiguous)
    if p != 0:  # p == 0 returns the input itself, strides and all
        assert out.is_contiguous(memory_format=memory_format)
    else:
        assert out is inp_discontiguous
    assert torch.equal(out, inp_discontiguous)


# --- _test_dropout_stride_mean_preserve ----------------------------------------------------------


@pytest.mark.parametrize("make", MODULES.values(), ids=MODULES.keys())
def test_stride_order_and_mean_preserved_for_every_permutation(make):
    inp = torch.ones(2, 3, 4, 5)
    for perm in itertools.permutations(range(4)):
        inverse = tuple(perm.index(d) for d in range(4))
        for shift in [(0, 0), (1, 0), (0, 1), (1, 1)]:
            permuted = inp.permute(perm).contiguous().permute(inverse)[shift[0] :, shift[1] :]
            for p in [1e-10, 0.3, 0.5, 0.7]:
                out = make(p)(permuted)
                assert out.permute(perm).is_contiguous()
                # torch's own bound: means within atol + rtol * |mean| = 0.5 + 0.5 * 1.
                assert abs(out.mean() - inp.mean()) <= 1.0
                if p == 1e-10:
                    assert torch.equal(out, permuted)
                else:
                    assert not torch.equal(out, permuted)


# --- test_empty_dropout / test_invalid_dropout_p -------------------------------------------------


def test_empty_input_returns_the_input():
    x = torch.tensor([])
    out = dropout(x)
    assert out.size() == x.size()
    assert out is x
    assert Dropout()(x) is x
    seeded = Dropout(seed=3)
    assert seeded(x) is x


@pytest.mark.parametrize("p", [-0.1, 1.1, float("nan")])
def test_invalid_p_is_a_value_error_with_torchs_message(p):
    message = r"dropout probability has to be between 0 and 1, but got"
    with pytest.raises(ValueError, match=message):
        Dropout(p)
    with pytest.raises(ValueError, match=message):
        dropout(torch.ones(1), p)


# --- beyond the port: the rest of torch's contract ------------------------------------------------


def test_p_zero_and_not_training_return_the_input_object():
    x = torch.randn(5, requires_grad=True) * 1
    assert dropout(x, 0.0) is x
    assert dropout(x, 0.5, training=False) is x
    assert Dropout(0.0)(x) is x
    assert Dropout(0.0, seed=1)(x) is x


@pytest.mark.parametrize("seed", [None, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_p_one_gives_zeros_and_a_zero_gradient(seed, dtype):
    x = torch.tensor([1.0, -2.0, float("inf"), float("nan")], dtype=dtype, requires_grad=True)
    y = dropout(x, 1.0, seed=seed)
    assert torch.equal(y, torch.zeros(4, dtype=dtype))
    y.backward(torch.ones(4, dtype=dtype))
    assert torch.equal(x.grad, torch.zeros(4, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_float_input_is_a_type_error(dtype):
    with pytest.raises(TypeError, match=r"input must be a floating-point tensor .* got torch\."):
        dropout(torch.ones(3, dtype=dtype))
    layer = Dropout(seed=1)
    with pytest.raises(TypeError, match=r"input must be a floating-point tensor"):
        layer(torch.ones(3, dtype=dtype))
    assert layer.calls == 0


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor, got list"):
        dropout([1.0, 2.0])


def test_inplace_on_a_leaf_raises_as_torch_does_and_changes_nothing():
    x = torch.ones(8, requires_grad=True)
    message = "a leaf Variable that requires grad is being used in an in-place operation"
    with pytest.raises(RuntimeError, match=message):
        torch.nn.functional.dropout(x, 0.5, inplace=True)
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError, match=message):
        dropout(x, 0.5, inplace=True)
    assert torch.equal(torch.get_rng_state(), state)  # no seed was drawn
    layer = Dropout(0.5, True, seed=1)
    with pytest.raises(RuntimeError, match=message):
        layer(x)
    assert layer.calls == 0  # no stream was taken
    with pytest.raises(RuntimeError, match="a view of a leaf Variable"):
        dropout(x[2:], 0.5, inplace=True)
    assert torch.equal(x, torch.ones(8))
    with torch.no_grad():  # as in torch, fine without autograd
        assert dropout(x, 0.5, inplace=True) is x


def test_gradients_flow_through_input_only_and_twice():
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.4, seed=2)
    (grad,) = torch.autograd.grad(y, x, upstream, create_graph=True)
    keep_scale = dropout(torch.ones(6, 7, dtype=torch.float64), 0.4, seed=2)
    assert torch.equal(grad, dropout(upstream.detach(), 0.4, seed=2))  # dL/dx = dL/dy * keep * scale
    (second,) = torch.autograd.grad(grad.sum(), upstream)  # double backward: backward is differentiable
    assert torch.equal(second, keep_scale)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*64\), got -1"),
        ({"seed": 2**64}, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer in \[0, 2\*\*64\), got float"),
        ({"seed": 1, "stream": -2}, ValueError, r"stream must be an integer in \[0, 2\*\*64\), got -2"),
        ({"stream": 3}, ValueError, r"stream needs an explicit seed: got seed=None, stream=3"),
    ],
)
def test_bad_seed_or_stream_is_rejected(kwargs, error, message):
    with pytest.raises(error, match=message):
        dropout(torch.ones(4), 0.5, **kwargs)


def test_bad_module_seed_is_rejected():
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got -5"):
        Dropout(0.5, seed=-5)


def test_module_has_no_state_dict_and_follows_dtype_moves():
    layer = Dropout(0.5, seed=4)
    assert layer.state_dict() == torch.nn.Dropout(0.5).state_dict() == {}
    layer(torch.ones(3))
    layer.double()
    assert layer.calls == 1
    assert layer(torch.ones(3, dtype=torch.float64)).dtype == torch.float64


def test_cuda_without_a_kernel_is_a_clear_error(monkeypatch):
    # No silent fallback: a CUDA tensor without the Triton launcher is an error naming the reason.
    monkeypatch.setitem(sys.modules, "dropkit.torch._triton", None)  # makes the import fail ...
    monkeypatch.delattr(dropkit.torch, "_triton", raising=False)  # ... even after an earlier import
    with pytest.raises(RuntimeError, match="no CUDA kernel in this build"):
        _launch._cuda_kernel()
    monkeypatch.setattr(_launch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"CUDA tensors needs triton \(pip install triton\)"):
        _launch._cuda_kernel()


def test_import_dropkit_does_not_import_torch():
    code = "import sys, dropkit; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_large_cpu_outputs_are_advised_huge_pages_before_their_first_touch(monkeypatch):
    # NumPy's rule for its own arrays: from 4 MiB on, madvise(MADV_HUGEPAGE) over the page-aligned part
    # of the buffer. Recorded here; whether the kernel grants huge pages is its own setting.
    from dropkit.torch import _cpu

    calls = []
    monkeypatch.setattr(
        _cpu, "_madvise", lambda start, length, advice: calls.append((start, length, advice)) or 0
    )
    big = torch.randn(1 << 20)  # 4 MiB of float32
    y = dropout(big, 0.5, seed=1)
    assert torch.equal(y, dropout(big.double(), 0.5, seed=1).float())  # values untouched by the advice
    (start, length, advice), storage = calls[0], y.untyped_storage()
    assert advice == 14 and start % 4096 == 0  # MADV_HUGEPAGE over whole pages ...
    assert storage.data_ptr() <= start < storage.data_ptr() + 4096  # ... from the first page boundary ...
    assert start + length == storage.data_ptr() + storage.nbytes()  # ... to the end of the buffer
    calls.clear()
    dropout(torch.randn(1000), 0.5, seed=1)
    assert calls == []  # small outputs are left alone


_THREADS = """
import numba, torch
torch.set_num_threads({torch_threads})
from dropkit.torch import dropout
large = torch.ones(1 << 17)  # past one task of 64K elements: the parallel kernel
dropout(large, 0.5, seed=0)
print(torch.get_num_threads(), numba.get_num_threads())
"""


@pytest.mark.skipif(not dropkit.kernels.numba_available(), reason="needs numba")
@pytest.mark.parametrize(
    ("numba_threads", "torch_threads", "expected"),
    [(2, 1, "1 1"), (2, 2, "2 2"), (1, 2, "2 1")],
)
def test_numba_kernels_run_on_torchs_thread_count_and_leave_it_alone(numba_threads, torch_threads, expected):
    # A fresh process: numba's pool starts on dropkit.torch's import, which used to reset torch's count.
    env = {**os.environ, "NUMBA_NUM_THREADS": str(numba_threads)}
    code = _THREADS.format(torch_threads=torch_threads)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.split("\n")[-2] == expected  # torch's count as set, numba's min(torch, its pool)
