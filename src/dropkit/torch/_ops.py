"""The dropout custom ops: one kernel call per device, a fake implementation, and autograd.

``dropkit::dropout(x, p, seed, stream, scale, start)`` returns ``x * keep * scale`` with the
contract's mask over ``x``'s logical row-major index (plus ``start``, the flat index of ``x[0...]``
in a larger tensor; 0 unless a caller shards). Its derivative in ``x`` is ``keep * scale``, so
backward is the same op applied to the gradient: autograd keeps ``(p, seed, stream, scale,
start)`` as Python numbers and no tensor, and double backward comes for free.

Seeds and streams are unsigned 64-bit in the contract while op integers are signed 64-bit, so
they cross the op boundary reinterpreted two's-complement (:func:`to_signed`, :func:`to_unsigned`).

Under ``torch.compile`` a seed drawn per call (``seed=None``) or a module's call counter is a run-
time value, not a constant that can be baked into the graph. Those calls use
``dropkit::dropout_keyed``, which takes ``(seed, stream)`` as a 2-element int64 CPU tensor and saves
that 16-byte key for backward; ``dropkit::draw_seed_`` fills a seed tensor from torch's default
CPU generator at run time, exactly as the eager path draws it, so compiled and eager runs agree.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from torch import Tensor

from dropkit.torch import _cpu

_UINT64 = 2**64
_INT63_LIMIT = 2**63 - 1  # fresh seeds are drawn from [0, 2**63 - 1), torch.randint's int64 range


def to_signed(value: int) -> int:
    """An unsigned 64-bit integer as the int64 with the same bits."""
    return value - _UINT64 if value >= 2**63 else value


def to_unsigned(value: int) -> int:
    """An int64 as the unsigned 64-bit integer with the same bits."""
    return value % _UINT64


def unpack_key(key: Tensor) -> tuple[int, int]:
    """The unsigned ``(seed, stream)`` of an int64 key tensor of shape ``(2,)`` (see :func:`key_tensor`)."""
    seed, stream = key.tolist()
    return to_unsigned(seed), to_unsigned(stream)


def fresh_seed() -> int:
    """A 63-bit seed from torch's default CPU generator (``torch.manual_seed`` governs it)."""
    return int(torch.randint(0, _INT63_LIMIT, (), dtype=torch.int64))


def _stride_order(x: Tensor) -> list[int]:
    """Dims of ``x`` from innermost to outermost by stride, as torch's TensorIterator orders them.

    Size-1 and stride-0 (broadcast) dims are ambiguous and keep their logical place, so a
    permuted, sliced or channels_last input gets an output dense in the same order.
    """
    ndim = x.dim()
    perm = list(range(ndim - 1, -1, -1))

    def should_swap(dim0: int, dim1: int) -> int:
        stride0, stride1 = x.stride(dim0), x.stride(dim1)
        if x.shape[dim0] == 1 or x.shape[dim1] == 1 or stride0 == 0 or stride1 == 0:
            return 0
        if stride0 != stride1:
            return 1 if stride0 > stride1 else -1
        return 1 if x.shape[dim0] > x.shape[dim1] else 0

    for i in range(1, ndim):  # insertion sort that tolerates ambiguous comparisons
        dim1 = i
        for dim0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[dim0], perm[dim1])
            if comparison > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif comparison < 0:
                break
    return perm


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what every kernel takes


def empty_dense_like(x: Tensor) -> Tensor:
    """An uninitialized dense tensor of ``x``'s shape, dtype and device, in ``x``'s stride order."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    strides = [0] * x.dim()
    step = 1
    for dim in _stride_order(x):
        strides[dim] = step
        step *= x.shape[dim]
    return torch.empty_strided(x.shape, strides, dtype=x.dtype, device=x.device)


def new_output(x: Tensor) -> Tensor:
    """:func:`empty_dense_like` for a real (not fake) output: large CPU ones get huge pages (see ``_cpu``)."""
    return _cpu.advise_huge_pages(empty_dense_like(x))


def _cuda_kernel() -> Callable[..., Tensor]:
    """The Triton launcher, imported on first use so CPU users never need triton."""
    try:
        from dropkit.torch import _triton
    except ImportError as error:
        if importlib.util.find_spec("triton") is None:
            raise RuntimeError(
                "dropkit.torch on CUDA tensors needs triton (pip install triton); it is not installed"
            ) from error
        raise RuntimeError(
            f"dropkit.torch has no CUDA kernel in this build (importing dropkit.torch._triton: {error})"
        ) from error
    return _triton.dropout_apply


def _kernel(device: torch.device) -> Callable[..., Tensor]:
    """The ``dropout_apply(x, p, *, seed, stream, scale, start, out)`` launcher for ``device``."""
    if device.type == "cpu":
        return _cpu.dropout_apply
    if device.type == "cuda":
        return _cuda_kernel()
    raise RuntimeError(f"dropkit.torch supports CPU and CUDA tensors, got a tensor on {device}")


def on_dense(x: Tensor, write: Callable[[Tensor, Tensor], object]) -> Tensor:
    """``write(x_contiguous, out_contiguous)``, returned with ``x``'s stride order (``empty_dense_like``).

    The mask follows the logical row-major index, not memory order, so strided tensors go through
    contiguous copies; contiguous ones are used as they are.
    """
    out = new_output(x)
    dense_out = (
        out
        if out.is_contiguous()
        else _cpu.advise_huge_pages(torch.empty_like(x, memory_format=torch.contiguous_format))
    )
    write(x.contiguous(), dense_out)
    return out if dense_out is out else out.copy_(dense_out)


def _apply(x: Tensor, p: float, seed: int, stream: int, scale: float, start: int) -> Tensor:
    """The op on a real tensor: run the device's kernel over the logical contiguous view of ``x``."""
    kernel = _kernel(x.device)
    return on_dense(
        x, lambda dense, out: kernel(dense, p, seed=seed, stream=stream, scale=scale, start=start, out=out)
    )


