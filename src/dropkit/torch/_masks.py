"""The variants' masks on tensors: ``keep ? x * scale (+ offset) : dropped`` with a mask that broadcasts.

The structured variants draw one decision per channel, sequence or sample (a mask shape with 1s
where it broadcasts), alpha dropout one per element, DropBlock a keep mask of its own. On the CPU the
broadcast kernel (:func:`dropkit.kernels.broadcast_dropout`, :func:`dropkit.kernels.apply_keep`) writes
the output in one pass over ``x``'s memory order: ``x`` and the mask are permuted alike so that ``x`` is
contiguous, and the output is permuted back, dense in ``x``'s stride order (strided or expanded inputs,
such as the gradient of a ``sum``, are copied dense first). float16 and bfloat16 are widened to
float32, where the products are formed anyway. On other devices the mask is drawn on the CPU and torch
ops apply it.

Rounding, for every path: the product (and the sum, with ``offset``) is formed in float32 (float64 for
float64 data), each rounded once, and the result once to ``x``'s dtype; dropped elements are set, never
multiplied by 0, so inf and NaN inputs give ``dropped`` there, as in the reference.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from dropkit import kernels
from dropkit.philox import fast_keep_threshold
from dropkit.sharding import Shard
from dropkit.torch import _cpu, _launch
from dropkit.torch._checks import to_signed, wide_of

__all__ = ["apply_keep", "draw_and_apply", "follow_threads", "shard", "start"]


@functools.lru_cache(maxsize=256)  # a Shard checks its geometry when made; layers see few shapes
def shard(global_shape: tuple[int, ...], offsets: tuple[int, ...], shape: tuple[int, ...]) -> Shard:
    """The :class:`~dropkit.sharding.Shard`, made once per geometry."""
    return Shard(global_shape, offsets, shape)


@functools.lru_cache(maxsize=256)
def start(mask: Shard) -> int | None:
    """``mask.start``, found once per shard."""
    return mask.start


def follow_threads(n: int) -> None:
    """Before a kernel call on ``n`` elements: if it takes numba's threads, run them on torch's count."""
    if kernels.threaded(n):
        _cpu.follow_torch_threads()


def _constant(value: float, wide: torch.dtype) -> float:
    """``value`` rounded once to the compute type, as the reference rounds its constants."""
    return float(np.float32(value)) if wide == torch.float32 else float(value)


def _fill_dropped(out: Tensor, keep: np.ndarray, value: float) -> Tensor:
    """Set ``out`` to ``value`` where the mask ``keep`` (same rank, 1 where it broadcasts) is False.

    Only the dropped elements are written, through an index: ``masked_fill_`` visits every element
    and ran at about a tenth of a multiply's speed on CPU. A smaller mask indexes ``out`` viewed with
    its drawn dims first, one index entry per dropped channel, sequence or sample.
    """
    if keep.all():
        return out
    if not keep.any():
        return out.fill_(value)
    if keep.shape == tuple(out.shape) and out.is_contiguous():
        out.view(-1)[torch.from_numpy(np.flatnonzero(~keep)).to(out.device)] = value
        return out
    drawn = [d for d in range(out.dim()) if keep.shape[d] == out.shape[d]]
    shared = [d for d in range(out.dim()) if keep.shape[d] != out.shape[d]]
    dropped = np.nonzero(~keep.reshape([keep.shape[d] for d in drawn]))
    out.permute(drawn + shared)[tuple(torch.from_numpy(i).to(out.device) for i in dropped)] = value
    return out


_NUMPY_DTYPES = (torch.float32, torch.float64)
Write = Callable[[np.ndarray, "list[int] | None", np.ndarray], object]  # (x, order, out) -> None


def _on_cpu(x: Tensor, write: Write) -> Tensor:
    """``write(x_array, order, out_array)`` on NumPy views of ``x`` permuted to its memory order
    (``order``: that permutation, outermost dim first; None for a contiguous ``x``); the output comes
    back dense in ``x``'s stride order."""
    order = None
    if not x.is_contiguous():
        if any(x.stride()):
            order = _launch.stride_order(x)[::-1]
            x = x.permute(order)
        x = x.contiguous()  # an expanded scalar (the gradient of a sum) is row-major: no order to find
    out = _launch.new_output(x)
    follow_threads(x.numel())
    if x.dtype in _NUMPY_DTYPES:  # zero-copy views (detach: .numpy() refuses a tensor that requires grad)
        write(x.detach().numpy(), order, out.numpy())
    else:
        _cpu.on_numpy(x, out, lambda array, out_array: write(array, order, out_array))
    return out if order is None else out.permute(sorted(range(len(order)), key=order.__getitem__))


