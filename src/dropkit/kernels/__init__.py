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
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, TypeVar

import numpy as np

from dropkit._validation import UINT64_LIMIT, check_finite, check_float_array, check_uint64
from dropkit.kernels import reference
from dropkit.kernels.reference import scale_kept
from dropkit.philox import KEEP_NONE, keep_threshold

__all__ = [
    "USE_NUMBA",
    "Launcher",
    "check_out",
    "dropout_apply",
    "dropout_apply_runs",
    "launch_per_run",
    "numba_available",
    "scale_kept",
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
