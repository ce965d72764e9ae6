"""Apply a dropout mask to an array: the one place every NumPy entry point goes through.

``dropout_apply`` picks the fastest available path for the array; every path draws the
contract's mask (see :mod:`dropkit.philox`) and rounds as :func:`scale_kept` does.

- **numba** (:mod:`dropkit.kernels.cpu`): C-contiguous float32/float64 arrays, with ``out`` either
  ``None`` or a C-contiguous array of the same dtype (``out`` may be ``x`` itself). One fused,
  multi-threaded pass; compiled once per install into numba's on-disk cache.
- **reference** (:mod:`dropkit.kernels.reference`): everything else (float16, strided views), and
  every array when numba is not installed, when the environment variable
  ``DROPKIT_DISABLE_NUMBA=1`` is set at import, or when ``USE_NUMBA`` is set to ``False``.

:func:`dropout_apply_runs` is the same for an array whose rows are separate ranges of the global index
(a shard split along an inner dim, see :mod:`dropkit.sharding`). Every launcher, NumPy's here and the
torch face's (``dropkit.torch._cpu``, ``dropkit.torch._triton``), has the :class:`Launcher` signature.

The structured variants draw a mask over a smaller shape and broadcast it: :func:`keep_range` draws it
(the fused kernel's dropout of ones, so the one kernel decides every mask), :func:`apply_keep` applies
it in one pass (:mod:`dropkit.kernels.cpu_variants`), each with the reference as its fallback.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, TypeVar

import numpy as np

from dropkit._validation import UINT64_LIMIT, check_dims, check_finite, check_float_array, check_uint64, shown
from dropkit.kernels import reference
from dropkit.kernels.reference import scale_kept
from dropkit.philox import KEEP_NONE, fast_keep_threshold, keep_threshold
from dropkit.philox import keep_range as _reference_keep_range
from dropkit.philox import random_range as _reference_random_range

__all__ = [
    "USE_NUMBA",
    "Launcher",
    "apply_keep",
    "broadcast_dropout",
    "broadcast_rows",
    "check_out",
    "dropout_apply",
    "dropout_apply_runs",
    "keep_mask",
    "keep_range",
    "launch_per_run",
    "numba_available",
    "random_range",
    "scale_kept",
    "threaded",
    "variants_module",
]

USE_NUMBA: bool = os.environ.get("DROPKIT_DISABLE_NUMBA", "0") in ("", "0")

# Below this many runs, each run goes to the dispatcher on its own (and may use every thread); from
# here on one compiled loop hands whole runs to the threads.
_FEW_RUNS = 8

Array = TypeVar("Array")  # a NumPy array, or a torch tensor for the torch face's launchers


class Launcher(Protocol[Array]):
    """The one signature of every dropout kernel launcher (NumPy arrays or torch tensors).

    ``out[i] = keep(start + i) ? x[i] * scale : 0`` over ``x``'s row-major flat index ``i``, with the
    contract's keep decision for drop probability ``p`` and ``(seed, stream)``; returns ``out``.
    """

    def __call__(
        self, x: Array, p: float, *, seed: int, stream: int, scale: float, start: int, out: Array
    ) -> Array: ...


@functools.cache
def _cpu_module() -> ModuleType | None:
    """:mod:`dropkit.kernels.cpu`, imported on first use (numba takes ~0.3 s to import), or None."""
    try:
        from dropkit.kernels import cpu
    except ImportError:
        return None
    return cpu


def numba_available() -> bool:
    """True when ``dropout_apply`` sends C-contiguous float32/float64 arrays to the numba kernel."""
    return USE_NUMBA and _cpu_module() is not None


@functools.cache
def variants_module() -> ModuleType | None:
    """:mod:`dropkit.kernels.cpu_variants`, imported on first use, or None without numba."""
    try:
        from dropkit.kernels import cpu_variants
    except ImportError:
        return None
    return cpu_variants


def threaded(size: int) -> bool:
    """Whether a kernel call on ``size`` elements runs on numba's threads (else on the calling thread).

    >>> threaded(64), threaded(2**20) == numba_available()
    (False, True)
    """
    cpu = _cpu_module() if USE_NUMBA else None
    return cpu is not None and size > cpu.SERIAL_MAX


def check_out(x: np.ndarray, out: Any) -> None:
    """Raise ``ValueError`` unless ``out`` is a writeable ndarray of ``x``'s shape and dtype."""
    if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype:
        described = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(
            f"out must be an ndarray of x's shape {x.shape} and dtype {x.dtype}, got {described}"
        )
    if not out.flags.writeable:
        raise ValueError("out must be a writeable array, got a read-only one")