@torch.library.custom_op("dropkit::dropout", mutates_args=())
def dropout_op(x: Tensor, p: float, seed: int, stream: int, scale: float, start: int) -> Tensor:
    """``x * keep * scale``; ``seed`` and ``stream`` as int64 (see :func:`to_signed`)."""
    return _apply(x, p, to_unsigned(seed), to_unsigned(stream), scale, start)


@dropout_op.register_fake
def _dropout_fake(x: Tensor, p: float, seed: int, stream: int, scale: float, start: int) -> Tensor:
    return empty_dense_like(x)


def _dropout_setup_context(ctx, inputs, output) -> None:
    _, ctx.p, ctx.seed, ctx.stream, ctx.scale, ctx.start = inputs  # numbers only: no tensor is saved


def _dropout_backward(ctx, grad: Tensor):
    # d(x * keep * scale)/dx = keep * scale: the forward op, applied to the gradient.
    return dropout_op(grad, ctx.p, ctx.seed, ctx.stream, ctx.scale, ctx.start), None, None, None, None, None


dropout_op.register_autograd(_dropout_backward, setup_context=_dropout_setup_context)


@torch.library.custom_op("dropkit::dropout_keyed", mutates_args=())
def dropout_keyed_op(x: Tensor, key: Tensor, p: float, scale: float, start: int) -> Tensor:
    """``dropkit::dropout`` with ``(seed, stream)`` given as an int64 CPU tensor of shape ``(2,)``."""
    return _apply(x, p, *unpack_key(key), scale, start)


@dropout_keyed_op.register_fake
def _dropout_keyed_fake(x: Tensor, key: Tensor, p: float, scale: float, start: int) -> Tensor:
    return empty_dense_like(x)


def _dropout_keyed_setup_context(ctx, inputs, output) -> None:
    _, key, ctx.p, ctx.scale, ctx.start = inputs
    ctx.save_for_backward(key)


def _dropout_keyed_backward(ctx, grad: Tensor):
    (key,) = ctx.saved_tensors
    return dropout_keyed_op(grad, key, ctx.p, ctx.scale, ctx.start), None, None, None, None


dropout_keyed_op.register_autograd(_dropout_keyed_backward, setup_context=_dropout_keyed_setup_context)


# A mutating op, so the compiler neither merges two draws (CSE) nor drops one; the
# nondeterministic_seeded tag keeps draws in program order.
@torch.library.custom_op(
    "dropkit::draw_seed_", mutates_args=("out",), tags=(torch.Tag.nondeterministic_seeded,)
)
def draw_seed_op(out: Tensor) -> None:
    """Fill the int64 scalar tensor ``out`` with :func:`fresh_seed`."""
    out.fill_(fresh_seed())


@draw_seed_op.register_fake
def _draw_seed_fake(out: Tensor) -> None:
    return None


def fresh_seed_tensor() -> Tensor:
    """:func:`fresh_seed` as a 0-d int64 CPU tensor, drawn when the (compiled) graph runs."""
    seed = torch.empty((), dtype=torch.int64)
    draw_seed_op(seed)
    return seed


def key_tensor(seed: int | None, stream: int | Tensor) -> Tensor:
    """``(seed, stream)`` as the keyed ops' int64 CPU tensor of shape ``(2,)``, both reinterpreted
    signed; ``seed=None`` draws a fresh seed when the (compiled) graph runs."""
    seed_t = fresh_seed_tensor() if seed is None else torch.tensor(to_signed(seed))
    stream_t = stream if isinstance(stream, Tensor) else torch.tensor(to_signed(stream))
    return torch.stack((seed_t, stream_t))
