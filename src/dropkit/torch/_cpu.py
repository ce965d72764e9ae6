"""CPU implementation of the dropout op: the NumPy kernels on zero-copy views of torch tensors.

:func:`dropkit.kernels.dropout_apply` picks the fastest CPU path (the fused numba kernel for
contiguous float32/float64). float16 and bfloat16 data are widened to float32, where the product is
formed anyway by the rounding rule of :mod:`dropkit.kernels.reference`, and rounded once back to
the data type; bfloat16, which NumPy lacks, needs no mask code of its own that way. Large outputs
are advised huge pages before their first touch (:func:`advise_huge_pages`), as NumPy's arrays are.
The hot path, :func:`fused`, hands small tensors to the kernel by address instead (no views).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

import numpy as np
import torch

from dropkit import kernels
from dropkit.kernels import dropout_apply as _numpy_dropout_apply
from dropkit.philox import KEEP_NONE, fast_keep_threshold

HUGE_PAGES_FROM = 1 << 22  # bytes; NumPy asks for huge pages from this size on, and so does dropkit
_MADV_HUGEPAGE = 14  # <linux/mman.h>
_PAGE = 4096


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _libc_madvise()


def advise_huge_pages(tensor: torch.Tensor) -> torch.Tensor:
    """Ask Linux to back a new CPU tensor of 4 MiB or more with 2 MiB pages; returns ``tensor``.

    torch's CPU allocator faults fresh memory in 4 KiB pages, which at 2**24 float32 elements cost
    about three times the dropout itself (docs/benchmarks.md, "The torch face"). NumPy advises huge
    pages for its own large arrays; this does the same for dropkit's outputs, before their first
    touch. Only advice: where the kernel's transparent huge pages are off, or the call fails, nothing
    changes.
    """
    nbytes = tensor.untyped_storage().nbytes()
    if _madvise is None or tensor.device.type != "cpu" or nbytes < HUGE_PAGES_FROM:
        return tensor
    start = tensor.untyped_storage().data_ptr()
    aligned = -(-start // _PAGE) * _PAGE  # madvise takes page-aligned ranges
    _madvise(aligned, start + nbytes - aligned, _MADV_HUGEPAGE)
    return tensor


def _start_numba_keeping_torch_threads() -> None:
    """Import numba's kernels now, restoring torch's thread count after numba's pool starts.

    With numba's OpenMP threading layer, numba and torch share one OpenMP runtime, and starting
    numba's pool sets the calling thread's OpenMP thread count -- the one ``torch.get_num_threads()``
    reports -- to ``NUMBA_NUM_THREADS``: a ``torch.set_num_threads(1)`` made before would be undone
    by the first dropout.
    """
    threads = torch.get_num_threads()
    kernels.numba_available()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


_start_numba_keeping_torch_threads()


def follow_torch_threads() -> None:
    """Run numba's parallel kernels on torch's thread count (``torch.set_num_threads``), at most the
    ``NUMBA_NUM_THREADS`` numba's pool has; numba's setting is per calling thread, and so is this.

    Two pools sized apart oversubscribe the cores: with torch on one thread and numba on every core,
    a converted BERT training step took 5x torch's (docs/torch.md).
    """
    if not kernels.numba_available():
        return
    import numba  # imported by numba_available()

    threads = torch.get_num_threads()
    wanted = min(threads, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)
        if torch.get_num_threads() != threads:  # the shared OpenMP count moved with numba's
            torch.set_num_threads(threads)


def on_numpy(
    x: torch.Tensor, out: torch.Tensor, apply: Callable[[np.ndarray, np.ndarray], object]
) -> torch.Tensor:
    """``apply(x, out)`` on NumPy views of contiguous CPU tensors; returns ``out``.

    float32/float64 go through zero-copy views. float16/bfloat16 are widened to float32 (exact), where
    the product is formed anyway, ``apply`` works in place on that copy, and the result is rounded once
    to the data type.
    """
    # detach(): .numpy() refuses tensors that require grad; the op runs below autograd anyway.
    if x.dtype in (torch.float32, torch.float64):
        apply(x.detach().numpy(), out.detach().numpy())
        return out
    wide = x.detach().float().numpy()
    apply(wide, wide)
    return out.copy_(torch.from_numpy(wide))


def dropout_apply(
    x: torch.Tensor, p: float, *, seed: int, stream: int, scale: float, start: int, out: torch.Tensor
) -> torch.Tensor:
    """``out[i] = keep(start + i) ? x[i] * scale : 0`` over the row-major flat index ``i``.

    Args:
        x: contiguous CPU tensor, float16, bfloat16, float32 or float64.
        out: contiguous CPU tensor of ``x``'s shape and dtype, written in full.
    """
    kwargs = {"seed": seed, "stream": stream, "scale": scale, "start": start}
    follow_torch_threads()
    return on_numpy(x, out, lambda array, out_array: _numpy_dropout_apply(array, p, out=out_array, **kwargs))


_FUSED_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}  # the numba kernel's, to NumPy's
_INT64_END, _UINT64 = 2**63, 2**64


def fused(
    x: torch.Tensor,
    p: float,
    seed: int,
    stream: int,
    scale: float,
    start: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """``x * keep * scale`` by the numba kernel called straight on a contiguous float32/float64 CPU
    tensor, or None where that path does not apply (the caller takes :func:`dropout_apply`'s).

    The torch face's hot path: every argument was checked at the entry point, so none is checked
    again. ``out=x`` writes in place; else the output is a plain ``empty_like`` (huge pages only from
    4 MiB on). Up to one task's elements the kernel takes the tensors' addresses (no NumPy views).
    """
    n = x.numel()
    dtype = _FUSED_DTYPES.get(x.dtype)
    if (
        dtype is None
        or not x.is_cpu
        or not x.is_contiguous()
        or start + n > 2**64
        or not kernels.numba_available()
    ):
        return None
    from dropkit.kernels import cpu  # imported by numba_available() already

    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        if n * x.element_size() >= HUGE_PAGES_FROM:
            advise_huge_pages(out)
    threshold = fast_keep_threshold(p)
    scale = 0.0 if threshold == KEEP_NONE else scale  # p == 1 scales nothing
    if n <= cpu.SERIAL_MAX:
        # int64 bit patterns, inline: a call per integer would cost a tenth of a 64x64 layer's time
        start, seed, stream = (v - _UINT64 if v >= _INT64_END else v for v in (start, seed, stream))
        cpu.dropout_kernel_at(x.data_ptr(), out.data_ptr(), n, start, threshold, seed, stream, dtype(scale))
        return out
    follow_torch_threads()
    integers = (np.uint64(v) for v in (start, threshold, seed, stream))
    kernel_out = out.detach().numpy().reshape(-1)
    cpu.dropout_kernel(x.detach().numpy().reshape(-1), kernel_out, *integers, float(scale))
    return out
