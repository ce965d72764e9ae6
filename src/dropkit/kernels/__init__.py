"""Apply a dropout mask to an array: the one place every NumPy entry point goes through.

``dropout_apply`` picks the fastest available path for the array; every path draws the
contract's mask (see :mod:`dropkit.philox`) and rounds as :func:`scale_kept` does.

- **numba** (:mod:`dropkit.kernels.cpu`): C-contiguous float32/float64 arrays, with ``out`` either
  ``None`` or a C-contiguous array of the same dtype (``out`` may be ``x`` itself). One fused,
  multi-threaded pass; compiled once per install into numba's on-disk cache.
- **reference** (:mod:`dropkit.kernels.reference`): everything else (float16, strided views), and
  every array when numba is not installed, when the environment variable
  ``DROPKIT_DISABLE_NUMBA=1`` is set at import, or when ``USE_NUMBA`` is set to ``False``.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy as np

from dropkit._validation import UINT64_LIMIT, check_finite, check_float_array, check_uint64
from dropkit.kernels import reference
from dropkit.kernels.reference import scale_kept
from dropkit.philox import KEEP_NONE, keep_threshold

__all__ = ["USE_NUMBA", "dropout_apply", "numba_available", "scale_kept"]

USE_NUMBA: bool = os.environ.get("DROPKIT_DISABLE_NUMBA", "0") in ("", "0")


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


def _check_out(x: np.ndarray, out: Any) -> None:
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
        _check_out(x, out)
    cpu = _cpu_module() if USE_NUMBA and _fits_kernel(x, out) else None
    if cpu is None:
        return reference.dropout_apply(x, p, seed=seed, stream=stream, scale=scale, start=start, out=out)
    result = np.empty_like(x) if out is None else out
    kernel = cpu.dropout_kernel if x.size > cpu.SERIAL_MAX else cpu.dropout_kernel_serial
    integers = (np.uint64(v) for v in (start, threshold, seed, stream))
    kernel(x.reshape(-1), result.reshape(-1), *integers, float(scale))
    return result
