"""Input checks shared by every entry point: one helper per kind of argument, one message each.

Every check runs before any state changes, so a rejected call leaves layers and arrays as they were.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

UINT64_LIMIT = 2**64
MODES = ("inverted", "classic")


def check_probability(p: Any, name: str = "p") -> float:
    """Return ``p`` as a float in [0, 1]; raise ``TypeError``/``ValueError`` otherwise.

    The message is PyTorch's, so code that matches torch's error keeps working.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(p).__name__}")
    # A comparison, not math.isnan: NaN fails it too, and under torch.compile a p that changes between
    # calls is a symbolic float, which comparisons guard on and math.isnan cannot trace.
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return float(p)


def check_dims(name: str, value: Any) -> tuple[int, ...]:
    """``value`` as a tuple of non-negative Python ints (a shape or a list of offsets)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of non-negative ints, got {type(value).__name__}")
    dims = tuple(value)
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0 for d in dims):
        raise ValueError(f"{name} must be a sequence of non-negative ints, got {dims}")
    return tuple(int(d) for d in dims)


def check_uint64(name: str, value: Any) -> int:
    """Return ``value`` as a Python int in [0, 2**64) (seeds, streams, offsets)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [0, 2**64), got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < UINT64_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value}")
    return value


def check_mode(mode: Any) -> str:
    """Return ``mode`` if it is ``"inverted"`` or ``"classic"``."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'inverted' or 'classic', got {mode!r}")
    return mode


def check_float_array(name: str, x: Any) -> np.ndarray:
    """Return ``x`` as a floating-point ndarray (float16, float32 or float64), without copying."""
    array = x if isinstance(x, np.ndarray) else np.asarray(x)
    if array.dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64), got dtype {array.dtype}"
        )
    return array


def check_keep_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Return a caller-supplied 0/1 keep mask as a bool array of the mask shape ``shape``.

    Size-1 dimensions of the mask shape may be left out: ``(N, C)`` for channel dropout's
    ``(N, C, 1, 1)``.
    """
    array = np.asarray(mask)
    squeezed = tuple(d for d in shape if d != 1)
    if array.shape != tuple(shape) and tuple(d for d in array.shape if d != 1) != squeezed:
        raise ValueError(
            f"mask must have the mask shape {tuple(shape)} (the shape of x for plain dropout), "
            f"got {array.shape}"
        )
    array = array.reshape(shape)
    if array.dtype != np.bool_:
        if array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all():
            raise ValueError("mask must contain only 0 and 1 (or be a bool array)")
        array = array.astype(bool)
    return array


def check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as a Python int >= ``minimum`` (layer sizes, epochs, batch sizes, sample counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_positive_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float that is finite and > 0 (learning rates)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_shard_arguments(global_shape: Any, offsets: Any) -> bool:
    """Whether ``global_shape`` and ``offsets`` describe a shard: both given, or neither (False)."""
    if (global_shape is None) != (offsets is None):
        raise ValueError(
            f"global_shape and offsets go together: got global_shape={global_shape}, offsets={offsets}"
        )
    return global_shape is not None


def check_index(name: str, value: Any, limit: int | None = None) -> int:
    """``value`` as an int in ``[0, limit)`` (``[0, inf)`` without a limit): ranks, sizes, dims."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or (limit is not None and value >= limit):
        bound = "" if limit is None else f", below {limit}"
        raise ValueError(f"{name} must be a non-negative int{bound}, got {value}")
    return int(value)
