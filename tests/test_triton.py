"""The Triton dropout kernel (dropkit.torch._triton) draws the reference's masks and values.

Two ways to run the kernel tests, one module:

* Triton's interpreter (``TRITON_INTERPRET=1``) runs the kernel on CPU tensors. The variable is read
  when ``@triton.jit`` decorates a function, so it must be set before triton is first imported in the
  process; another test module may already have imported it, so ``test_interpreter_suite`` reruns this
  module in a fresh interpreter process with the variable set, and fails with that run's output.
* With CUDA and no interpreter, the same tests run compiled on the GPU, plus the GPU-only ones
  (more than 2**31 elements, the current CUDA stream).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip(
        "triton is not installed (pip install triton); the GPU kernels need it", allow_module_level=True
    )
torch = pytest.importorskip("torch", reason="the Triton kernels work on torch tensors")

from dropkit.kernels.reference import dropout_apply as reference_apply  # noqa: E402
from dropkit.philox import keep_range  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
DEVICE = "cpu" if INTERPRETED else "cuda"
runs_kernel = pytest.mark.skipif(
    not (INTERPRETED or CUDA),
    reason="needs CUDA, or TRITON_INTERPRET=1 (test_interpreter_suite reruns this module that way)",
)
gpu_only = pytest.mark.skipif(
    INTERPRETED or not CUDA, reason="needs a CUDA GPU (compiled Triton, not the interpreter)"
)

if INTERPRETED or CUDA:
    from dropkit.torch._triton import dropout_apply

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
TORCH_DTYPES["float64"] = torch.float64

# (n, start, seed, stream): odd lengths and lengths not a multiple of 4, starts not a multiple of 4 and
# past 2**32 (the block's high counter word), seeds >= 2**63, streams >= 2**32; the kernel's programs own
# 2048 elements, so n > 2048 crosses a program boundary.
CASES = [
    (1, 0, 0, 0),
    (7, 3, 1, 2**32),
    (4099, 0, 2**63, 7),
    (2051, 2**32 + 1, 2**64 - 1, 2**64 - 1),
    (3001, 2**62 + 2, 12345, 2**33 + 5),
]
PS = [0.0, 0.3, 0.5, 1.0]


def nonzero_input(n: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Values in ±[0.5, 2): never zero, so an output is zero exactly where the kernel dropped."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    return torch.tensor(values, dtype=torch.float64).to(dtype).to(DEVICE)


def inverted_scale(p: float) -> float:
    return 1.0 / (1.0 - p) if p < 1.0 else 0.0  # the kernel never reads scale when p == 1


def expected(x: torch.Tensor, p: float, seed: int, stream: int, start: int) -> torch.Tensor:
    """The NumPy reference's output, in x's dtype (bfloat16: the float32 product rounded to nearest even)."""
    wide = x.cpu() if x.dtype != torch.bfloat16 else x.cpu().float()  # NumPy has no bfloat16
    out = reference_apply(wide.numpy(), p, seed=seed, stream=stream, scale=inverted_scale(p), start=start)
    return torch.from_numpy(out).to(x.dtype)


def toward_zero_bfloat16(values: torch.Tensor) -> torch.Tensor:
    """float32 -> bfloat16 by dropping the low 16 bits (round toward zero)."""
    return (values.float().view(torch.int32) & -65536).view(torch.float32).to(torch.bfloat16)


@runs_kernel
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize(("n", "start", "seed", "stream"), CASES)
def test_keep_pattern_is_the_reference_mask(n, start, seed, stream, p):
    x = nonzero_input(n)
    y = dropout_apply(x, p, seed=seed, stream=stream, scale=inverted_scale(p), start=start)
    np.testing.assert_array_equal(y.cpu().numpy() != 0, keep_range(p, seed, stream, start, n))


@runs_kernel
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize(("n", "start", "seed", "stream"), CASES)
def test_float32_values_equal_the_reference(n, start, seed, stream, p):
    x = nonzero_input(n)
    y = dropout_apply(x, p, seed=seed, stream=stream, scale=inverted_scale(p), start=start)
    assert torch.equal(y.cpu(), expected(x, p, seed, stream, start))


@runs_kernel
@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize(("n", "start", "seed", "stream"), CASES[2:])
def test_float16_and_float64_values_equal_the_reference(n, start, seed, stream, dtype):
    # Both form x * scale as NumPy does (float32 for float16 data, float64 for float64) and round once.
    x = nonzero_input(n, TORCH_DTYPES[dtype])
    y = dropout_apply(x, 0.3, seed=seed, stream=stream, scale=inverted_scale(0.3), start=start)
    assert torch.equal(y.cpu(), expected(x, 0.3, seed, stream, start))


@runs_kernel
@pytest.mark.parametrize(("n", "start", "seed", "stream"), CASES[2:])
def test_bfloat16_values_are_the_float32_product_rounded_once(n, start, seed, stream):
    x = nonzero_input(n, torch.bfloat16)
    y = dropout_apply(x, 0.3, seed=seed, stream=stream, scale=inverted_scale(0.3), start=start).cpu()
    nearest = expected(x, 0.3, seed, stream, start)
    if INTERPRETED:
        # The interpreter's float32 -> bfloat16 cast drops the low bits where the GPU rounds to nearest
        # even (triton/runtime/interpreter.py, _convert_float): accept either neighbour of the product.
        wide = torch.from_numpy(
            reference_apply(
                x.float().numpy(), 0.3, seed=seed, stream=stream, scale=inverted_scale(0.3), start=start
            )
        )
        assert bool(((y == nearest) | (y == toward_zero_bfloat16(wide))).all())
        np.testing.assert_array_equal((y != 0).numpy(), keep_range(0.3, seed, stream, start, n))
    else:
        assert torch.equal(y, nearest)


def same_floats(actual: torch.Tensor, wanted: torch.Tensor) -> bool:
    """Bit-equal outside NaNs (so -0.0 != 0.0), NaN where wanted is NaN (GPUs return a canonical NaN)."""
    nan = wanted.isnan()
    bits = {torch.float16: torch.int16, torch.float32: torch.int32}[wanted.dtype]
    return torch.equal(actual.isnan(), nan) and torch.equal(actual[~nan].view(bits), wanted[~nan].view(bits))


@runs_kernel
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the overflow is the point
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_special_values_follow_the_reference(dtype):
    # Subnormals stay (no flush to zero), a product past the largest float becomes inf, kept -0.0 stays
    # -0.0, dropped NaN and inf become +0.0.
    info = torch.finfo(TORCH_DTYPES[dtype])
    specials = [info.smallest_normal / 8, -info.smallest_normal / 3, info.max, -info.max, -0.0, 0.0]
    specials += [float("inf"), float("-inf"), float("nan"), 1.0]
    x = torch.tensor(specials * 40, dtype=TORCH_DTYPES[dtype], device=DEVICE)
    y = dropout_apply(x, 0.5, seed=77, stream=1, scale=2.0, start=2)
    assert same_floats(y.cpu(), expected(x, 0.5, 77, 1, 2))


@runs_kernel
def test_p_within_2_to_the_minus_33_of_one_drops_everything():
    p = 1.0 - 2.0**-40  # t(p) rounds to 2**32, which no 32-bit word reaches
    y = dropout_apply(nonzero_input(101), p, seed=3, stream=0, scale=1.0 / (1.0 - p))
    assert not keep_range(p, 3, 0, 0, 101).any()
    assert not y.any()


@runs_kernel
def test_p_one_gives_zeros_whatever_the_scale():
    y = dropout_apply(nonzero_input(64), 1.0, seed=3, stream=0, scale=float("inf"))
    assert torch.equal(y, torch.zeros_like(y))


@runs_kernel
def test_p_zero_with_unit_scale_is_the_identity():
    x = nonzero_input(1001)
    assert torch.equal(dropout_apply(x, 0.0, seed=5, stream=1, scale=1.0), x)


@runs_kernel
def test_shape_is_kept_and_the_mask_runs_over_row_major_flat_indexes():
    x = nonzero_input(3 * 5 * 7).reshape(3, 5, 7)
    y = dropout_apply(x, 0.5, seed=11, stream=4, scale=2.0, start=6)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y.cpu().numpy() != 0, keep_range(0.5, 11, 4, 6, x.numel()).reshape(3, 5, 7))


@runs_kernel
def test_out_is_x_applies_in_place_with_the_same_values():
    x = nonzero_input(2053)
    fresh = dropout_apply(x, 0.5, seed=8, stream=2, scale=2.0, start=1)
    result = dropout_apply(x, 0.5, seed=8, stream=2, scale=2.0, start=1, out=x)
    assert result is x
    assert torch.equal(x, fresh)


@runs_kernel
def test_out_is_written_and_returned():
    x = nonzero_input(99)
    out = torch.full_like(x, 7.0)
    result = dropout_apply(x, 0.5, seed=8, stream=2, scale=2.0, out=out)
    assert result is out
    assert torch.equal(out, dropout_apply(x, 0.5, seed=8, stream=2, scale=2.0))


@runs_kernel
@pytest.mark.parametrize(("n", "start"), [(2047, 0), (2048, 0), (2045, 3), (2046, 3), (4097, 1)])
def test_writes_exactly_its_elements_of_a_larger_buffer(n, start):
    # Lengths at and one short of whole programs (2048 elements, less start % 4 for the first), views
    # starting one element into their buffers: nothing before or after the view is read or written.
    buffer = torch.full((n + 2,), 7.0, device=DEVICE)
    x = nonzero_input(n + 2)[1:-1]
    out = buffer[1:-1]
    dropout_apply(x, 0.5, seed=4, stream=4, scale=2.0, start=start, out=out)
    assert buffer[0] == 7.0 and buffer[-1] == 7.0
    assert torch.equal(out.cpu(), expected(x, 0.5, 4, 4, start))


@runs_kernel
def test_backward_is_the_same_mask_applied_to_the_gradient():
    # Backward of y = x * keep * scale is grad * keep * scale: the same call on the gradient.
    x, grad = nonzero_input(777, seed=1), nonzero_input(777, seed=2)
    y = dropout_apply(x, 0.3, seed=21, stream=9, scale=inverted_scale(0.3))
    grad_x = dropout_apply(grad, 0.3, seed=21, stream=9, scale=inverted_scale(0.3))
    assert torch.equal(y == 0, grad_x == 0)
    assert torch.equal(grad_x.cpu(), expected(grad, 0.3, 21, 9, 0))


@runs_kernel
def test_empty_tensor_gives_an_empty_tensor():
    y = dropout_apply(torch.empty(0, 3, device=DEVICE), 0.5, seed=0, stream=0, scale=2.0)
    assert y.shape == (0, 3)


@runs_kernel
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"p": 1.5}, ValueError, "dropout probability has to be between 0 and 1"),
        ({"p": "0.5"}, TypeError, "p must be a real number"),
        ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        ({"stream": 2**64}, ValueError, r"stream must be an integer in \[0, 2\*\*64\)"),
        ({"start": -4}, ValueError, r"start must be an integer in \[0, 2\*\*64\)"),
        ({"scale": "2"}, TypeError, "scale must be a real number"),
        ({"out": torch.zeros(4)}, ValueError, "out must be a contiguous tensor of x's shape"),
        ({"out": [0.0]}, TypeError, "out must be a tensor or None"),
    ],
)
def test_bad_arguments_raise_before_writing(kwargs, error, match):
    x = nonzero_input(8)
    out = torch.full_like(x, 7.0)
    args = {"p": 0.5, "seed": 0, "stream": 0, "scale": 2.0, "out": out, **kwargs}
    with pytest.raises(error, match=match):
        dropout_apply(x, args.pop("p"), **args)
    assert bool((out == 7.0).all())


@runs_kernel
def test_integer_tensor_is_rejected():
    with pytest.raises(TypeError, match="x must be a float16, bfloat16, float32 or float64 tensor"):
        dropout_apply(torch.ones(4, dtype=torch.int32, device=DEVICE), 0.5, seed=0, stream=0, scale=2.0)


@runs_kernel
def test_non_contiguous_tensor_is_rejected():
    x = nonzero_input(16).reshape(4, 4).t()
    with pytest.raises(ValueError, match="x must be contiguous"):
        dropout_apply(x, 0.5, seed=0, stream=0, scale=2.0)


@pytest.mark.skipif(INTERPRETED, reason="checks the compiled launcher, which the interpreter replaces")
def test_compiled_launcher_rejects_cpu_tensors():
    from dropkit.torch._triton import dropout_apply as compiled_apply

    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        compiled_apply(torch.ones(4), 0.5, seed=0, stream=0, scale=2.0)


@pytest.mark.skipif(INTERPRETED, reason="compiles the real kernel, which the interpreter replaces")
@pytest.mark.parametrize(("dtype", "width"), [("fp32", "v4.b32"), ("bf16", "v4.b32"), ("fp64", "v2.b64")])
def test_compiles_for_h100_with_128_bit_accesses_whatever_the_length(dtype, width):
    # Compiling needs no GPU. n is left unspecialized (not known to be a multiple of 16): full programs
    # must still load and store 128 bits at a time; the kernel must not flush subnormals.
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip("this triton has no ASTSource/GPUTarget compile API")
    import triton
    import triton.language as tl

    from dropkit.torch import _triton

    scalars = ["n", *_triton._DATA_ARGS]
    signature = {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", **dict.fromkeys(scalars, "i32")}
    signature.update(PHASE="constexpr", COMPUTE="constexpr", BLOCK="constexpr")
    constants = {
        "PHASE": 0,
        "COMPUTE": tl.float64 if dtype == "fp64" else tl.float32,
        "BLOCK": _triton._BLOCK,
    }
    aligned = {(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]}
    source = ASTSource(fn=_triton._dropout_kernel, signature=signature, constexprs=constants, attrs=aligned)
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=_triton._OPTIONS)
    ptx = ptx.asm["ptx"]
    assert f"ld.global.{width}" in ptx and f"st.global.{width}" in ptx
    assert ".ftz" not in ptx


@gpu_only
def test_more_than_2_to_the_31_elements_use_64_bit_indexes():
    n = 2**31 + 4099
    if torch.cuda.mem_get_info()[0] < 2 * n + 2**30:  # float16, in place
        pytest.skip("needs about 5 GB of free GPU memory")
    x = torch.ones(n, dtype=torch.float16, device="cuda")
    y = dropout_apply(x, 0.5, seed=2**63 + 1, stream=3, scale=2.0, start=1, out=x)
    head, tail = y[:4099].cpu().numpy(), y[-4099:].cpu().numpy()
    np.testing.assert_array_equal(head != 0, keep_range(0.5, 2**63 + 1, 3, 1, 4099))
    np.testing.assert_array_equal(tail != 0, keep_range(0.5, 2**63 + 1, 3, 1 + n - 4099, 4099))


@gpu_only
def test_launches_on_the_current_cuda_stream():
    # The side stream is held busy (~50 ms), then fills x; a kernel launched on any other stream would
    # read x before the fill and produce zeros.
    x = torch.zeros(1 << 20, device="cuda")
    dropout_apply(x, 0.5, seed=1, stream=2, scale=2.0)  # compile first: the launch below must be quick
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        x.fill_(1.0)
        y = dropout_apply(x, 0.5, seed=1, stream=2, scale=2.0)
    side.synchronize()
    np.testing.assert_array_equal(y.cpu().numpy(), 2.0 * keep_range(0.5, 1, 2, 0, 1 << 20))


@pytest.mark.skipif(INTERPRETED, reason="this is the parent run that starts the interpreter run")
def test_interpreter_suite():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 60, report
