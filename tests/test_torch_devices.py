"""CUDA tensors draw the very masks CPU tensors draw (dropkit.torch routes them to the Triton kernel).

With a GPU the tests run on it. Without one, ``test_triton_route_under_the_interpreter`` reruns this
module in a fresh process with ``TRITON_INTERPRET=1`` (read when triton is first imported), where the
Triton launcher accepts CPU tensors: the CUDA route of the op (contiguous staging, stride order,
arguments, backward) is then exercised on CPU and compared with the CPU route.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from dropkit.torch import Dropout, _launch, dropout  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
runs_route = pytest.mark.skipif(
    not (HAS_TRITON and (CUDA or INTERPRETED)),
    reason="needs triton and CUDA, or TRITON_INTERPRET=1 (test_triton_route_under_the_interpreter)",
)
DEVICE = "cuda" if CUDA and not INTERPRETED else "cpu"


@contextlib.contextmanager
def cuda_route():
    """Inside: tensors take the CUDA route (under the interpreter, CPU tensors are sent there too)."""
    if not INTERPRETED:
        yield
        return
    cpu_kernel = _launch.kernel
    _launch.kernel = lambda device: _launch._cuda_kernel()
    try:
        yield
    finally:
        _launch.kernel = cpu_kernel


def layouts():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, 5, 3, generator=g)
    yield base
    yield base.permute(2, 0, 3, 1)
    yield base.contiguous(memory_format=torch.channels_last)
    yield torch.randn(4099, generator=g)
    yield torch.randn(8, 10, generator=g)[::2, 1::3]


@runs_route
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("seed", "stream"), [(3, 0), (2**63, 2**64 - 1)])
def test_device_masks_and_gradients_equal_the_cpu_route(dtype, seed, stream):
    for x in layouts():
        x = x.to(dtype).detach().requires_grad_()  # a leaf with x's strides
        expected = dropout(x, 0.35, seed=seed, stream=stream)
        (expected_grad,) = torch.autograd.grad(expected, x, torch.ones_like(expected))
        with cuda_route():
            on_device = x.detach().to(DEVICE).requires_grad_()
            got = dropout(on_device, 0.35, seed=seed, stream=stream)
            (grad,) = torch.autograd.grad(got, on_device, torch.ones_like(got))
        assert got.device.type == DEVICE and got.stride() == expected.stride()
        if INTERPRETED and dtype == torch.bfloat16:
            # The interpreter casts float32 -> bfloat16 toward zero where GPUs round to nearest even.
            wide = dropout(x.detach().float(), 0.35, seed=seed, stream=stream)
            toward_zero = (wide.view(torch.int32) & -65536).view(torch.float32).bfloat16()
            assert bool(((got == expected) | (got == toward_zero)).all())
            continue
        assert torch.equal(got.cpu(), expected)
        assert torch.equal(grad.cpu(), expected_grad)


@runs_route
def test_device_module_numbers_its_calls_and_p_one_is_zeros():
    x = torch.randn(33, 17)
    layer, cpu_layer = Dropout(0.5, seed=11).to(DEVICE), Dropout(0.5, seed=11)
    with cuda_route():
        outputs = [layer(x.to(DEVICE)).cpu() for _ in range(2)]
        zeros = dropout(x.to(DEVICE), 1.0, seed=1)
    assert all(torch.equal(out, cpu_layer(x)) for out in outputs)
    assert torch.equal(zeros.cpu(), torch.zeros(33, 17))


@pytest.mark.skipif(INTERPRETED or CUDA or not HAS_TRITON, reason="the module already runs the route here")
def test_triton_route_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "1 skipped" in summary, summary  # only this test itself skips there