def _fits_kernel(x: np.ndarray, out: np.ndarray | None) -> bool:
    """Whether the numba kernel can take this call: dtype, memory layout, aliasing."""
    if x.dtype not in (np.float32, np.float64) or not x.flags.c_contiguous:
        return False
    if out is None or out is x:
        return True
    if not out.flags.c_contiguous:
        return False
    # out aliasing x element for element is in-place and fine; a shifted overlap is not.
    return not np.may_share_memory(x, out) or out.ctypes.data == x.ctypes.data


def dropout_apply(
    x: np.ndarray,
    p: float,
    *,
    seed: int,
    stream: int,
    scale: float,
    start: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Dropout of ``x`` with the contract's mask for flat indexes ``start, start + 1, ...``.

    ``out[i] = keep(start + i) ? x[i] * scale : 0`` over ``x``'s row-major flat index ``i``,
    with ``keep(j) = bits(j) >= keep_threshold(p)``; ``p == 1`` gives zeros whatever ``scale`` is.

    Args:
        x: floating-point array (float16, float32 or float64), any shape and strides.
        p: drop probability in [0, 1].
        seed, stream: unsigned 64-bit integers naming the mask.
        scale: factor applied to kept elements, rounded once to float32 (float64 for float64 data).
        start: global flat index of ``x``'s first element (for shards and slices of a tensor).
        out: optional array of ``x``'s shape and dtype to write into (``out=x`` is in place).

    Returns:
        ``out`` if given, else a new array of ``x``'s shape and dtype.

    >>> dropout_apply(np.ones(6, np.float32), 0.5, seed=0, stream=0, scale=2.0).tolist()
    [0.0, 2.0, 2.0, 2.0, 2.0, 0.0]
    """
    x = check_float_array("x", x)
    threshold = keep_threshold(p)
    scale = check_finite("scale", scale, finite=threshold != KEEP_NONE)  # p == 1 scales nothing
    seed, stream, start = (
        check_uint64("seed", seed),
        check_uint64("stream", stream),
        check_uint64("start", start),
    )
    if start + x.size > UINT64_LIMIT:  # for every p: indexes are unsigned 64-bit and must not wrap
        raise ValueError(
            f"start + count must be at most 2**64 (indexes are unsigned 64-bit), got {start} + {x.size}"
        )
    if out is not None:
        check_out(x, out)
    cpu = _cpu_module() if USE_NUMBA and _fits_kernel(x, out) else None
    if cpu is None:
        return reference.dropout_apply(x, p, seed=seed, stream=stream, scale=scale, start=start, out=out)
    result = np.empty_like(x) if out is None else out
    kernel = cpu.dropout_kernel if x.size > cpu.SERIAL_MAX else cpu.dropout_kernel_serial
    integers = (np.uint64(v) for v in (start, threshold, seed, stream))
    kernel(x.reshape(-1), result.reshape(-1), *integers, float(scale))
    return result


def launch_per_run(
    launcher: Launcher[Array],
    rows: Sequence[Array],
    out_rows: Sequence[Array],
    starts: Sequence[int],
    p: float,
    *,
    seed: int,
    stream: int,
    scale: float,
) -> None:
    """One ``launcher(row, ..., start=starts[r], out=out_rows[r])`` call per row.

    Fine for a few long runs (a split along dim 1 of ``(B, T, H)`` has ``B``); a split of the last dim
    has one short run per row, and costs a call each.
    """
    for row, out_row, start in zip(rows, out_rows, starts, strict=True):
        launcher(row, p, seed=seed, stream=stream, scale=scale, start=start, out=out_row)


def dropout_apply_runs(
    x: np.ndarray,
    p: float,
    *,
    seed: int,
    stream: int,
    scale: float,
    starts: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`dropout_apply` of ``x`` as ``len(starts)`` rows, row ``r`` from global index ``starts[r]``.

    ``x.reshape(len(starts), -1)[r, i]`` takes the keep decision of index ``starts[r] + i``. Few rows
    go to :func:`dropout_apply` one by one; many go to one compiled loop whose threads take whole rows
    (numba), or to the reference.

    Args:
        x: floating-point array whose size is a multiple of ``len(starts)`` (the run length).
        starts: uint64 array, the global flat index of each row's first element.
        out: optional array of ``x``'s shape and dtype to write into (``out=x`` is in place).

    >>> dropout_apply_runs(np.ones(4), 0.5, seed=0, stream=0, scale=2.0, starts=np.array([0, 4], np.uint64))
    array([0., 2., 2., 0.])
    """
    x = check_float_array("x", x)
    threshold = keep_threshold(p)
    scale = check_finite("scale", scale, finite=threshold != KEEP_NONE)  # p == 1 scales nothing
    seed, stream = check_uint64("seed", seed), check_uint64("stream", stream)
    if out is not None:
        check_out(x, out)
    rows_count = len(starts)
    length = x.size // rows_count if rows_count else 0
    cpu = _cpu_module() if USE_NUMBA and _fits_kernel(x, out) else None
    if cpu is None:
        result = reference.dropout_apply_runs(x, p, seed=seed, stream=stream, scale=scale, starts=starts)
        if out is None:
            return result
        out[...] = result
        return out
    result = np.empty_like(x) if out is None else out
    rows, out_rows = x.reshape(rows_count, length), result.reshape(rows_count, length)
    if rows_count < _FEW_RUNS:
        launch_per_run(
            dropout_apply, rows, out_rows, starts.tolist(), p, seed=seed, stream=stream, scale=scale
        )
        return result
    integers = (np.uint64(v) for v in (threshold, seed, stream))
    cpu.dropout_runs_kernel(rows, out_rows, starts, *integers, float(scale))
    return result


def keep_range(p: float, seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """:func:`dropkit.philox.keep_range` (the keep decisions of flat indexes ``start ... start + count - 1``,
    a bool array), drawn by the fused kernel where numba is available: its dropout of ones, so the
    decisions are the kernel's own.

    The arguments are checked as :func:`dropkit.philox.keep_range` checks them.

    >>> from dropkit.philox import keep_range as reference
    >>> bool((keep_range(0.5, 1, 2, 3, 1000) == reference(0.5, 1, 2, 3, 1000)).all())
    True
    """
    threshold = fast_keep_threshold(p)
    seed, stream = check_uint64("seed", seed), check_uint64("stream", stream)
    start, count = check_uint64("start", start), check_uint64("count", count)
    module = variants_module() if USE_NUMBA and 0 < threshold < KEEP_NONE else None
    if module is None or start + count > UINT64_LIMIT:  # p == 0 or 1 draws nothing; the reference says why
        return _reference_keep_range(p, seed, stream, start, count)
    integers = [np.uint64(v) for v in (start, threshold, seed, stream)]
    if not threaded(count):
        return module.keep_kernel(integers[0], count, *integers[1:]).view(np.bool_)
    ones, keep = np.ones(count, np.uint8), np.empty(count, np.uint8)
    _cpu_module().dropout_kernel(ones, keep, *integers, 1.0)
    return keep.view(np.bool_)


def random_range(seed: int, stream: int, start: int, count: int) -> np.ndarray:
    """:func:`dropkit.philox.random_range` (the contract's uint32 words of flat indexes ``start ...
    start + count - 1``), drawn by numba's Philox loop where it is available.

    >>> from dropkit.philox import random_range as reference
    >>> bool((random_range(1, 2, 3, 1000) == reference(1, 2, 3, 1000)).all())
    True
    """
    seed, stream = check_uint64("seed", seed), check_uint64("stream", stream)
    start, count = check_uint64("start", start), check_uint64("count", count)
    module = variants_module() if USE_NUMBA and count else None
    if module is None or start + count > UINT64_LIMIT:
        return _reference_random_range(seed, stream, start, count)
    first, last = start >> 2, (start + count - 1) >> 2
    words = np.empty(4 * (last - first + 1), np.uint32)
    kernel = module.words_kernel if threaded(count) else module.words_kernel_serial
    kernel(np.uint64(first), np.uint64(seed), np.uint64(stream), words)
    return words[start & 3 : (start & 3) + count]


def keep_mask(shape: int | tuple[int, ...], p: float, *, seed: int, stream: int = 0) -> np.ndarray:
    """:func:`dropkit.keep_mask` (the contract's keep mask of a tensor of ``shape``), drawn by
    :func:`keep_range`.

    >>> import dropkit
    >>> bool((keep_mask((3, 5), 0.3, seed=4) == dropkit.keep_mask((3, 5), 0.3, seed=4)).all())
    True
    """
    one_dim = isinstance(shape, numbers.Integral) and not isinstance(shape, bool)
    shape = check_dims("shape", (shape,) if one_dim else shape)
    if math.prod(shape) > UINT64_LIMIT:
        raise ValueError(f"shape {shown(shape)} has more than 2**64 elements, the range of the mask index")
    return keep_range(p, seed, stream, 0, math.prod(shape)).reshape(shape)


@functools.lru_cache(maxsize=256)  # layers see few shapes; the bases are read-only
def broadcast_rows(shape: tuple[int, ...], mask_shape: tuple[int, ...]) -> tuple[np.ndarray, int, bool]:
    """``(bases, length, inner_drawn)``: an array of ``shape`` as rows of ``length`` elements, row ``r``
    starting at flat mask index ``bases[r]``, for a mask of ``mask_shape`` (same rank, 1 where it
    broadcasts); ``inner_drawn``: a row reads ``length`` decisions, else it shares one.

    Dims of size 1 drop out, and neighbouring dims that are both drawn or both shared merge.

    >>> bases, length, inner_drawn = broadcast_rows((2, 3, 4), (2, 3, 1))  # channel dropout
    >>> bases.tolist(), length, inner_drawn
    ([0, 1, 2, 3, 4, 5], 4, False)
    >>> bases, length, inner_drawn = broadcast_rows((2, 3, 4), (2, 1, 4))  # shared along dim 1
    >>> bases.tolist(), length, inner_drawn
    ([0, 0, 0, 4, 4, 4], 4, True)
    """
    if len(mask_shape) != len(shape) or any(m not in (1, n) for n, m in zip(shape, mask_shape, strict=True)):
        raise ValueError(f"the mask shape {shown(mask_shape)} does not broadcast to x's shape {shown(shape)}")
    groups: list[list[Any]] = []
    for size, mask_size in zip(shape, mask_shape, strict=True):
        if size == 1:
            continue
        drawn = mask_size == size
        if groups and groups[-1][1] == drawn:
            groups[-1][0] *= size
        else:
            groups.append([size, drawn])
    length, inner_drawn = groups.pop() if groups else (1, True)
    bases = np.zeros(1, np.int64)
    for size, drawn in groups:
        bases = (bases[:, None] * size + np.arange(size)).ravel() if drawn else np.repeat(bases, size)
    bases = bases * length if inner_drawn else bases
    bases.flags.writeable = False
    return bases, length, inner_drawn


def _reference_or(x: np.ndarray, out: np.ndarray | None, result: Any) -> np.ndarray:
    """The reference's ``result``, written into ``out`` if given."""
    if out is None:
        return result
    out[...] = result
    return out


def apply_keep(
    x: np.ndarray,
    keep: np.ndarray,
    scale: float,
    *,
    offset: float | None = None,
    dropped: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``keep ? x * scale (+ offset) : dropped`` with the bool mask ``keep`` broadcast to ``x``.

    The product (and the sum, with ``offset``) is formed in float32 (float64 for float64 data), each
    rounded once, as :func:`dropkit.kernels.reference.apply_keep` forms them; dropped elements are
    ``dropped`` whatever ``x`` holds there. One pass by :mod:`dropkit.kernels.cpu_variants` for
    C-contiguous float32/float64 arrays (``out`` C-contiguous too, or ``x`` itself), else the reference.

    Args:
        x: floating-point array, any shape.
        keep: bool array of ``x``'s rank, each dim ``x``'s size or 1 (where it broadcasts).
        out: optional array of ``x``'s shape and dtype to write into (``out=x`` is in place).

    >>> apply_keep(np.ones((2, 3), np.float32), np.array([[True], [False]]), 2.0).tolist()
    [[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]
    """
    module = variants_module() if USE_NUMBA and _fits_kernel(x, out) and x.size else None
    if module is None:
        return _reference_or(x, out, reference.apply_keep(x, keep, scale, offset=offset, dropped=dropped))
    result = np.empty_like(x) if out is None else out
    bases, length, inner_drawn = broadcast_rows(x.shape, keep.shape)
    kernel = module.broadcast_kernel if threaded(x.size) else module.broadcast_kernel_serial
    affine = offset is not None
    kernel(
        x.reshape(-1),
        result.reshape(-1),
        np.ascontiguousarray(keep).reshape(-1),
        bases,
        length,
        float(scale),
        float(offset) if affine else 0.0,
        float(dropped),
        inner_drawn,
        affine,
    )
    return result


def broadcast_dropout(
    x: np.ndarray,
    p: float,
    mask_shape: tuple[int, ...],
    *,
    seed: int,
    stream: int,
    start: int = 0,
    scale: float,
    offset: float | None = None,
    dropped: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`apply_keep` of ``keep = keep_range(p, seed, stream, start, prod(mask_shape))`` reshaped
    to ``mask_shape``: a structured variant's dropout, the mask drawn and applied in one kernel call.

    ``seed``, ``stream`` and ``start`` are taken as checked (unsigned 64-bit, ``start`` plus the mask's
    size at most ``2**64``): the torch face's entry points check them, and this is its hot path.

    >>> x = np.ones((2, 3), np.float32)
    >>> broadcast_dropout(x, 0.5, (2, 1), seed=0, stream=0, scale=2.0).tolist()
    [[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]
    """
    threshold = fast_keep_threshold(p)
    count = math.prod(mask_shape)
    module = variants_module() if USE_NUMBA and _fits_kernel(x, out) and x.size else None
    if module is None:
        keep = _reference_keep_range(p, seed, stream, start, count).reshape(mask_shape)
        return apply_keep(x, keep, scale, offset=offset, dropped=dropped, out=out)
    result = np.empty_like(x) if out is None else out
    bases, length, inner_drawn = broadcast_rows(x.shape, tuple(mask_shape))
    kernel = module.broadcast_dropout_kernel if threaded(x.size) else module.broadcast_dropout_kernel_serial
    affine = offset is not None
    kernel(
        x.reshape(-1),
        result.reshape(-1),
        bases,
        length,
        count,
        *(np.uint64(v) for v in (start, threshold, seed, stream)),
        float(scale),
        float(offset) if affine else 0.0,
        float(dropped),
        inner_drawn,
        affine,
    )
    return result
