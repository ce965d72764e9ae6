"""Where a torch dropout op meets a kernel: the device's launcher, and the dense staging around it.

Every launcher has :class:`dropkit.kernels.Launcher`'s signature: CPU tensors go to
:func:`dropkit.torch._cpu.dropout_apply` (the NumPy kernels on zero-copy views), CUDA tensors to
:func:`dropkit.torch._triton.dropout_apply`. The mask follows the logical row-major index, not the
memory order, so a launcher sees contiguous tensors; the output is dense in the input's stride order
(as torch's TensorIterator makes it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from torch import Tensor

from dropkit.kernels import Launcher, launch_per_run
from dropkit.sharding import Shard
from dropkit.torch import _cpu

__all__ = [
    "apply",
    "apply_in_place",
    "apply_shard",
    "empty_dense_like",
    "kernel",
    "new_output",
    "on_dense",
    "stride_order",
]


def stride_order(x: Tensor) -> list[int]:
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


def empty_dense_like(x: Tensor) -> Tensor:
    """An uninitialized dense tensor of ``x``'s shape, dtype and device, in ``x``'s stride order."""
    if x.is_contiguous():
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    strides = [0] * x.dim()
    step = 1
    for dim in stride_order(x):
        strides[dim] = step
        step *= x.shape[dim]
    return torch.empty_strided(x.shape, strides, dtype=x.dtype, device=x.device)


def new_output(x: Tensor) -> Tensor:
    """:func:`empty_dense_like` for a real (not fake) output: large CPU ones get huge pages (see ``_cpu``)."""
    return _cpu.advise_huge_pages(empty_dense_like(x))


def _cuda_kernel() -> Launcher[Tensor]:
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


def kernel(device: torch.device) -> Launcher[Tensor]:
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


def apply(x: Tensor, p: float, seed: int, stream: int, scale: float, start: int) -> Tensor:
    """``x * keep * scale`` for flat indexes from ``start``: the device's kernel over ``x``'s logical view."""
    launcher = kernel(x.device)
    return on_dense(
        x, lambda dense, out: launcher(dense, p, seed=seed, stream=stream, scale=scale, start=start, out=out)
    )


def apply_in_place(x: Tensor, p: float, seed: int, stream: int, scale: float, start: int) -> Tensor:
    """:func:`apply` written into ``x``; returns ``x``.

    A contiguous ``x`` is the kernel's ``out`` (float32/float64 on CPU and every CUDA dtype with no
    temporary; CPU float16/bfloat16 through a float32 copy, as always); a strided one is staged
    through a contiguous copy, written in place there and copied back.
    """
    dense = x if x.is_contiguous() else x.contiguous()
    if _cpu.fused(dense, p, seed, stream, scale, start, out=dense) is None:
        kernel(x.device)(dense, p, seed=seed, stream=stream, scale=scale, start=start, out=dense)
    return x if dense is x else x.copy_(dense)


def apply_shard(x: Tensor, p: float, seed: int, stream: int, scale: float, shard: Shard) -> Tensor:
    """``x * keep * scale`` with the shard's slice of the global mask, for a shard of several runs."""
    kwargs = {"seed": seed, "stream": stream, "scale": scale}
    starts, length = shard.runs
    if x.device.type == "cpu":

        def write(dense: Tensor, out: Tensor) -> None:
            _cpu.follow_torch_threads()
            _cpu.on_numpy(dense, out, lambda a, o: shard.dropout_apply(a, p, out=o, **kwargs))

    else:

        def write(dense: Tensor, out: Tensor) -> None:
            rows, out_rows = dense.view(-1, length), out.view(-1, length)
            launch_per_run(kernel(x.device), rows, out_rows, starts.tolist(), p, **kwargs)

    return on_dense(x, write)