class _Call(NamedTuple):
    """What a hot call of the broadcast kernel needs beyond the tensors and the key, found once per
    (mask, shape, dtype)."""

    module: ModuleType  # dropkit.kernels.cpu_variants
    bases: np.ndarray
    bases_address: int  # of ``bases``, which this tuple keeps alive
    length: int
    count: int
    start: int
    inner_drawn: bool
    threaded: bool
    huge: bool  # large enough for huge pages
    dtype: type[np.floating]
    n: int  # elements of the tensor
    start_signed: int  # ``start`` as the int64 with its bits


@functools.lru_cache(maxsize=256)
def _call(mask: Shard, shape: tuple[int, ...], dtype: torch.dtype) -> _Call | None:
    """The broadcast kernel's :class:`_Call` for ``mask`` on a row-major tensor of ``shape``, or None:
    no numba, or a shard of several runs."""
    first, module = mask.start, kernels.variants_module()
    if first is None or module is None:
        return None
    bases, length, inner_drawn = kernels.broadcast_rows(shape, mask.local_shape)
    n = math.prod(shape)
    huge = n * dtype.itemsize >= _cpu.HUGE_PAGES_FROM
    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    threaded = kernels.threaded(n)
    address = bases.ctypes.data
    return _Call(
        module, bases, address, length, mask.size, first, inner_drawn, threaded, huge, numpy_dtype, n,
        to_signed(first),
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _constants(
    dtype: type[np.floating], scale: float, offset: float | None, dropped: float
) -> tuple[np.floating, np.floating, np.floating]:
    """``(a, b, c)`` of the kernel as NumPy scalars of the data's dtype (each rounded once)."""
    return dtype(scale), dtype(0.0 if offset is None else offset), dtype(dropped)


def draw_and_apply(
    x: Tensor,
    p: float,
    seed: int,
    stream: int,
    mask: Shard,
    scale: float,
    *,
    offset: float | None = None,
    dropped: float = 0.0,
) -> Tensor | None:
    """``keep ? x * scale (+ offset) : dropped`` with ``mask``'s keep decisions for ``(seed, stream)``
    (unsigned), drawn and applied in one kernel call; None where that path does not apply, and the
    caller draws the mask and calls :func:`apply_keep`.

    It applies to a row-major float32/float64 CPU tensor (or an expanded scalar, the gradient of a sum,
    which the kernel reads as one value) whose mask is one range of the contract's index: the layers'
    hot path, so it repeats none of the entry points' checks, and a small tensor goes by address (no
    NumPy views). Another layout would need the mask drawn in the logical order and permuted, which
    :func:`apply_keep` does.
    """
    dense = x.is_contiguous()
    if not x.is_cpu or x.dtype not in _NUMPY_DTYPES or not (dense or not any(x.stride())):
        return None
    call = _call(mask, x.shape, x.dtype)
    if call is None:
        return None
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    affine = offset is not None
    constants = _constants(call.dtype, scale, offset, dropped)
    threshold = fast_keep_threshold(p)
    if not call.threaded:
        call.module.broadcast_dropout_at(
            x.data_ptr(), call.n if dense else 1, out.data_ptr(), call.n, call.bases_address, call.bases.size,
            call.length, call.count, call.start_signed, threshold, to_signed(seed), to_signed(stream),
            *constants, call.inner_drawn, affine,
        )  # fmt: skip
        return out
    if call.huge:
        _cpu.advise_huge_pages(out)
    _cpu.follow_torch_threads()
    # An expanded scalar goes as its one element, which the kernel broadcasts.
    x = x.detach() if dense else x.detach().as_strided((1,), (1,))
    integers = (np.uint64(v) for v in (call.start, threshold, seed, stream))
    call.module.broadcast_dropout_kernel(
        x.numpy().reshape(-1), out.numpy().reshape(-1), call.bases, call.length, call.count, *integers,
        *constants, call.inner_drawn, affine,
    )  # fmt: skip
    return out


def apply_keep(
    x: Tensor, keep: np.ndarray, scale: float, *, offset: float | None = None, dropped: float = 0.0
) -> Tensor:
    """``keep ? x * scale (+ offset) : dropped`` with ``keep`` a NumPy bool mask broadcastable to ``x``
    (same rank): the broadcast kernel on the CPU; elsewhere torch ops write the product, then the
    dropped entries."""
    if x.device.type == "cpu":

        def write(array: np.ndarray, order: list[int] | None, out: np.ndarray) -> None:
            permuted = keep if order is None else keep.transpose(order)
            kernels.apply_keep(array, permuted, scale, offset=offset, dropped=dropped, out=out)

        return _on_cpu(x, write)
    wide = wide_of(x.dtype)
    out = _launch.new_output(x)
    if offset is None:
        torch.mul(x.to(wide), _constant(scale, wide), out=out)
    else:  # two roundings in the compute type, as the reference
        torch.add(x.to(wide) * _constant(scale, wide), _constant(offset, wide), out=out)
    return _fill_dropped(out, keep, _constant(dropped, wide))
